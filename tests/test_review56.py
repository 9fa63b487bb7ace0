"""Review of stop 56's core and serve fixes: what a fix made reachable that the docs still say otherwise."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from serve_fakes import FakeRunner, post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake():
    with start_server(FakeRunner()) as server:
        yield server


@pytest.mark.parametrize(("path", "body"), [
    ("/tokenize", {"inputs": "a b"}),
    ("/decode", {"ids": [1, 2]}),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
    ("/", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
])  # fmt: skip
def test_encoding_format_is_refused_where_no_embedding_is_answered(fake, path, body):
    """The fix that let huggingface_hub's ``feature_extraction`` send ``encoding_format`` to /embed dropped it
    on every TEI route: /tokenize, /decode and /similarity (also through POST /) took ``"encoding_format": "base64"``
    without a word, where docs/serve.md answers a field a route does not take with 422."""
    for where in ("top", "parameters"):
        sent = {**body, "encoding_format": "base64"} if where == "top" else {
            **body, "parameters": {"encoding_format": "base64"}}  # fmt: skip
        response = post(fake, path, sent)
        assert response.status_code == 422, (where, response.text)
        assert "unrecognized request field(s) 'encoding_format'" in response.json()["error"], response.text


def test_encoding_format_on_embed_is_still_checked_and_ignored(fake):
    """/embed (and POST / for a dense model) keep the fix: floats for "float" and "base64", 422 for others."""
    for path in ("/embed", "/"):
        plain = post(fake, path, {"inputs": ["a b"]}).json()
        for encoding in ("float", "base64"):
            for sent in ({"inputs": ["a b"], "encoding_format": encoding},
                         {"inputs": ["a b"], "parameters": {"encoding_format": encoding}}):  # fmt: skip
                assert post(fake, path, sent).json() == plain
        refused = post(fake, path, {"inputs": ["a b"], "encoding_format": "int8"})
        assert refused.status_code == 422 and "'encoding_format'" in refused.json()["error"], refused.text


def test_max_chunks_reads_documents_twice_only_behind_a_prompt(small, monkeypatch):
    """`EncoderRunner.body_lengths` (the exact count behind a prompt that may join the first word) tokenised every
    document of every chunked request a second time before its pass: a 1 MB document cost 1.3 s more (2.0 s for
    its counts). Without a prompt the counts less the special tokens are that number: it is asked only behind one.
    The count stays exact either way (`Encoder.encode_chunks`, the plan, is the reference)."""
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.settings import ServeSettings

    calls = []
    reads = EncoderRunner.body_lengths
    monkeypatch.setattr(EncoderRunner, "body_lengths", lambda self, *args: calls.append(args) or reads(self, *args))
    texts = ["the cat sat on the mat and looked around", "hello world"]
    for prompt in ("", "query: "):
        made = len(small.encode_chunks(texts, chunks="tokens:3", prompt=prompt).vectors)
        runner = EncoderRunner(small, name="tiny", default_prompt=prompt)
        for limit, status in ((made - 1, 413), (made, 200)):
            with start_server(runner, ServeSettings(max_chunks=limit)) as server:
                response = post(server, "/embed_documents", {"documents": texts, "chunks": "tokens:3"})
            assert response.status_code == status, response.text
        assert len(calls) == (2 if prompt else 0), calls
        calls.clear()
