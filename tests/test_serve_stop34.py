"""Corners of `tokenpool serve` found by the stop-34 bug hunt. Servers bind 127.0.0.1 on free ports and stop by
themselves; a tiny random BERT (`tiny_bert_folder`) or the fake runner (`serve_fakes.FakeRunner`) keeps them fast."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from clitools import assert_one_error_line  # noqa: E402
from serve_fakes import FakeRunner, post  # noqa: E402

from tokenpool.errors import OptionError, one_line  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow

LONG_PROMPT = " ".join(["word"] * 40) + ": "  # more tokens than the 16-token window


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, device="cpu", pooling="mean", max_length=16, normalize=True)


@pytest.fixture(scope="module")
def tiny(tiny_encoder):
    """The tiny model with a named prompt ("long") that leaves no room in its 16-token window."""
    from tokenpool.serve.runner import EncoderRunner

    runner = EncoderRunner(tiny_encoder)
    runner.prompts = {**runner.prompts, "long": LONG_PROMPT}
    with start_server(runner, ServeSettings(batch_size=4)) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/embed", {"inputs": ["hello"], "prompt_name": "long"}, 422),
        ("/embed", {"inputs": ["hello"], "prompt_name": "long", "truncate": True}, 422),
        ("/embed", {"inputs": ["hello", "world"], "prompt_name": "long", "late_chunking": True}, 422),
        ("/v1/embeddings", {"input": ["hello"], "prompt_name": "long"}, 400),
        ("/embed_documents", {"documents": ["hello"], "prompt_name": "long", "chunks": "tokens:4"}, 422),
    ],
)
def test_a_prompt_that_leaves_no_room_is_the_requests_fault(tiny, tiny_encoder, path, body, status, caplog):
    """A prompt longer than the window was answered 500 "internal server error" with a traceback in the log
    (docs/serve.md: 422, logged at INFO, not as a failure); the library refuses the same prompt with a
    ValueError, whose message the answer now carries."""
    with pytest.raises(ValueError) as refusal:
        tiny_encoder.encode(["hello"], prompt=LONG_PROMPT)
    response = post(tiny, path, body)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"] if path.startswith("/v1/") else response.json()["error"]
    assert message == one_line(refusal.value)
    if path.startswith("/v1/"):
        assert response.json()["error"]["param"] == "prompt_name"
    assert not [r for r in caplog.records if r.name.startswith("tokenpool.serve") and r.levelname == "ERROR"]
    assert post(tiny, path, {**body, "prompt_name": None}).status_code == 200  # the server still serves


@pytest.mark.parametrize(("path", "field", "status"), [("/embed", "inputs", 422), ("/v1/embeddings", "input", 400)])
@pytest.mark.parametrize("dropped", ["\u200b", "\u0000"])
def test_late_chunking_names_an_input_the_tokenizer_drops(tiny, tiny_encoder, path, field, status, dropped):
    """A late-chunking input of characters the tokenizer drops was refused as "document 0: span [6, 7] covers no
    token": a document and spans the client never sent. The answer now names the input, as it does a blank one."""
    assert tiny_encoder.tokenizer(dropped, add_special_tokens=False)["input_ids"] == []  # no token, by the tokenizer
    response = post(tiny, path, {field: ["hello", dropped, "world"], "late_chunking": True})
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"] if path.startswith("/v1/") else response.json()["error"]
    assert f"'{field}[1]'" in message and "no token" in message and "span" not in message, message
    kept = post(tiny, path, {field: ["hello", dropped + "world"], "late_chunking": True})  # with text: embedded
    assert kept.status_code == 200, kept.text


class WorkerBreak(BaseException):
    """Not an `Exception`: what a forward pass does not catch, so the worker loop itself stops."""


class BreakingRunner(FakeRunner):
    """Its forward pass breaks the worker loop (a BaseException: a bug, a library's SystemExit)."""

    def embed(self, tokens):
        raise WorkerBreak("the worker loop broke")
        yield  # a generator, as `Runner.embed` is


def test_the_request_in_the_pass_that_stopped_the_worker_is_answered():
    """When a forward pass stopped the worker loop, the queued requests got an answer but the one(s) in that
    pass were left waiting for ever (no longer queued once all their inputs were taken): the client hung until
    its own timeout, and a drain waited for it to the end of --drain-timeout."""
    with start_server(BreakingRunner(), ServeSettings(batch_size=4)) as server:
        response = post(server, "/embed", {"inputs": ["x", "y"]}, timeout=10)
        assert response.status_code == 500 and response.json()["error_type"] == "Backend", response.text
        assert httpx.get(server.url + "/health").status_code == 503
        assert server.service.idle  # nothing left in flight: a drain ends at once


def test_requests_after_the_worker_stopped_are_not_told_the_server_is_shutting_down():
    """After the worker loop stopped, every request got 503 "the server is shutting down and takes no new
    requests" with Retry-After and Connection: close, though nothing was shutting down (/health: "a model worker
    is not running"): clients retried for ever. They now hear that the worker stopped, with no Retry-After."""
    with start_server(BreakingRunner(), ServeSettings(batch_size=4)) as server:
        post(server, "/embed", {"inputs": "x"}, timeout=10)  # stops the worker
        for path, body in (("/embed", {"inputs": "x"}), ("/v1/embeddings", {"input": "x"})):
            response = post(server, path, body, timeout=10)
            assert response.status_code == 503, response.text
            assert "shutting down" not in response.text and "worker of fake-model has stopped" in response.text
            assert "retry-after" not in response.headers
        assert not server.service.draining


def test_a_server_of_no_model_is_refused():
    """`start_server({})` started a server whose every embedding request and /info were a 500 (IndexError)
    while /health answered 200; it is now refused when made, as a model named twice is."""
    from tokenpool.serve.app import create_app

    with pytest.raises(OptionError, match="no model to serve"):
        create_app({})
    with pytest.raises(OptionError, match="no model to serve"):
        start_server({})


def test_a_default_prompt_that_leaves_no_room_is_refused_at_start(run, monkeypatch, tiny_bert_folder, tiny_encoder):
    """`tokenpool serve --max-length 16 --prompt <a 40-word prompt>` started, then refused every request that
    named no prompt of its own (500, then 422 blaming the client): the server's own prompt is checked when the
    model loads, as the library refuses that prompt (ValueError)."""
    from tokenpool.serve import server
    from tokenpool.serve.runner import EncoderRunner

    with pytest.raises(ValueError) as refusal:
        tiny_encoder.encode(["hello"], prompt=LONG_PROMPT)
    with pytest.raises(OptionError) as err:
        EncoderRunner(tiny_encoder, default_prompt=LONG_PROMPT)
    assert one_line(refusal.value) in str(err.value)
    served = []

    def record(runner, settings, *, sock=None, **_):
        if sock is not None:
            sock.close()
        served.append(runner)
        return 0

    monkeypatch.setattr(server, "serve_forever", record)
    code, _, err_text = run("serve", "--model", str(tiny_bert_folder), "--max-length", "16", "--port", "0",
                            "--prompt", LONG_PROMPT)  # fmt: skip
    assert_one_error_line(code, err_text, "no room is left")
    assert not served
    EncoderRunner(tiny_encoder, default_prompt="query: ")  # a prompt that fits is kept
