"""Stop 61's hunt in `tokenpool serve`: what docs/serve.md says a forward pass of mixed lengths takes. Servers
bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from serve_fakes import FakeRunner, post

from tokenpool.serve.server import start_server
from tokenpool.serve.settings import ServeSettings

SERVE_DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


class UnpaddedRunner(FakeRunner):
    """A runner whose passes compute real tokens only, as `EncoderRunner` over a BERT model on torch."""

    unpadded = True


def _passes(runner: FakeRunner, texts: list[str]) -> list[int]:
    """The sizes of the forward passes one request of ``texts`` takes."""
    with start_server(runner, ServeSettings(max_wait_ms=0)) as server:
        answer = post(server, "/embed", {"inputs": texts})
    assert answer.status_code == 200, answer.text
    return [len(texts) for texts in runner.passes]


def test_the_docs_say_which_models_cut_a_pass_at_a_shorter_input():
    """docs/serve.md said that every pass is the group of near-equal lengths holding the anchor's first input,
    ending before an input shorter than 80% of its longest once it holds 8; a runner whose passes compute real
    tokens only (`EncoderRunner.unpadded`: a BERT model on torch, the bundled model included) takes the longest
    inputs offered instead, whatever their lengths. The docs now say which models group by length."""
    pytest.importorskip("uvicorn")
    texts = ["w " * 12] + ["w"] * 9  # 14 tokens, then 3 each: under 80% of 14
    assert _passes(FakeRunner(max_length=32), texts) == [8, 2]
    assert _passes(UnpaddedRunner(max_length=32), texts) == [10]
    docs = " ".join(SERVE_DOCS.read_text(encoding="utf-8").split())
    sentence = re.search(r"The anchor's inputs, longest first.*?padded tokens \(default 16384\)", docs)
    assert sentence and re.search(r"real tokens only|unpadded", sentence[0]), sentence and sentence[0]


def test_an_openai_request_may_name_its_truncation_side(tiny_bert_folder):
    """docs/serve.md said a request naming no truncation direction is "every OpenAI request", yet /v1/embeddings
    takes ``truncation_direction`` (an extension, as the endpoint table says) and cuts on the side it names: the
    same vector as /embed's ``"truncate": true`` on that side. The docs no longer say OpenAI requests name none."""
    pytest.importorskip("uvicorn")
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    text = " ".join(f"w{k}" for k in range(40))
    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings()) as server:
        def vector(path: str, body: dict) -> list[float]:
            answer = post(server, path, body)
            assert answer.status_code == 200, answer.text
            data = answer.json()
            return data["data"][0]["embedding"] if path == "/v1/embeddings" else data[0]

        left = vector("/v1/embeddings", {"input": text, "truncation_direction": "left"})
        assert left == vector("/embed", {"inputs": text, "truncate": True, "truncation_direction": "Left"})
        assert left != vector("/v1/embeddings", {"input": text})
    docs = " ".join(SERVE_DOCS.read_text(encoding="utf-8").split())
    assert "(every OpenAI request)" not in docs


@pytest.mark.parametrize(("path", "field", "status"), [("/embed", "inputs", 422), ("/v1/embeddings", "input", 400)])
@pytest.mark.parametrize("mode", ["windows", "truncate"])
def test_late_chunking_with_a_long_documents_mode_is_refused(tiny_bert_folder, path, field, status, mode):
    """`"late_chunking": true` with `"long_documents": "windows"` was served as late chunking alone: each input's
    vector from its own tokens inside the joined document (`Encoder.encode_chunks(..., chunking="late")`), not
    from the input alone as windows give it (`Encoder(long_documents="windows").encode`), and the caller was never
    told; so with "truncate", whose inputs would be cut. The two say different things of what an input is: the
    pair is refused as `"truncate": true` is, naming both fields and values; each alone is served."""
    pytest.importorskip("uvicorn")
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    texts = [" ".join(["word"] * 30), "tail words here"]
    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings()) as server:
        response = post(server, path, {field: texts, "late_chunking": True, "long_documents": mode})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        message = error["message"] if path.startswith("/v1/") else error
        assert "'late_chunking': true" in message and f"'long_documents': \"{mode}\"" in message, message
        if path.startswith("/v1/"):
            assert error["param"] == "long_documents"
        answers = []
        for alone in ({"late_chunking": True}, {"long_documents": mode, "truncate": mode == "truncate"}):
            served = post(server, path, {field: texts, **alone})
            assert served.status_code == 200, served.text
            data = served.json()
            answers.append(np.array([d["embedding"] for d in data["data"]] if path.startswith("/v1/") else data))
    expected = encoder.encode(texts, long_documents=mode)  # each input alone: what the mode says
    np.testing.assert_allclose(answers[1], expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(answers[0], expected, atol=1e-3)  # late chunking's vectors are others
    docs = " ".join(SERVE_DOCS.read_text(encoding="utf-8").split())
    assert re.search(r"`\"late_chunking\": true` with a `\"long_documents\"` mode", docs), "docs/serve.md"


def _naive_span_answer(folder) -> tuple[dict, int, float]:
    """/embed_documents of one text cut naive as one whole-text span, on the tiny model (window 16): the answer,
    the text's own token count (transformers' tokenizer, special tokens included) and the truncated counter's rise."""
    pytest.importorskip("uvicorn")
    from serve_fakes import metric_value, tiny_server
    from transformers import AutoTokenizer

    text = " ".join(f"w{k}" for k in range(20))
    count = len(AutoTokenizer.from_pretrained(folder)(text)["input_ids"])
    assert count > 16  # over the window: the naive span is cut to it (docs/long-documents.md)
    body = {"documents": [text], "chunks": "spans", "spans": [[[0, len(text)]]], "chunking": "naive"}
    with tiny_server(folder, ServeSettings()) as server:
        before = metric_value(server, "tokenpool_tokens_truncated_total")
        answer = post(server, "/embed_documents", body)
        assert answer.status_code == 200, answer.text
        return answer.json(), count, metric_value(server, "tokenpool_tokens_truncated_total") - before


def test_the_docs_say_a_naive_span_cut_to_the_window_is_counted(tiny_bert_folder):
    """docs/serve.md said truncation is never silent (usage, x-truncated-tokens and tokenpool_tokens_truncated_total
    count the tokens cut), yet a naive span over the window was cut to it and counted nowhere; stop 61
    documented that. Stop 62 counts it (the library reports each naive chunk's tokens): the docs say so now,
    and the live answer below is what they say (replaces stop 61's test that said it is not counted)."""
    data, count, rise = _naive_span_answer(tiny_bert_folder)
    assert data["usage"] == {"prompt_tokens": 16, "total_tokens": 16, "truncated_tokens": count - 16}
    assert rise == count - 16
    docs = " ".join(SERVE_DOCS.read_text(encoding="utf-8").split())
    assert re.search(r"naive span longer than the window.{0,100}is counted there and in "
                     r"`tokenpool_tokens_truncated_total`", docs), "docs/serve.md"  # fmt: skip
    assert not re.search(r"naive span longer than the window.{0,200}not counted", docs)


def test_a_naive_span_cut_to_the_window_is_counted(tiny_bert_folder):
    """What the server should answer once `encode_chunks` reports each naive chunk's count: the tokens embedded
    and the tokens cut, as /v1/embeddings counts a text cut to the window."""
    data, count, rise = _naive_span_answer(tiny_bert_folder)
    assert data["usage"].get("truncated_tokens") == count - 16 == rise
    assert data["usage"]["prompt_tokens"] == 16
