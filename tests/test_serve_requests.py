"""What `tokenpool serve` refuses in a request and how it names it: chunk limits, prompts, inputs, truncate.

Servers bind 127.0.0.1 on free ports and stop by themselves; a tiny random BERT (`tiny_bert_folder`) or the fake
runner (`serve_fakes.FakeRunner`) keeps them fast."""

from __future__ import annotations

import argparse

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


# ---------------------------------------------------------------------------------- the chunks of one request


class CountingRunner:
    """An `EncoderRunner` that counts its whole-document calls (each one runs forward passes)."""

    def __init__(self, runner):
        self._runner = runner
        self.document_calls = 0

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def embed_documents(self, *args, **kwargs):
        self.document_calls += 1
        return self._runner.embed_documents(*args, **kwargs)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, device="cpu", pooling="mean", max_length=16, normalize=True)


@pytest.fixture(scope="module")
def limited(tiny_encoder):
    """The tiny model behind a server of at most 10 chunks per request."""
    from tokenpool.serve.runner import EncoderRunner

    runner = CountingRunner(EncoderRunner(tiny_encoder))
    with start_server(runner, ServeSettings(batch_size=4, max_chunks=10, max_inputs=16, max_queue=64)) as server:
        server.runner = runner
        yield server


def _words(n: int) -> str:
    return " ".join(["word"] * n)  # one token each


@pytest.mark.parametrize(
    ("body", "count"),
    [
        ({"documents": [_words(11)], "chunks": "tokens:1"}, "11"),
        ({"documents": [_words(6), _words(5)], "chunks": "tokens:1"}, "11"),
        ({"documents": [_words(40)], "chunks": "tokens:4:1"}, "13"),  # starts 0, 3, ..., 36
        ({"documents": [_words(12)], "chunks": "spans", "spans": [[[0, 4]] * 11]}, "11"),
        ({"documents": [_words(44)], "chunks": "boundaries:4"}, "at least 11"),
        ({"inputs": [_words(1)] * 11, "late_chunking": True}, "11"),
    ],
)
def test_the_chunks_of_one_request_are_bounded_before_any_forward_pass(limited, body, count):
    """A whole-document request over a 1 MB document with "chunks": "tokens:1" answered ~250k vectors (~1 GB of
    JSON): nothing bounded the chunks of a request. Past --max-chunks it is now refused (413, naming the count
    and the limit) before any forward pass."""
    path = "/embed" if "inputs" in body else "/embed_documents"
    before = limited.runner.document_calls
    response = post(limited, path, body)
    assert response.status_code == 413, response.text
    message = response.json()["error"]
    assert f"makes {count} chunks" in message and "at most 10" in message and "--max-chunks" in message, message
    assert limited.runner.document_calls == before  # refused before the model ran


@pytest.mark.parametrize(
    "body",
    [
        {"documents": [_words(10)], "chunks": "tokens:1"},
        {"documents": [_words(4), _words(6)], "chunks": "tokens:1"},
        {"documents": [_words(30)], "chunks": "tokens:4:1"},  # starts 0, 3, ..., 27: 10 chunks
        {"documents": [_words(12)], "chunks": "spans", "spans": [[[0, 4]] * 10]},
        {"inputs": [_words(1)] * 10, "late_chunking": True},
    ],
)
def test_a_request_of_exactly_max_chunks_is_served(limited, body):
    path = "/embed" if "inputs" in body else "/embed_documents"
    response = post(limited, path, body)
    assert response.status_code == 200, response.text
    rows = response.json() if "inputs" in body else response.json()["data"]
    assert len(rows) == 10


def test_max_chunks_is_a_checked_setting():
    from tokenpool.errors import OptionError

    assert ServeSettings().max_chunks == 4096
    with pytest.raises(OptionError, match="max_chunks"):
        ServeSettings(max_chunks=0)


def test_max_chunks_is_a_command_line_option():
    """`tokenpool serve --max-chunks N` reaches `ServeSettings.max_chunks` (the 413 message names the option)."""
    from tokenpool.cli.serve import add_parser, settings_from

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert settings_from(parser.parse_args(["serve", "--max-chunks", "7"])).max_chunks == 7
    assert settings_from(parser.parse_args(["serve"])).max_chunks == 4096


def test_the_command_lines_defaults_are_the_settings_own():
    """Every numeric option's default and the default its help shows come from `ServeSettings` (they were a
    second copy of the numbers in cli/serve.py)."""
    from tokenpool.cli.serve import NUMBERS, add_parser, settings_from

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert settings_from(parser.parse_args(["serve"])) == ServeSettings()
    helps = {action.option_strings[0]: action.help for action in parser._subparsers._group_actions[0].choices[
        "serve"]._actions if action.option_strings}  # fmt: skip
    for _, flag, *_ in NUMBERS:
        value = getattr(ServeSettings(), flag[2:].replace("-", "_"))
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert value is None or f"default: {shown}" in helps[flag], (flag, helps[flag])


@pytest.mark.parametrize(("path", "field", "status"), [("/embed", "inputs", 422), ("/v1/embeddings", "input", 400)])
@pytest.mark.parametrize(
    ("whole", "named"),
    [({"late_chunking": True}, "'late_chunking': true"), ({"long_documents": "windows"}, "'long_documents'")],
)
def test_truncate_with_whole_documents_is_refused(limited, path, field, status, whole, named):
    """`"truncate": true` with late chunking (or windows) was silently ignored: the texts were read whole, nothing
    cut, and the answer looked like a truncated one. The combination is now refused, naming both fields;
    `"truncate": false` says what happens and is served."""
    text = " ".join(["word"] * 40)  # over the 16-token window
    body = {field: [text, "tail words"], "truncate": True, **whole}
    response = post(limited, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert "'truncate': true" in message and named in message and "nothing is cut" in message, message
    if path.startswith("/v1/"):
        assert error["param"] == "truncate"
    served = post(limited, path, {**body, "truncate": False})
    assert served.status_code == 200, served.text


# ----------------------------------------------------------------------- inputs named as the client sent them


@pytest.fixture(scope="module")
def fake():
    with start_server(FakeRunner(max_length=16), ServeSettings(batch_size=4, max_input_chars=50)) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v1/embeddings", {"input": ""}, "'input'"),
        ("/v1/embeddings", {"input": ["a", ""]}, "'input[1]'"),
        ("/embed", {"inputs": "x" * 51}, "'inputs'"),
        ("/embed", {"inputs": ["a", "x" * 51]}, "'inputs[1]'"),
        ("/embed", {"inputs": " ".join(["w"] * 20)}, "'inputs'"),  # over the 16-token window
        ("/embed", {"inputs": ["a", " ".join(["w"] * 20)]}, "'inputs[1]'"),
        ("/embed_documents", {"documents": "", "chunks": "tokens:4"}, "'documents'"),
    ],
)
def test_an_input_sent_as_one_string_is_named_by_its_field(fake, path, body, named):
    """`{"input": ""}` (one string, not a list) was refused as "'input[0]' is an empty string": an index into a
    list the client never sent. A single string is now named by its field; a list's entries keep their index."""
    response = post(fake, path, body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert message.startswith(named + " "), message


@pytest.mark.parametrize(("path", "field", "status"), [("/v1/embeddings", "input", 400), ("/embed", "inputs", 422)])
def test_a_nested_list_of_strings_is_not_called_token_ids(path, field, status):
    """`"input": [["a", "b"]]` was answered "'input' holds token ids (input[0] is an array) ... send strings":
    it holds strings, one level too deep. Token ids (integers, or lists of them) keep their own message. OpenAI's
    inputs are not mixed (a list after a string is a bad string); TEI's mix strings and lists of ids, so there the
    bad entry is the string inside the list (as TEI names it); an empty list of ids is 400 Empty, as TEI's."""
    with start_server(FakeRunner()) as server:
        nested = httpx.post(server.url + path, json={field: ["ok", ["a", "b"]]})
        assert nested.status_code == status
        named = (f"'{field}[1][0]' must be a token id (an integer from 0 to 4294967295), got string \"a\""
                 if field == "inputs" else f"'{field}[1]' must be a string, got array")  # fmt: skip
        text = nested.json()["error"] if field == "inputs" else nested.json()["error"]["message"]
        assert "holds token ids" not in text and text.startswith(named), text
        for ids, shown in (([[1, 2], [3]], f"{field}[0]"), ([1, 2], field)):  # (the fake runner reads no ids)
            refused = httpx.post(server.url + path, json={field: ids})
            assert refused.status_code == status and f"'{shown}' holds token ids" in refused.text, refused.text
        empty = httpx.post(server.url + path, json={field: [[]]})
        assert empty.status_code == 400 and f"'{field}[0]' is an empty list of token ids" in empty.text, empty.text
        if field == "inputs":
            assert empty.json()["error_type"] == "Empty", empty.text


# ------------------------------------------------------------------------------- a prompt that leaves no room


LONG_PROMPT = " ".join(["word"] * 40) + ": "  # more tokens than the 16-token window


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
