"""Stop 62's hunt in `tokenpool serve`: what docs/serve.md tells a user who compares the server with TEI. Servers
bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_fakes import FakeRunner

from tokenpool.serve.server import start_server
from tokenpool.serve.settings import ServeSettings

SERVE_DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


def test_the_docs_say_a_browser_page_gets_no_cors_headers():
    """TEI answers a browser's CORS preflight with `--cors-allow-origin`; tokenpool serve has no CORS headers, so
    a web page on another origin that called TEI cannot call it, yet docs/serve.md's list of what TEI does that
    tokenpool does not left CORS out. The preflight's answer is checked here, and the list now names it."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    with start_server(FakeRunner(max_length=16), ServeSettings()) as server:
        answer = httpx.options(server.url + "/embed", headers=preflight)
    assert answer.status_code == 405 and "access-control-allow-origin" not in answer.headers
    docs = SERVE_DOCS.read_text(encoding="utf-8")
    missing = docs.split("## What TEI and infinity do that tokenpool serve does not (yet)", 1)[1]
    assert "--cors-allow-origin" in missing and "405" in " ".join(missing.split())
