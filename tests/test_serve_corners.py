"""Corners of `tokenpool serve` found by a bug hunt: option values that left a server useless, open or serving
another prompt than asked, request fields answered with another status or message than the protocol's, a client
gone mid-body counted as a server error. Servers bind 127.0.0.1 on free ports and stop by themselves; the CLI
tests never start one (`serve_forever` is replaced by a recorder)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from clitools import assert_one_error_line  # noqa: E402
from serve_fakes import FakeRunner, post  # noqa: E402

from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def served(monkeypatch):
    """`tokenpool serve` up to the point where it would serve: the settings and runners it would serve, recorded."""
    from tokenpool.serve import server

    class Seen(list):  # the settings of each would-be server; ``runners``: what it would serve
        def __init__(self) -> None:
            super().__init__()
            self.runners: list = []

    seen = Seen()

    def record(runner, settings, *, sock=None, **_):
        seen.append(settings)
        seen.runners.append(runner)
        if sock is not None:
            sock.close()
        return 0

    monkeypatch.setattr(server, "serve_forever", record)
    return seen


def test_a_read_timeout_of_0_is_refused(run, served):
    """`--read-timeout 0` was taken: the server then closed every connection before its request (httpx:
    "Server disconnected without sending a response")."""
    code, _, err = run("serve", "--port", "0", "--read-timeout", "0")
    assert_one_error_line(code, err, "--read-timeout")
    assert not served
    with pytest.raises(OptionError, match="read_timeout"):
        ServeSettings(read_timeout=0)
    with start_server(FakeRunner(), ServeSettings(read_timeout=0.5, batch_size=4)) as running:
        assert post(running, "/embed", {"inputs": "hello"}).status_code == 200  # a small timeout still serves


def test_an_empty_api_key_is_refused_not_dropped(run, served):
    """`--api-key "$KEY"` with KEY unset served every endpoint without a key."""
    code, _, err = run("serve", "--port", "0", "--api-key", "")
    assert_one_error_line(code, err, "--api-key")
    assert not served
    code, _, err = run("serve", "--port", "0", "--api-key", "s3cret")
    assert code == 0, err
    assert served[-1].api_key == "s3cret"


def test_a_server_of_no_model_is_refused():
    """`start_server({})` started a server whose every embedding request and /info were a 500 (IndexError)
    while /health answered 200; it is now refused when made, as a model named twice is."""
    from tokenpool.serve.app import create_app

    with pytest.raises(OptionError, match="no model to serve"):
        create_app({})
    with pytest.raises(OptionError, match="no model to serve"):
        start_server({})



@pytest.fixture(scope="module")
def fake():
    with start_server(FakeRunner(), ServeSettings(batch_size=4)) as server:
        yield server


def test_an_empty_document_is_the_endpoints_422(fake):
    """/embed_documents answered an empty document with 400; its bad values are 422 (docs/serve.md), as
    TEI's. OpenAI's empty input stays OpenAI's 400."""
    response = post(fake, "/embed_documents", {"documents": ["a text", ""], "chunks": "tokens:8"})
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "Validation"
    assert "'documents[1]' is an empty string" in response.json()["error"]
    response = post(fake, "/v1/embeddings", {"input": ["a text", ""]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    with start_server(EncoderRunner(encoder), ServeSettings(max_document_chars=2000)) as server:
        yield server


@pytest.mark.parametrize("blank", [" ", "  \n\t "])
def test_late_chunking_names_a_whitespace_input(tiny, blank):
    """/embed {"inputs": ["abc", "   ", "def"], "late_chunking": true} was refused in the model worker with
    "document 0: span [4, 7] covers no token", a span the client never sent; whitespace has no token (the
    library's `chunk_plan` rule), so the input is named before it queues, as an empty one is."""
    for path, style in (("/embed", "tei"), ("/v1/embeddings", "openai")):
        body = {"inputs" if style == "tei" else "input": ["abc", blank, "def"], "late_chunking": True}
        response = post(tiny, path, body)
        assert response.status_code == (422 if style == "tei" else 400), response.text
        message = response.json()["error"] if style == "tei" else response.json()["error"]["message"]
        assert "[1]' is only whitespace" in message, message
    assert post(tiny, "/embed", {"inputs": ["abc", "def"], "late_chunking": True}).status_code == 200


def test_a_model_named_nothing_is_refused(run, served, tiny_bert_folder):
    """`--model =FOLDER` served the folder under the name "" ("listening on ... (model )")."""
    code, _, err = run("serve", "--port", "0", "--model", f"={tiny_bert_folder}")
    assert_one_error_line(code, err, "NAME is empty")
    assert not served
    code, _, err = run("serve", "--port", "0", "--model", f"tiny={tiny_bert_folder}")
    assert code == 0, err
    assert len(served) == 1


@pytest.mark.parametrize("key", ["s3cret\n", " s3cret", "s3cret\t"])
def test_an_api_key_with_surrounding_whitespace_is_refused(run, served, monkeypatch, key):
    """TOKENPOOL_API_KEY="s3cret\\n" (a key read from a file) served a server no client could use: httpx
    refuses to send the key as is ("Illegal header value") and HTTP trims it off what is sent, so every
    request got 401."""
    with pytest.raises(OptionError, match="whitespace"):
        ServeSettings(api_key=key)
    monkeypatch.setenv("TOKENPOOL_API_KEY", key)
    code, _, err = run("serve", "--port", "0")
    assert_one_error_line(code, err, "whitespace")
    assert not served


@pytest.fixture(scope="module")
def prompted_folder(tiny_bert_folder, tmp_path_factory):
    """The tiny model with two named prompts."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(tiny_bert_folder, folder)
    prompts = {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    return folder


@pytest.mark.parametrize(
    ("command_line", "own", "expected"),
    [
        (["--prompt-name", "query"], "prompt=mine: ", "mine: "),
        (["--prompt", "theirs: "], "prompt-name=passage", "passage: "),
        (["--prompt-name", "query"], "prompt-name=passage", "passage: "),
        (["--prompt-name", "query"], None, "query: "),
    ],
)
def test_a_models_own_prompt_replaces_the_command_lines(run, served, prompted_folder, command_line, own, expected):
    """`--prompt-name query --model a=FOLDER,prompt=mine:` served model a with the query prompt: the command
    line's prompt name (a default) won over the model's own prompt, which was dropped without a word."""
    spec = f"a={prompted_folder}" + (f",{own}" if own else "")
    code, _, err = run("serve", "--port", "0", *command_line, "--model", spec)
    assert code == 0, err
    runner = served.runners[-1]["a"]
    assert runner.default_prompt == expected


def test_a_client_gone_before_its_body_arrived_is_no_server_error(caplog):
    """A client that closed its connection halfway through its body was logged with a traceback as an
    "unexpected error" and counted as a 500 `internal` error (Starlette's ClientDisconnect)."""
    import socket
    import time

    caplog.set_level("INFO", logger="tokenpool.serve")
    with start_server(FakeRunner(), ServeSettings(batch_size=4)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b'Content-Length: 1000\r\n\r\n{"input": "abc')  # fmt: skip
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while 'kind="client_disconnected"' not in (text := httpx.get(server.url + "/metrics").text):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert 'kind="internal"' not in text
        assert 'status="500"' not in text
        assert post(server, "/embed", {"inputs": "still fine"}).status_code == 200
    # the server's own loggers only: another test's leftovers (a client collected after its loop closed) may log too
    server_errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and _from_server(r.name)]
    assert not server_errors, caplog.text


def _from_server(logger: str) -> bool:
    return logger.split(".")[0] in ("tokenpool", "uvicorn", "starlette")
