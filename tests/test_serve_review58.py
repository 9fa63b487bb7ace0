"""Review of stop 58's JSON numbers past a double (`tokenpool.serve.http.read_json`): a body orjson refuses for
such a number is read again by Python's reader and the number named by where it is."""

from __future__ import annotations

import asyncio
import json

import pytest

from tokenpool.serve import http
from tokenpool.serve.http import ApiError, Request, read_json


def _read(body: bytes):
    """``read_json`` of one body: the object, or the ApiError it raised."""
    sent: list[bool] = []

    async def receive():
        if sent:
            return {"type": "http.disconnect"}
        sent.append(True)
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return asyncio.run(read_json(Request({"type": "http", "headers": []}, receive), 1 << 24, 10.0))
    except ApiError as err:
        return err


@pytest.mark.parametrize(("body", "kind"), [(b"1e999", "number"), (b"-" + b"9" * 5000, "number"),
                                            (b"[1e999]", "array"), (b" 9" + b"9" * 400, "integer")])  # fmt: skip
def test_a_body_that_is_a_number_too_large_is_refused_as_no_object(body, kind):
    """A body that is no JSON object is refused as such, whatever number it holds: ``1e999`` was refused as
    "'' is a number too large to read" (param ''), ``[1e999]`` as "'[0]' is ...": names of no field."""
    err = _read(body)
    assert isinstance(err, ApiError) and err.status == 400 and err.param is None, err
    assert err.message == f"the request body must be a JSON object, got a JSON {kind}", err.message


def test_a_number_too_large_is_named_behind_nesting_deeper_than_python_calls(monkeypatch):
    """Python's reader nests deeper than Python's own calls go on Python 3.12+ (its C recursion limit is its
    own): the walk that names the number recursed, and its RecursionError was swallowed, so the object went on
    with the reader's stand-in for the number in it. Simulated here: the reader gives a value nested 5,000 deep
    before the number."""
    loads = json.loads

    def deep_reader(body, **hooks):
        data = loads(body, **hooks)
        nested: list = []
        for _ in range(5000):
            nested = [nested, 0]
        return {"spans": nested, **data}

    monkeypatch.setattr(http.json, "loads", deep_reader)
    err = _read(b'{"documents": ["a"], "dimensions": 1e999}')
    assert isinstance(err, ApiError) and err.status == 400 and err.param == "dimensions", err
    assert err.message == "'dimensions' is a number too large to read (5 characters: 1e999)", err.message


def test_a_body_orjson_reads_takes_no_number_hooks(monkeypatch):
    """A body orjson reads (a 20-digit integer among many numbers) is read again by Python's reader for its
    exact integers as before: the hooks for numbers orjson cannot hold (a Python call per number) are for a
    body orjson refused only; the values are Python's own (an independent `json.loads`)."""
    calls: list[str] = []
    integer = http._TooLarge.integer
    monkeypatch.setattr(http._TooLarge, "integer", lambda text: calls.append(text) or integer(text))
    body = b'{"a": [' + b"1, 0.5, " * 1000 + b'12345678901234567890], "b": {"c": -98765432109876543210}}'
    assert _read(body) == json.loads(body) and not calls
    assert isinstance(_read(body.replace(b"0.5", b"1e999", 1)), ApiError) and calls
