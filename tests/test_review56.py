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
