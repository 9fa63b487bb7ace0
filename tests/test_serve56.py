"""Stop 56's hunt in `tokenpool serve`: --max-chunks counted exactly, infinity's and huggingface_hub's clients
unchanged, and the protocols' corners. Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bpe_encoder(tmp_path_factory):
    """A byte-level BPE model (a trained Qwen2 tokenizer): the space ending "query: " joins the first word."""
    pytest.importorskip("transformers")
    from test_encoder import _qwen2_weights, _save_sentence_transformer

    from tokenpool import Encoder

    folder = tmp_path_factory.mktemp("bpe")
    _qwen2_weights(folder, padding_side="right")
    return Encoder(_save_sentence_transformer(folder, "mean"), max_length=16, device="cpu")


def test_max_chunks_counts_the_chunks_the_plan_makes_after_a_joined_prompt(bpe_encoder):
    """The count took each document's tokens less those of the prompt read alone: where a byte-level BPE joins
    the prompt's trailing space to the text's first word that is one token short, and a request of
    --max-chunks + 1 chunks was served. The reference is `Encoder.encode_chunks` with the same prompt."""
    from tokenpool.serve.runner import EncoderRunner

    texts, prompt = ["the cat sat on the mat", "hello world hello"], "query: "
    made = len(bpe_encoder.encode_chunks(texts, chunks="tokens:1", prompt=prompt).vectors)
    body = {"documents": texts, "chunks": "tokens:1"}
    runner = EncoderRunner(bpe_encoder, name="bpe", default_prompt=prompt)
    with start_server(runner, ServeSettings(max_chunks=made - 1)) as server:
        response = post(server, "/embed_documents", body)
        assert response.status_code == 413, response.text
        assert f"makes {made} chunks" in response.json()["error"]
    with start_server(runner, ServeSettings(max_chunks=made)) as server:
        response = post(server, "/embed_documents", body)
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == made
