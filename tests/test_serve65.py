"""Stop 65's items in `tokenpool serve` (the HTTP server layer)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from tokenpool.serve.fields import DOCUMENT_FIELDS, DOCUMENTS, OPENAI, OPENAI_FIELDS, TEI, TEI_FIELDS, parse  # noqa: E402
from tokenpool.serve.http import ApiError  # noqa: E402


@pytest.mark.parametrize(("body", "protocol", "fields", "expected"), [
    ({"input": ["ok", None]}, OPENAI, OPENAI_FIELDS, "'input[1]' must be a string, got null"),
    ({"inputs": ["ok"], "parameters": {"dimensions": None, "normalize": [None]}}, TEI, TEI_FIELDS,
     "'normalize' must be true or false, got array [null]"),
    ({"documents": ["hello"], "chunks": "spans", "spans": [None]}, DOCUMENTS, DOCUMENT_FIELDS,
     "'spans[0]' must be a list of [start, end] pairs, got null"),
])  # fmt: skip
def test_a_null_value_is_named_once(body, protocol, fields, expected):
    """A JSON null was shown as its type and then its value, which are the same word: "'spans[0][1]' must be a
    [start, end] pair of integers, got null null". It is "got null" now; other values keep type and value."""
    with pytest.raises(ApiError) as refused:
        parse(body, protocol, fields)
    assert refused.value.message == expected
