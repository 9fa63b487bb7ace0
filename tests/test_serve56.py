"""Stop 56's hunt in `tokenpool serve`: --max-chunks counted exactly, infinity's and huggingface_hub's clients
unchanged, and the protocols' corners. Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, post  # noqa: E402

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


@pytest.fixture(scope="module")
def fake():
    with start_server(FakeRunner(), ServeSettings(served_model_names=("fake", "alias"))) as server:
        yield server


def test_infinitys_client_reads_health_and_models(fake):
    """infinity's client (libs/client_infinity: `ResponseHealth.from_dict(response.json())`,
    `OpenAIModelInfo.from_dict`) parsed /health's empty body (a JSON error) and each /models card without
    ``stats`` (a KeyError), and takes no ``owned_by`` but "infinity" (`ModelInfoOwnedBy`): /health now answers
    infinity's ``{"unix": time}`` and the cards on its paths (no /v1) carry ``stats`` and no owner."""
    before = time.time()
    health = httpx.get(fake.url + "/health")
    assert health.status_code == 200 and set(health.json()) == {"unix"}
    assert before <= health.json()["unix"] <= time.time()
    for path in ("/models", "/models/alias"):
        answer = httpx.get(fake.url + path).json()
        for card in answer["data"] if path == "/models" else [answer]:
            assert card["object"] == "model" and isinstance(card["stats"], dict), card
            assert card.get("owned_by", "infinity") == "infinity", card
    assert [card["id"] for card in httpx.get(fake.url + "/models").json()["data"]] == ["fake", "alias"]


def test_openai_clients_still_read_the_cards(fake):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=fake.url + "/v1", api_key="unused", max_retries=0)
    assert [(m.id, m.owned_by) for m in client.models.list()] == [("fake", "tokenpool"), ("alias", "tokenpool")]
    assert client.models.retrieve("alias").owned_by == "tokenpool"
    unprefixed = openai.OpenAI(base_url=fake.url, api_key="unused", max_retries=0)  # infinity's base URL
    assert [m.id for m in unprefixed.models.list()] == ["fake", "alias"]


@pytest.mark.parametrize("path", ["", "/embed"])
@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_inference_clients_encoding_format_is_taken_as_tei_takes_it(tiny_bert_folder, small, path, encoding):
    """huggingface_hub's ``feature_extraction(..., encoding_format=...)`` sends OpenAI's field to TEI's routes;
    TEI ignores it (its request types take unknown fields) and answers floats, which is all the client reads.
    tokenpool refused it (422 "unrecognized request field(s) 'encoding_format'")."""
    hub = pytest.importorskip("huggingface_hub")
    from serve_fakes import TEXTS, assert_same_vectors, tiny_server

    with pytest.MonkeyPatch.context() as patch, tiny_server(tiny_bert_folder, ServeSettings()) as server:
        patch.setattr(hub.constants, "HF_HUB_OFFLINE", False)  # (it refuses every URL, 127.0.0.1 included)
        client = hub.InferenceClient(model=server.url + path, timeout=60)
        got = client.feature_extraction(TEXTS, truncate=True, encoding_format=encoding)
        assert_same_vectors(got, small.encode(TEXTS))
        refused = post(server, path or "/", {"inputs": "x", "encoding_format": "int8"})
        assert refused.status_code == 422 and "'encoding_format'" in refused.json()["error"], refused.text


@pytest.mark.parametrize(("path", "body"), [
    ("/embed_documents", {"documents": ["a b"], "chunks": "spans", "spans": [[[0, 1]]]}),
    ("/v1/embeddings", {"input": ["a b", "c"], "late_chunking": True}),
])  # fmt: skip
def test_a_runner_without_embed_documents_is_a_501_naming_it(fake, path, body, caplog):
    """A runner without `Runner.embed_documents` (`check_runner` asks only for what every route reads) failed in
    its worker: 500 "the model failed" and an AttributeError traceback in the log. Now a 501 naming the part, as
    for the optional tokenizer parts /tokenize and /decode need, before the request queues."""
    response = post(fake, path, body)
    assert response.status_code == 501, response.text
    assert "has no embed_documents" in response.text
    assert "AttributeError" not in caplog.text
