"""Review of stop 64's serve fixes: what a refusal echoes of a client's value is bounded (as `http.cut` bounds
every other value), and shown as the client sent it. Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line

LONG = 5000  # characters of a client's value: a message echoing it whole is over 5 kB


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    pytest.importorskip("uvicorn")
    from serve_fakes import tiny_server

    from tokenpool.serve.settings import ServeSettings

    with tiny_server(tiny_bert_folder, ServeSettings()) as server:
        yield server


def _message(answer) -> str:
    error = answer.json()["error"]
    return error["message"] if isinstance(error, dict) else error


@pytest.mark.parametrize(("path", "field"), [("/embed", "inputs"), ("/v1/embeddings", "input"), ("/tokenize", "inputs")])
def test_an_unknown_long_prompt_name_is_cut_in_the_message(tiny, path, field):
    """``{"inputs": "hi", "prompt_name": "x" * 5000}`` was refused with the whole name in the message (a 5 kB
    error): the library's refusal, passed on as it is. The name is cut now; a short one is shown as before."""
    from serve_fakes import post

    from tokenpool.errors import OptionError
    from tokenpool.model.request import EncodeRequest

    long = post(tiny, path, {field: "hi", "prompt_name": "x" * LONG})
    assert long.status_code in (400, 422), long.text
    message = _message(long)
    assert len(long.content) < 500 and message.startswith("prompt_name 'xxxx") and "…'" in message, message
    assert message.endswith("is not one of the model's prompts (none)"), message
    short = post(tiny, path, {field: "hi", "prompt_name": "nope"})
    with pytest.raises(OptionError) as library:  # the library's own words for a short name
        EncodeRequest(prompt_name="nope", caller="http").check_encoder(tiny.service.models[0].view)
    assert _message(short) == str(library.value), short.text


@pytest.mark.parametrize(("chunks", "shown"), [
    ("t" * LONG, '"' + "t" * 60 + '…"'),
    ("bogus", '"bogus"'),
    ("tokens:0" + " " * LONG, 'got 0 in \'chunks\': "tokens:0' + " " * 52 + '…"'),
])  # fmt: skip
def test_a_bad_chunk_spec_is_shown_as_sent_and_cut(tiny, chunks, shown):
    """``/embed_documents {"chunks": "t" * 5000}`` was refused with the whole value, in Python's quotes
    (``got 'tttt...'``, 5 kB), where every other value of a message is JSON and cut; a spec padded with spaces
    was echoed whole too. Now JSON (``got "bogus"``), cut as `http.cut` cuts."""
    from serve_fakes import post

    answer = post(tiny, "/embed_documents", {"documents": ["hello world"], "chunks": chunks})
    assert answer.status_code == 422, answer.text
    message = _message(answer)
    assert len(answer.content) < 500 and message.count("chunks") == 1, message
    assert message.endswith(shown if "…" in shown else f"got {shown}"), message


@pytest.mark.parametrize(("path", "body"), [
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"], "z" * LONG: 1}}),
    ("/embed", {"inputs": "a", "k" * LONG: 1, "parameters": {"k" * LONG: 2}}),
])  # fmt: skip
def test_a_long_field_name_is_cut_in_every_refusal(tiny, path, body):
    """An unknown key within /similarity's ``inputs``, and a key given both at the top level and in
    ``parameters``, were echoed whole (message and ``param``), as the unknown top-level field was before stop 64."""
    from serve_fakes import post

    answer = post(tiny, path, body)
    assert answer.status_code == 422, answer.text
    assert len(answer.content) < 500 and "…" in _message(answer), answer.text


def test_an_unknown_model_option_is_named_as_written_on_the_command_line(run):
    """The command, not only `_model_specs`: one stderr line, exit 2, the pairs as the list wrote them, in order,
    and neither the flags they became nor a known pair."""
    code, _, err = run("serve", "--port", 0, "--model", "a=./m,precision=int8,dim=8,colour=false")
    assert_one_error_line(code, err, "unrecognized arguments: precision=int8, colour=false (OPTION must be")
    assert "--precision" not in err and "--no-colour" not in err and "dim=8 " not in err, err


def test_a_server_thread_that_does_not_start_leaves_no_socket_open(monkeypatch):
    """`start_server` raised "the server thread did not start" and left its bound socket open (a file descriptor
    and the port held per failed start, for as long as anything held the error's frames)."""
    import uvicorn
    from serve_fakes import FakeRunner

    from tokenpool.serve import server

    bound, bind = [], server.bind
    monkeypatch.setattr(server, "bind", lambda host, port: bound.append(bind(host, port)) or bound[-1])
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # the thread ends at once
    with pytest.raises(RuntimeError, match="did not start"):
        server.start_server(FakeRunner())
    assert len(bound) == 1 and bound[0].fileno() == -1, bound  # closed
