"""HTTP plumbing every endpoint shares: the request and response an endpoint sees, OpenAI or TEI error objects,
the API key gate, the bounded body read and the endpoint wrapper. Plain ASGI (`app.App` routes), not FastAPI:
bodies are checked by hand (`fields`) for exact errors, and a request passes through no middleware stack."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import orjson
from starlette.routing import get_route_path
from starlette.types import Receive, Scope, Send

from ..errors import cut, shown_digits, shown_int

__all__ = ["ApiError", "ApiKeyGate", "Request", "Response", "cut", "draining_error", "endpoint", "json_response",
           "json_text", "read_json", "route_path", "style_of", "type_name", "without_trailing_slash"]  # fmt: skip

logger = logging.getLogger("tokenpool.serve")


class Request:
    """What an endpoint reads of its request: the ASGI ``scope`` and ``receive``, and the path parameters."""

    __slots__ = ("path_params", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, path_params: dict[str, str] | None = None) -> None:
        self.scope, self.receive, self.path_params = scope, receive, path_params or {}


class Response:
    """A whole response: status, body and the raw headers ASGI sends (the given ones, then content-length and
    content-type; a text/ type names its charset, utf-8)."""

    __slots__ = ("body", "raw_headers", "status_code")

    def __init__(self, body: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None,
                 media_type: str | None = None) -> None:  # fmt: skip
        raw = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in (headers or {}).items()]
        raw.append((b"content-length", str(len(body)).encode()))
        if media_type is not None:
            if media_type.startswith("text/") and "charset=" not in media_type.lower():
                media_type += "; charset=utf-8"
            raw.append((b"content-type", media_type.encode("latin-1")))
        self.body, self.status_code, self.raw_headers = body, status_code, raw

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


class ApiError(Exception):
    """A request that gets an error response: status, message, and the OpenAI ``param``/``code``."""

    _TEI_TYPES = {"empty": "Empty", "unauthorized": "Unauthorized", "not_found": "NotFound",
                  "queue_full": "Overloaded", "draining": "Unhealthy", "internal": "Backend",
                  "client_disconnected": "Cancelled"}  # fmt: skip
    _OPENAI_TYPES = {"queue_full": "requests", "draining": "server_error", "internal": "server_error"}

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request", param: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code, self.headers = param, code, dict(headers or {})

    def response(self, style: str) -> Response:
        if style == "openai":
            kind = self._OPENAI_TYPES.get(self.kind, "invalid_request_error")
            body: Any = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        else:
            body = {"error": self.message, "error_type": self._TEI_TYPES.get(self.kind, "Validation")}
        return Response(orjson.dumps(body), self.status, self.headers, "application/json")


OPENAI_PATHS = ("/v1", "/embeddings", "/models")  # the OpenAI protocol (also without its /v1 prefix: infinity's)


def style_of(path: str) -> str:
    """Error objects on or below `OPENAI_PATHS` (``/v1`` itself too) are OpenAI's, else TEI's."""
    return "openai" if any(path == p or path.startswith(p + "/") for p in OPENAI_PATHS) else "tei"


def json_response(content: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), 200, headers, "application/json")


def type_name(value: Any) -> str:
    """A JSON type name for messages: string, integer, number, boolean, array, object, null."""
    names = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object",
             _TooLarge: "number"}  # fmt: skip
    return names.get(type(value), "null" if value is None else type(value).__name__)


def json_text(value: Any) -> str:
    """A value as JSON writes it, so a message shows what the client sent (``null``, ``true``, ``{"a":1}``; an
    integer of up to 4,300 digits as `tokenpool.errors.shown_int` shows one)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # (orjson.JSONEncodeError is one) an integer past 64 bits (alone or within), a caller's
        if type(value) is int:  # Python object, or nesting past orjson's 254 levels: Python's writer, or repr
            return shown_int(value)
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
        except RecursionError:  # past Python's limit too (a body may hold orjson's 1,024 levels)
            return "(nested too deeply to show)"


def draining_error(stopped: bool = False) -> ApiError:
    """503 for a request that arrives while the server drains, or (``stopped``) is unanswered when it ends."""
    message = ("the server stopped before this request was done (--drain-timeout)" if stopped
               else "the server is shutting down and takes no new requests")  # fmt: skip
    return ApiError(503, message, kind="draining", code="service_unavailable",
                    headers={"Retry-After": "5", "Connection": "close"})  # fmt: skip


_CLOSE = {"Connection": "close"}  # the rest of the body is never read: close instead of draining it


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            if message["type"] == "http.disconnect":  # the client's doing, not a server fault: no "internal" error
                raise ApiError(499, "the client closed the connection before its body arrived",
                               kind="client_disconnected")  # fmt: skip
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over {limit} bytes, the most this server takes",
                           kind="too_large", headers=_CLOSE)  # fmt: skip
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# an integer literal of 19 digits or more, as a value (after "[", ":" or ","; before "]", "}" or ","): the only
# kind that may lie past orjson's 64-bit integers (-2**63 - 1 has 19 digits), which it reads as a float
_LONG_INTEGER = re.compile(rb"[\[:,]\s*-?\d{19,}\s*[\]},]")
# a number that may be past a double's range (an exponent of 3+ digits, 201+ digits before it) in JSON's spelling
# (no leading zero: "01e999" is none), after what may stand before a number (a search tries those places only;
# within a string, such a place is no escape's: the string stays valid when it is blanked)
_LARGE_NUMBER = re.compile(rb"[ \t\n\r,:\[-](?<![eE]-)(?=[\d.]*[eE]\+?\d{3}|[1-9]\d{200})"  # (a quick look first)
                           rb"([1-9]\d{200,}(?!\d)(?:\.\d+(?!\d)|(?!\.))(?:[eE][+-]?\d+|(?![eE]))"  # (a whole tail only)
                           rb"|(?:0|[1-9]\d*)(?:\.\d+)?[eE]\+?\d{3,})")


def _syntax_error(body: bytes) -> json.JSONDecodeError | None:
    """orjson's error for ``body`` with its numbers past a double's range written as 0 (and spaces, so the
    error's position is the body's), or None: such numbers are valid JSON, and a body is refused as not JSON
    (``NaN``, a lone surrogate) wherever its other defect lies, at the defect's own position."""
    blanked = bytearray(body)
    for number in _LARGE_NUMBER.finditer(b" " + body):  # (a space first, for a body that is a number)
        if not math.isfinite(float(number[1])):
            blanked[number.start(1) - 1:number.end() - 1] = b"0".ljust(len(number[1]))
    try:
        orjson.loads(blanked)
    except orjson.JSONDecodeError as err:
        return json.JSONDecodeError(err.msg, body.decode(), err.pos)  # (its text the body's: orjson checked UTF-8)
    return None


class _TooLarge:
    """A JSON number Python's reader cannot hold (an integer past its digit limit, a number past a double's
    range), kept as its text for `read_json` to refuse."""

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def integer(cls, text: str) -> Any:
        try:
            return int(text)
        except ValueError:  # (past sys.get_int_max_str_digits)
            return cls(text)

    @classmethod
    def number(cls, text: str) -> Any:
        return float(text) if math.isfinite(float(text)) else cls(text)

    @classmethod
    def find(cls, data: dict[str, Any]) -> tuple[str, str] | None:
        """(where, text) of the first such number in ``data``: ``dimensions``, ``ids[0][3]``, ``a.b``. A walk with
        no recursion (Python's reader may nest deeper than its calls go) that names only what it finds."""
        keys: list[Any] = []
        stack: list[Iterator[tuple[Any, Any]]] = [iter(data.items())]
        while stack:
            for key, value in stack[-1]:
                if isinstance(value, cls):
                    where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in (*keys, key))
                    return where[1:], value.text
                if value and isinstance(value, (dict, list)):
                    keys.append(key)
                    stack.append(iter(value.items()) if isinstance(value, dict) else enumerate(value))
                    break
            else:
                stack.pop()
                del keys[-1:]
        return None


_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+: a timer on the running task, not a task of its own


async def read_json(request: Request, limit: int, timeout: float) -> dict[str, Any]:
    """The body as a JSON object, read in pieces: refused (413) as soon as it passes ``limit`` bytes, and (408)
    when it has not all arrived within ``timeout`` seconds."""
    headers = request.scope["headers"]
    declared = next((value.decode("latin-1") for name, value in headers if name == b"content-length"), "")
    digits = declared.lstrip("0") or "0"  # (int() reads 4,300 digits: a longer length is over any limit)
    if declared.isdecimal() and (len(digits) > len(str(limit)) or int(digits) > limit):  # (isdigit: "²")
        raise ApiError(413, f"the request body has {shown_digits(declared)} bytes; this server takes at most "
                       f"{limit}", kind="too_large", headers=_CLOSE)  # fmt: skip
    coding = ", ".join(value.decode("latin-1").strip() for name, value in headers if name == b"content-encoding")
    if any(part.strip().lower() not in ("", "identity") for part in coding.split(",")):  # (RFC 9110: 415)
        raise ApiError(415, f"the request body is encoded (Content-Encoding: {cut(coding, 40)}); this server reads "
                       "JSON as sent, uncompressed: send it without Content-Encoding",
                       headers={"Accept-Encoding": "identity", **_CLOSE})  # fmt: skip
    try:
        if _timeout is None:  # pragma: no cover - Python 3.10
            body = await asyncio.wait_for(_read_body(request.receive, limit), timeout)
        else:
            async with _timeout(timeout):
                body = await _read_body(request.receive, limit)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s", kind="timeout",
                       headers=_CLOSE) from None  # fmt: skip
    if not body:
        raise ApiError(400, "the request body is empty; send a JSON object", kind="empty")
    return _parsed(body)


def _parsed(body: bytes) -> dict[str, Any]:
    """A body as a JSON object (`read_json`), or the 400 that names what is wrong with it and where."""
    try:
        data = orjson.loads(body)
        exact = _LONG_INTEGER.search(body)
    except orjson.JSONDecodeError as err:
        data, exact = err, "number is infinity" in str(err)  # (a number past a double's range is valid JSON)
        if exact and (other := _syntax_error(body)) is not None:
            data, exact = other, False
        elif err.msg.startswith("str is not valid UTF-8"):  # (orjson: "surrogates not allowed", at char 0)
            try:
                body.decode()
            except UnicodeDecodeError as bad:
                raise ApiError(400, f"the request body is not valid JSON: it is not UTF-8 (byte {bad.start} is "
                               f"0x{body[bad.start]:02x}: {bad.reason}); send JSON in UTF-8") from None
    # orjson reads an integer past 64 bits as a float (a refusal would name 1e+20 for the client's 10**20), and
    # refuses one past a double's range: such a body, JSON but for such numbers, is read again by Python's reader,
    # whose integers are exact, unless nested deeper than it goes; a number it cannot hold either is refused
    # naming where it is
    if exact:
        refused = isinstance(data, orjson.JSONDecodeError)  # (only then may a number be past Python's reader too)
        hooks = {"parse_int": _TooLarge.integer, "parse_float": _TooLarge.number}
        try:  # (the hooks, a Python call per number, only for a body orjson refused)
            data = json.loads(body, **(hooks if refused else {}))
        except RecursionError:
            pass
        except json.JSONDecodeError as err:  # (a defect `_syntax_error` missed: Python's reader names it too)
            data, exact = err, False
        found = _TooLarge.find(data) if refused and isinstance(data, dict) else None
        if found is not None:
            where = cut(found[0])
            raise ApiError(400, f"'{where}' is a number too large to read ({len(found[1])} characters: "
                           f"{shown_digits(found[1])})", param=where)  # fmt: skip
    if isinstance(data, json.JSONDecodeError):  # (still orjson's refusal when exact: Python's reader ran too deep)
        said, there = "nested too deeply to read its number" if exact else "not valid JSON", data.doc[data.pos:data.pos + 20]
        raise ApiError(400, f"the request body is {said}: {data}" + (f" at '{cut(there, 12)}'" if there else ""))
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got a JSON {type_name(data)}")
    return data


def without_trailing_slash(scope: Scope) -> Scope:
    """The scope with its path's trailing slashes dropped, before anything else reads it, so ``POST /embed/`` is
    ``POST /embed`` (Starlette's router would answer it a 307 redirect to a Location built from the Host header)."""
    path = scope["path"]
    if len(path) > 1 and path.endswith("/"):
        raw = scope.get("raw_path")
        scope = {**scope, "path": path.rstrip("/") or "/"}
        if raw is not None:
            scope["raw_path"] = raw.rstrip(b"/") or b"/"
    return scope


def route_path(scope: Scope) -> str:
    """The path the routes match: the request's path after its ``root_path`` (an app mounted under a prefix,
    or uvicorn's --root-path: ASGI servers and Starlette pass the full path), as Starlette's router reads it."""
    return get_route_path(scope) or "/"


def _refusal(header: bytes | None, scheme: bytes, rest: bytes) -> str:
    """Why an Authorization header (``scheme rest``) was refused; never repeating the credentials: a scheme is
    named only when it looks like one, and a bare key has none."""
    if header is None or (scheme.lower() == b"bearer" and not rest):
        return "missing API key: send 'Authorization: Bearer <key>'"
    if scheme.lower() == b"bearer":
        return "incorrect API key in the Authorization header"
    if not rest:
        return "the Authorization header has no scheme; send the API key as 'Authorization: Bearer <key>'"
    named = f"the {scheme.decode('latin-1')}" if scheme.isalpha() and len(scheme) <= 20 else "an unknown"
    return f"the Authorization header uses {named} scheme; this server expects the API key as a Bearer token: " \
        "send 'Authorization: Bearer <key>'"


class ApiKeyGate:
    """``Authorization: Bearer KEY``, compared in constant time; asked of every request but those of the routes
    `app.ROUTES` marks public (the health checks)."""

    def __init__(self, api_key: str, metrics: Any) -> None:
        self.metrics = metrics
        self._digest = hashlib.sha256(api_key.encode()).digest()

    def refusal(self, scope: Scope) -> Response | None:
        """The 401 for a request without the key (counted in the metrics), or None when it may pass."""
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        scheme, _, rest = (header or b"").strip().partition(b" ")
        token = rest.strip() if scheme.lower() == b"bearer" else b""
        # hash first: compare_digest then sees equal lengths, so not even the key's length leaks
        if hmac.compare_digest(hashlib.sha256(token).digest(), self._digest):
            return None
        error = ApiError(401, _refusal(header, scheme, rest.strip()), kind="unauthorized", code="invalid_api_key",
                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        self.metrics.answered("unauthorized", 401, 0.0, "unauthorized")
        return error.response(style_of(route_path(scope)))


Handler = Callable[[Any, Request], Awaitable[Response]]


def endpoint(service: Any, name: str, handler: Handler, *, work: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: errors in the path's style, metrics, and (``work``) the drain gate, in-flight count."""

    async def run(request: Request) -> Response:
        began, error, tracked = time.perf_counter(), None, False
        try:
            if work:
                if service.draining:
                    raise draining_error()
                service.in_flight += 1
                service.metrics.in_flight.inc()
                tracked = True
            response = await handler(service, request)
        except ApiError as err:
            error = err
        except asyncio.CancelledError:  # cancelled by uvicorn's shutdown: the drain's 503, not uvicorn's 500
            if not service.draining:
                raise
            error = draining_error(stopped=True)
        except Exception:  # a bug, not bad input: log it, never send a traceback
            logger.exception("unexpected error on %s", name)
            error = ApiError(500, "internal server error (the server log has the details)", kind="internal")
        finally:
            if tracked:
                service.in_flight -= 1
                service.metrics.in_flight.dec()
        kind = None
        if error is not None:
            response, kind = error.response(style_of(route_path(request.scope))), error.kind
        service.metrics.answered(name, response.status_code, time.perf_counter() - began, kind)
        return response

    return run


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client closes its connection (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
