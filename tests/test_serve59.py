"""Stop 59's hunt in `tokenpool serve`: bodies holding a JSON number past a double's range beside another defect,
how huge integers are shown in messages. Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_serve58 import _post_raw  # (posts a body as it is)
from test_serve_review58 import _read  # ``read_json`` of one body: the object, or its ApiError

import tokenpool
from tokenpool.serve import http
from tokenpool.serve.http import ApiError, Request, read_json

BIG = "9" * 400  # an integer past a double's range that Python's reader holds exactly
HUGE = "9" * 5000  # one past Python's reader too (its 4,300 digits)


def _not_json_at(body: str, defect: str) -> str:
    """The refusal of a body whose first defect (as JSON) is the text ``defect``, named at its own position
    (1-based column, 0-based char, as Python's reader counts them) with the text there."""
    char = body.index(defect)
    return f"line 1 column {char + 1} (char {char}) at '{defect}"


@pytest.mark.parametrize(("body", "defect"), [
    ('{"input": [1e999, NaN]}', "NaN"),
    ('{"input": [-1e999, ' + HUGE + ', Infinity]}', "Infinity"),
    ('{"dimensions": ' + BIG + ', "documents": ["\\ud800"]}', "\\ud800"),
    ('{"documents": [1e999, "\\udc00 x"]}', "\\udc00"),
    ('{"input": "a", "dimensions": 1e999, "x": tru}', "tru}"),
])  # fmt: skip
def test_a_defect_behind_a_number_past_a_double_is_named_where_it_is(body, defect):
    """Behind a number past a double's range, Python's reader met the body's next defect: a ``NaN`` was refused
    as "unexpected character ... line 1 column 1 (char 0)", and a lone surrogate was read into the text (the
    model later refused ``texts[0]``). The body is refused as not JSON, as the same body without the big number
    is (its own defect, where it lies), wherever the big number stands."""
    err = _read(body.encode())
    assert isinstance(err, ApiError) and err.status == 400 and err.param is None, err
    assert err.message.startswith("the request body is not valid JSON: "), err.message
    assert _not_json_at(body, defect) in err.message, err.message
    small = _read(body.replace("1e999", "1").replace(HUGE, "1").replace(BIG, "1").encode())
    assert small.message.split(": line")[0] == err.message.split(": line")[0], (small.message, err.message)


def test_a_body_that_is_json_but_for_its_big_numbers_still_reads_them():
    """The check for other defects leaves a body that holds only big numbers (in strings too) as before: read
    exactly, or refused naming the number's field."""
    body = '{"a": "1e999 x\\" 2e999", "b": [' + BIG + ', 0.5, -1.5e300], "c": -1e999}'
    err = _read(body.encode())
    assert isinstance(err, ApiError) and err.param == "c", err
    exact = _read(body.replace(', "c": -1e999', "").encode())
    assert exact == json.loads(body.replace(', "c": -1e999', "")) and exact["b"][0] == int(BIG), exact


def _shown(digits: str) -> str:
    """A long integer's text as messages show it: its first and last ten characters (an independent slice)."""
    return f"{digits[:10]}…{digits[-10:]}"


@pytest.fixture(scope="module")
def fake_server():
    pytest.importorskip("uvicorn")
    from serve_fakes import FakeRunner

    from tokenpool.serve.server import start_server
    from tokenpool.serve.settings import ServeSettings

    with start_server(FakeRunner(), ServeSettings()) as server:
        yield server


def _post(server, path: str, body: str):
    """(status, error message) of posting ``body`` as it is."""
    response = _post_raw(server, path, body)
    error = response.json()["error"]
    return response.status_code, error["message"] if isinstance(error, dict) else error


@pytest.mark.parametrize(("path", "body", "status", "said"), [
    ("/decode", '{"ids": [1, ' + BIG + ']}', 422, f"got integer {_shown(BIG)} (400 digits)"),
    ("/embed", '{"inputs": "a", "truncate": -' + BIG + '}', 422, f"got integer {_shown('-' + BIG)} (400 digits)"),
    ("/v1/embeddings", '{"input": "a", "dimensions": -' + HUGE + '}', 400,
     f"'dimensions' is a number too large to read (5001 characters: {_shown('-' + HUGE)})"),
])  # fmt: skip
def test_a_huge_integer_is_shown_by_its_ends_and_its_count(fake_server, path, body, status, said):
    """A huge integer was shown by its first 60 (or 20) digits: ``999…`` says neither how long it is nor how
    it ends. Messages show its first and last ten characters and its count."""
    code, message = _post(fake_server, path, body)
    assert code == status and said in message, message
    assert "9" * 21 not in message, message


@pytest.mark.parametrize("declared", ["\xb2", "1\xb9"])
def test_a_content_length_of_superscript_digits_is_no_500(declared):
    """A Content-Length of Latin-1 superscript digits passed ``str.isdigit`` and then failed ``int()``: a
    ValueError, answered 500 behind an ASGI server that passes the header on. The streamed read decides."""

    async def receive():
        return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    scope = {"type": "http", "headers": [(b"content-length", declared.encode("latin-1"))]}
    assert asyncio.run(read_json(Request(scope, receive), 100, 10.0)) == {"a": 1}


def test_a_number_past_a_double_nested_deeper_than_python_reads_is_not_called_bad_json():
    """A valid body nesting a number past a double deeper than Python's reader goes (1,000 levels on Python 3.11;
    orjson reads 1,024) was refused as "not valid JSON: number is infinity ...". It is named as what it is, where
    it is (or, where Python's reader goes that deep, by its field)."""
    body = '{"a": ' + "[" * 1020 + "1e999" + "]" * 1020 + "}"
    err = _read(body.encode())
    assert isinstance(err, ApiError) and err.status == 400, err
    assert "not valid JSON" not in err.message, err.message
    assert (err.param or "").startswith("a[0][0]") or (
        "nested too deeply to read its number" in err.message and _not_json_at(body, "1e999") in err.message), err.message


@pytest.mark.parametrize(("body", "encoding"), [('{"input": "café"}', "latin-1"), ('{"input": [1e999, "é"]}', "cp1252"),
                                                ('{"input": "a"}', "utf-16")])  # fmt: skip
def test_a_body_not_in_utf8_is_named_so_at_its_first_bad_byte(body, encoding):
    """A body in Latin-1 (a client that does not send UTF-8) was refused as "str is not valid UTF-8: surrogates
    not allowed: line 1 column 1 (char 0)": no surrogate, and not where the fault is. The message names the
    first byte that is no UTF-8, as Python's own decoder finds it."""
    sent = body.encode(encoding)
    try:
        sent.decode()
    except UnicodeDecodeError as reference:
        first = reference.start
    err = _read(sent)
    assert isinstance(err, ApiError) and err.status == 400, err
    assert f"it is not UTF-8 (byte {first} is 0x{sent[first]:02x}" in err.message, err.message
    assert "surrogate" not in err.message, err.message


@pytest.mark.parametrize("value", ['[null, false, 99999999999999999999]', '{"a": [true, -99999999999999999999]}'])
def test_a_value_holding_an_integer_past_64_bits_is_shown_as_json(fake_server, value):
    """A value holding an integer past 64 bits (which orjson does not write) was shown through Python's repr:
    ``got array [None, False, 99999999999999999999]``, ``got object {'a': [True, ...]}``, Python's spelling of
    what the client sent as JSON. It is shown as JSON writes it (the stdlib writer, compact)."""
    code, message = _post(fake_server, "/v1/embeddings", '{"input": "a", "user": ' + value + "}")
    shown = json.dumps(json.loads(value), separators=(",", ":"))
    assert code == 400 and message.endswith(f"got {'array' if value[0] == '[' else 'object'} {shown}"), message


def _patterns(tree):
    """The constant patterns passed to a ``re`` function in a module's syntax tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args and \
                isinstance(node.func.value, ast.Name) and node.func.value.id == "re" and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, (str, bytes)):
            yield node.func.attr, node.args[0].value


def test_no_pattern_in_the_package_needs_python_3_11():
    """The JSON number scan used possessive quantifiers (``\\d++``), which Python's ``re`` reads from 3.11 only:
    on 3.10 (``requires-python >=3.10``) the server did not import ("multiple repeat"). No pattern in the
    package holds a possessive quantifier or an atomic group (3.10 refuses both)."""
    parser = getattr(re, "_parser", None) or importlib.import_module("sre_parse")
    found = []
    for path in sorted(Path(tokenpool.__file__).parent.rglob("*.py")):
        for func, pattern in _patterns(ast.parse(path.read_text(encoding="utf-8"))):
            try:
                tree = repr(parser.parse(pattern))
            except re.error as err:  # (Python 3.10)
                tree = str(err)
            if "POSSESSIVE_REPEAT" in tree or "ATOMIC_GROUP" in tree or "multiple repeat" in tree:
                found.append(f"{path.name}: re.{func}({pattern!r})")
    assert sum(1 for _ in _patterns(ast.parse(Path(http.__file__).read_text()))) >= 2  # (the walk finds calls)
    assert not found, found


LEADING_ZEROS = [('{"input": "a", "dimensions": 1e999, "user": 01e999}', "01e999"),
                 ('{"a": 1e999, "b": -00e999}', "00e999"), ('{"a": 1e999, "b": [-01e999]}', "01e999"),
                 ('{"a": 1e999, "b": 0' + "9" * 400 + "}", "0999")]


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embed"])
@pytest.mark.parametrize(("body", "defect"), LEADING_ZEROS)
def test_a_number_with_a_leading_zero_behind_a_big_number_is_not_json(fake_server, path, body, defect):
    """``01e999`` beside a number past a double was read by the scan as one number and blanked, which made the
    body JSON; Python's reader then refused it with a JSONDecodeError nobody caught: a 500 and a traceback in the
    log. A number with a leading zero is no JSON number: the body is refused (400) naming where it stands."""
    code, message = _post(fake_server, path, body)
    char = body.index(defect)
    assert code == 400 and message.startswith("the request body is not valid JSON: "), (code, message)
    assert f"line 1 column {char + 1} (char {char})" in message and "leading zero" in message, message


def test_a_body_python_refuses_after_the_check_is_a_400_naming_where(monkeypatch):
    """Behind the check for other defects, Python's reader is the last word: a body it refuses is a 400 naming
    the position (it was an uncaught JSONDecodeError, a 500), were the check ever to miss a defect."""
    monkeypatch.setattr(http, "_syntax_error", lambda body: None)
    body = LEADING_ZEROS[0][0]
    err = _read(body.encode())
    char = body.index("01e999") + 1  # (Python's reader stops after the 0)
    assert isinstance(err, ApiError) and err.status == 400, err
    assert f"not valid JSON: Expecting ',' delimiter: line 1 column {char + 1} (char {char})" in err.message, err


def test_numbers_that_cannot_pass_a_double_take_no_python_step(monkeypatch):
    """A body with one number past a double and many ordinary exponent numbers (``1.5e-3``) cost a Python
    step (a float and a check) per number on the event loop: ~3x the time of the scan. Only numbers that may
    pass a double's range (an exponent of 3 digits, 201 digits or more) are looked at in Python."""
    checked = []
    monkeypatch.setattr(http, "math", SimpleNamespace(isfinite=lambda x: checked.append(x) or math.isfinite(x)))
    small = ", ".join(["1.5e-3", "2E+99", "-0.25e5", "1" * 200, "3.5e-400", "0e00", '"1e999"'] * 200)
    body = '{"a": 1e999, "b": [' + small + ', 12e999], "c": NaN}'
    err = _read(body.encode())
    assert _not_json_at(body, "NaN") in err.message, err
    assert len(checked) == 2, len(checked)  # 1e999, 12e999


@pytest.mark.parametrize("declared", ["9" * 5000, "1" + "0" * 4300])
def test_a_content_length_of_thousands_of_digits_is_too_large(declared):
    """A Content-Length of more than 4,300 digits made ``int()`` raise ValueError (a 500). It is over any limit:
    413, as any too-large body, with its first and last ten digits."""

    async def receive():
        return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    scope = {"type": "http", "headers": [(b"content-length", declared.encode())]}
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_json(Request(scope, receive), 100, 10.0))
    assert caught.value.status == 413 and f"has {declared[:10]}…{declared[-10:]} bytes" in caught.value.message


def test_a_content_length_padded_with_zeros_is_its_value():
    async def receive():
        return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    scope = {"type": "http", "headers": [(b"content-length", b"0" * 5000 + b"8")]}
    assert asyncio.run(read_json(Request(scope, receive), 100, 10.0)) == {"a": 1}


def test_a_message_shows_non_ascii_text_as_sent(fake_server):
    """A value holding an integer past 64 bits is written by Python's writer, which escaped non-ASCII text:
    ``got array ["\\u00e9",99999999999999999999]`` for the client's ``é``."""
    code, message = _post(fake_server, "/v1/embeddings", '{"input": "a", "user": ["é", 99999999999999999999]}')
    assert code == 400 and message.endswith('got array ["é",99999999999999999999]'), message


@pytest.mark.parametrize(("body", "field"), [
    ('{"a": "\\u0031e999", "b": 1e999}', "b"),
    ('{"a": "\\u1e999", "b": 1e999}', "b"),  # (the escape \u1e99, then 9: no number)
    ('{"\\u1E999": 1e999}', "\u1e99" "9"),
    ('{"1e999": "\\u1e999", "c": [1e999]}', "c[0]"),
    ('{"a": "\\"", "b": "\\u1e999", "c": 1e999}', "c"),  # (an escaped quote ends no string)
    ('{"a": "\\\\", "b": "\\u1e999", "c": 1e999}', "c"),  # (an escaped backslash escapes no quote)
    ('{"a": "\\\\\\"\\\\", "b": "x \\u1e999", "c": 1e999}', "c"),
])  # fmt: skip
def test_numbers_within_strings_are_left_as_they_are(body, field):
    """The check for other defects blanks numbers past a double; a scan that took a string's text (an escape
    ``\\u1e99``, after an escaped quote or backslash) for such a number broke the escape, and the valid body was
    refused as not JSON. Such bodies are read as before: refused naming the big number's field."""
    json.loads(body)  # (valid JSON)
    err = _read(body.encode())
    assert isinstance(err, ApiError) and err.status == 400 and err.param == field, err
    defect = _read(body.replace("1e999}", "1e999, \"z\": NaN}").replace("1e999]", "1e999, NaN]").encode())
    assert "not valid JSON" in defect.message and "at 'NaN" in defect.message, defect


def test_a_string_left_open_after_a_big_number_ends_the_check():
    body = '{"a": 1e999, "b": "x 1e999'
    err = _read(body.encode())
    assert isinstance(err, ApiError) and err.status == 400 and "not valid JSON" in err.message, err


@pytest.mark.parametrize("body", ["1e999", "-1e999", "\t1E+400"])
def test_a_body_that_is_a_big_number_is_no_object(body):
    err = _read(body.encode())
    assert isinstance(err, ApiError) and err.message == "the request body must be a JSON object, got a JSON number"


@pytest.mark.parametrize("body", [
    '{"a":1e999,"b":NaN}',  # compact (separators=(",", ":")): a number right after ':'
    '{"a":\n1e999,\r\n"b":NaN}',
    '{"a":[1e999,\r1e999],"b":tru}',
    '{"a":\t-1e999, "b": ' + BIG + 'e}',  # a long number with a broken exponent
    '{"a": 1e999, "b": ' + BIG + '.}',
    '{"a": 1e999, "b": -' + BIG + '.5e+x}',
])  # fmt: skip
def test_a_defect_behind_a_big_number_is_refused_as_without_it(body):
    """The same body with its 1e999s written as a finite number of the same length (10000) is the reference: the
    refusal (message, line, column, char) is the same. Compact bodies and bodies with line breaks before the big
    number were missed by the earlier cases (a scan without ':' or '\\n' passed them); a long number with a broken
    tail behind a big one was named one character early with another reason."""
    err = _read(body.encode())
    want = _read(body.replace("1e999", "10000").encode())
    assert isinstance(err, ApiError) and isinstance(want, ApiError) and err.status == want.status == 400, (err, want)
    assert err.message == want.message
