"""Stop 63's hunt in `tokenpool serve`: requests as existing clients send them, and messages naming the JSON fields
the client sent. Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest

from tokenpool.serve.settings import ServeSettings

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    from serve_fakes import tiny_server

    with tiny_server(tiny_bert_folder, ServeSettings()) as server:
        yield server


def _error(answer) -> str:
    body = answer.json()["error"]
    return body if isinstance(body, str) else body["message"]


@pytest.mark.parametrize(("documents", "spans", "named", "shown"), [
    (["hello world"], [[[0, 99]]], "'spans[0][0]'", "span [0, 99] is not within the text of 'documents[0]'"),
    (["ok then", "hello world"], [[[0, 2]], [[0, 5], [5, 2]]], "'spans[1][1]'",
     "span [5, 2] is not within the text of 'documents[1]'"),
    (["hello world"], [[]], "'spans[0]'", "no spans"),
    ("hello world", [[[0, 12]]], "'spans[0][0]'", "span [0, 12] is not within the text of 'documents' "),
])  # fmt: skip
def test_a_bad_span_is_named_by_its_json_field(tiny, documents, spans, named, shown):
    """/embed_documents refused a span outside its document in the model's pass with the library's spelling,
    "document 0: span [0, 99] is not within the text", and no param: a client sent 'spans[0][0]', not "document
    0". It is now refused before the request queues, naming the field as sent (docs/serve.md: "the message names
    the field and value at fault"); the need (0 <= start < end <= length) is as the library says it."""
    from serve_fakes import post

    answer = post(tiny, "/embed_documents", {"documents": documents, "chunks": "spans", "spans": spans})
    assert answer.status_code == 422, answer.text
    message = _error(answer)
    assert message.startswith(named) and shown in message and "document 0:" not in message, message
    if "no spans" not in shown:
        assert f"(need 0 <= start < end <= {len(documents if isinstance(documents, str) else documents[-1])})" in message
    assert post(tiny, "/embed_documents", {"documents": ["hello world"], "chunks": "spans",
                                            "spans": [[[0, 11]]]}).status_code == 200  # fmt: skip


@pytest.mark.parametrize("blank", [" ", " \n\t "])
def test_a_whitespace_document_is_named_by_its_json_field(tiny, blank):
    """/embed_documents refused a whitespace-only document with "document 1: only whitespace; it has no chunk to
    embed" from the model's pass; it is named as sent, 'documents[1]', before the request queues, as late
    chunking names such an input."""
    from serve_fakes import post

    for chunks in ("tokens:4", "boundaries:8"):
        answer = post(tiny, "/embed_documents", {"documents": ["ok then", blank], "chunks": chunks})
        assert answer.status_code == 422, answer.text
        assert _error(answer).startswith("'documents[1]' is only whitespace"), _error(answer)


@pytest.mark.parametrize(("path", "status"), [("/v1/embeddings", 415), ("/embed", 415)])
def test_a_compressed_body_is_refused_naming_its_content_encoding(tiny, path, status):
    """A client that compresses its body (``Content-Encoding: gzip``, as some HTTP clients do for large bodies)
    was told "the request body is not valid JSON: it is not UTF-8 (byte 1 is 0x8b ...); send JSON in UTF-8":
    its JSON was valid UTF-8, only compressed. The server reads no content coding, so the body is refused as RFC
    9110 says (415, ``Accept-Encoding: identity``), naming the coding; an identity coding still passes."""
    import gzip
    import json

    from serve_fakes import post

    field = "input" if path.startswith("/v1/") else "inputs"
    body = json.dumps({field: ["a cat"]}).encode()
    answer = post(tiny, path, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert answer.status_code == status, answer.text
    assert answer.headers["accept-encoding"] == "identity"
    message = _error(answer)
    assert "Content-Encoding: gzip" in message and "UTF-8" not in message, message
    assert post(tiny, path, body, headers={"Content-Encoding": "identity"}).status_code == 200


INSTRUCTION = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "


def test_a_model_prompt_may_hold_commas():
    """docs/serve.md: each --model NAME=FOLDER,OPTION=VALUE list takes any model option of the command, its own
    ``prompt=`` included; an instruction prompt holds commas (e5-mistral's, gte-Qwen's, Qwen3-Embedding's), and
    ``--model q=./m,prompt=Instruct: Given a web search query, retrieve ...`` was refused ("' retrieve relevant
    passages ...' is not OPTION=VALUE of a model option"), though `--prompt` takes it. A comma now separates
    options only where an OPTION=VALUE follows it; the prompt is the text as typed."""
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs
    from tokenpool.errors import OptionError

    spec = f"q=./m,prompt={INSTRUCTION},dim=64,normalize=false"
    [(name, options)] = _model_specs(build_parser().parse_args(["serve", "--model", spec]))
    assert (name, options.model, options.prompt, options.truncate_dim, options.normalize) == ("q", "./m", INSTRUCTION, 64, False)
    with pytest.raises(OptionError, match="'normalize' is not OPTION=VALUE"):  # a lone word is still refused
        _model_specs(build_parser().parse_args(["serve", "--model", "q=./m,normalize"]))


@pytest.mark.parametrize("chunks", ["tokens:999", "boundaries:999"])
def test_a_chunk_size_past_the_window_is_named_as_json(tiny, chunks):
    """A chunk size larger than the window (found in the model's pass) was refused naming the field in Python's
    spelling, ``... in chunks='tokens:999'``; the server's messages name its JSON fields (docs/architecture.md:
    the server's requests are ``caller="http"``): ``'chunks': "tokens:999"``."""
    pytest.importorskip("semantic_text_splitter")
    from serve_fakes import post

    answer = post(tiny, "/embed_documents", {"documents": ["hello world"], "chunks": chunks})
    assert answer.status_code == 422, answer.text
    message = _error(answer)
    assert f"'chunks': \"{chunks}\"" in message and "chunks='" not in message, message


def test_a_compressed_body_is_refused_also_when_its_coding_comes_in_a_second_header_line(tiny):
    """RFC 9110 (5.3): a field sent in several lines is the comma-joined list of their values, so a body coded
    ``Content-Encoding: identity`` then ``Content-Encoding: gzip`` is gzip. Only the first line was read: the
    body was refused as "not valid JSON: it is not UTF-8" again. Every line is read now; identity lines pass."""
    import gzip

    import httpx

    body = b'{"inputs": ["a cat"]}'
    lines = [("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]
    answer = httpx.post(tiny.url + "/embed", content=gzip.compress(body), headers=lines, timeout=30)
    assert answer.status_code == 415, answer.text
    assert "Content-Encoding: identity, gzip" in _error(answer), _error(answer)
    lines = [("Content-Encoding", "identity"), ("Content-Encoding", "identity")]
    assert httpx.post(tiny.url + "/embed", content=body, headers=lines, timeout=30).status_code == 200


def test_a_model_prompt_may_hold_an_equals_sign_after_a_comma():
    """docs/serve.md: "a comma ends a value only where an OPTION=VALUE follows it". A comma followed by any text
    holding "=" was taken for one: ``prompt=Given a claim, find passages where x=y`` was refused as "unrecognized
    arguments: --find passages where x=y"; it is the prompt as typed, the OPTION=VALUE after it still read."""
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs

    prompt = "Given a claim, find passages where x=y\nQuery: "
    [(_, options)] = _model_specs(build_parser().parse_args(["serve", "--model", f"q=./m,prompt={prompt},dim=64"]))
    assert (options.prompt, options.truncate_dim) == (prompt, 64)
