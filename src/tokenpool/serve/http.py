"""HTTP plumbing every endpoint shares: OpenAI or TEI error objects, the API key gate, the bounded body read
and the endpoint wrapper. Starlette, not FastAPI: bodies are checked by hand (`fields`) for exact errors."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ApiError", "ApiKeyMiddleware", "TrailingSlashMiddleware", "draining_error", "endpoint", "json_response",
           "public", "read_json", "style_of", "type_name"]  # fmt: skip

logger = logging.getLogger("tokenpool.serve")


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
        return Response(orjson.dumps(body), self.status, self.headers, media_type="application/json")


OPENAI_PATHS = ("/embeddings", "/models")  # the OpenAI protocol without its /v1 prefix (infinity's paths)


def style_of(path: str) -> str:
    """Error objects under /v1/ (and on its unprefixed `OPENAI_PATHS`) are OpenAI's, elsewhere TEI's."""
    return "openai" if path.startswith("/v1/") or path in OPENAI_PATHS else "tei"


def json_response(content: Any, headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, headers=dict(headers or {}), media_type="application/json")


def type_name(value: Any) -> str:
    """A JSON type name for messages: string, integer, number, boolean, array, object, null."""
    names = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def draining_error(message: str = "the server is shutting down and takes no new requests") -> ApiError:
    """503 for a request that arrives while the server drains (or is still unanswered when the drain ends)."""
    return ApiError(503, message, kind="draining", code="service_unavailable",
                    headers={"Retry-After": "5", "Connection": "close"})  # fmt: skip


_CLOSE = {"Connection": "close"}  # the rest of the body is never read: close instead of draining it


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is over {limit} bytes, the most this server takes",
                               kind="too_large", headers=_CLOSE)  # fmt: skip
            chunks.append(chunk)
    except ClientDisconnect:  # the client's doing, not a server fault: no traceback, no "internal" error
        raise ApiError(499, "the client closed the connection before its body arrived",
                       kind="client_disconnected") from None  # fmt: skip
    return b"".join(chunks)


async def read_json(request: Request, limit: int, timeout: float) -> dict[str, Any]:
    """The body as a JSON object, read in pieces: refused (413) as soon as it passes ``limit`` bytes, and (408)
    when it has not all arrived within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {declared} bytes; this server takes at most {limit}", kind="too_large",
                       headers=_CLOSE)  # fmt: skip
    try:
        body = await asyncio.wait_for(_read_body(request, limit), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s", kind="timeout",
                       headers=_CLOSE) from None  # fmt: skip
    if not body:
        raise ApiError(400, "the request body is empty; send a JSON object", kind="empty")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got a JSON {type_name(data)}")
    return data


class TrailingSlashMiddleware:
    """A path's trailing slashes are dropped before anything else reads it, so ``POST /embed/`` is ``POST /embed``
    (Starlette would answer it a 307 redirect to a Location built from the Host header)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            raw = scope.get("raw_path")
            scope = {**scope, "path": path.rstrip("/") or "/"}
            if raw is not None:
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


def public(scope: Scope) -> bool:
    """Whether a request needs no API key: the health checks, ``GET /health`` and TEI's ``GET /``."""
    return scope["path"] == "/health" or (scope["path"] == "/" and scope.get("method") in ("GET", "HEAD"))


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


class ApiKeyMiddleware:
    """``Authorization: Bearer KEY`` on every path but the health checks (`public`); compared in constant time."""

    def __init__(self, app: ASGIApp, api_key: str, metrics: Any = None) -> None:
        self.app = app
        self.metrics = metrics
        self._digest = hashlib.sha256(api_key.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or public(scope):
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        scheme, _, rest = (header or b"").strip().partition(b" ")
        token = rest.strip() if scheme.lower() == b"bearer" else b""
        # hash first: compare_digest then sees equal lengths, so not even the key's length leaks
        if hmac.compare_digest(hashlib.sha256(token).digest(), self._digest):
            await self.app(scope, receive, send)
            return
        error = ApiError(401, _refusal(header, scheme, rest.strip()), kind="unauthorized", code="invalid_api_key",
                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if self.metrics is not None:
            self.metrics.answered("unauthorized", 401, 0.0, "unauthorized")
        await error.response(style_of(scope["path"]))(scope, receive, send)


Handler = Callable[[Any, Request], Awaitable[Response]]


def endpoint(service: Any, name: str, handler: Handler, *, work: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: error objects in the path's style, metrics, and (``work``) the drain gate and the
    in-flight count."""

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
        except Exception:  # a bug, not bad input: log it, never send a traceback
            logger.exception("unexpected error on %s", name)
            error = ApiError(500, "internal server error (the server log has the details)", kind="internal")
        finally:
            if tracked:
                service.in_flight -= 1
                service.metrics.in_flight.dec()
        kind = None
        if error is not None:
            response, kind = error.response(style_of(request.url.path)), error.kind
        service.metrics.answered(name, response.status_code, time.perf_counter() - began, kind)
        return response

    return run


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client closes its connection (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
