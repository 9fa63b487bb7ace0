"""Stop 63's server follow-ups: chunk-spec refusals of /embed_documents name the JSON field once, in its JSON
spelling. Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest

from tokenpool.serve.settings import ServeSettings

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def fake():
    from serve_fakes import FakeRunner

    from tokenpool.serve.server import start_server

    with start_server(FakeRunner(), ServeSettings()) as server:
        yield server


@pytest.mark.parametrize(("chunks", "shown"), [
    ("tokens:8:8", 'chunk overlap (8) must be smaller than the chunk size (8) in \'chunks\': "tokens:8:8"'),
    ("tokens:0", 'chunk size must be an int >= 1, got 0 in \'chunks\': "tokens:0"'),
    ("boundaries:4:9", 'chunk overlap (9) must be smaller than the chunk maximum (4) in \'chunks\': "boundaries:4:9"'),
    ("sentences:8", "'chunks' must be 'tokens:SIZE[:OVERLAP]'"),
])  # fmt: skip
def test_a_bad_chunk_spec_names_the_json_field_once(fake, chunks, shown):
    """``"chunks": "tokens:8:8"`` was refused as ``'chunks': chunk overlap (8) ... in chunks='tokens:8:8'``: the
    field twice, the second time in Python's spelling. It is named once now, as the client sent it (as the
    capacity refusal names it: ``... in 'chunks': "tokens:30"``)."""
    from serve_fakes import post

    answer = post(fake, "/embed_documents", {"documents": ["hello world"], "chunks": chunks})
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]
    assert message.startswith(shown) if "SIZE" in shown else message == shown, message
    assert message.count("chunks") == 1 and "chunks=" not in message, message
