"""The ASGI application: OpenAI- and TEI-compatible embedding endpoints in front of a `Batcher`.

Starlette, not FastAPI: the request bodies are validated here by hand so that every error carries the exact
OpenAI or TEI error object with a message naming the offending field and value (FastAPI's automatic 422s do
neither), and the per-request cost stays low (no pydantic models on the hot path).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .._version import __version__
from ..errors import OptionError, classify, one_line
from .batcher import Batcher, Draining, Job, QueueFull
from .metrics import Metrics
from .runner import Runner

logger = logging.getLogger("tokenpool.serve")

__all__ = ["ApiError", "ServeSettings", "Service", "create_app"]

OPENAI_MAX_INPUTS = 2048
_BIG_REQUEST_CHARS = 32768  # count tokens off the event loop above this many characters


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server (the ``tokenpool serve`` options)."""

    api_key: str | None = None
    served_model_names: tuple[str, ...] = ()  # empty: the runner's name
    max_batch_tokens: int = 16384
    max_batch_requests: int = 64
    batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 4096
    max_inputs: int = OPENAI_MAX_INPUTS
    max_input_chars: int = 65536
    max_body_bytes: int = 16 * 1024 * 1024
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_batch_requests", "batch_size", "max_queue", "max_inputs",
                     "max_input_chars", "max_body_bytes"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be a positive int, got {value!r}")
        for name in ("max_wait_ms", "drain_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise OptionError(f"{name} must be a non-negative number, got {value!r}")
        if self.max_queue < self.max_inputs:
            raise OptionError(
                f"max_queue ({self.max_queue}) must be at least max_inputs ({self.max_inputs}), or a request of "
                "max_inputs inputs could never be queued"
            )
        if self.api_key is not None and not (isinstance(self.api_key, str) and self.api_key):
            raise OptionError("api_key must be a non-empty string or None")
        names = tuple(self.served_model_names)
        if not all(isinstance(n, str) and n for n in names):
            raise OptionError(f"served_model_names must be non-empty strings, got {names!r}")
        object.__setattr__(self, "served_model_names", names)


class ApiError(Exception):
    """A request that gets an error response: status, message, and the OpenAI ``param``/``code``."""

    _TEI_TYPES = {
        "invalid_request": "Validation",
        "too_large": "Validation",
        "empty": "Empty",
        "unauthorized": "Unauthorized",
        "model_not_found": "Validation",
        "not_found": "NotFound",
        "queue_full": "Overloaded",
        "draining": "Unhealthy",
        "internal": "Backend",
        "client_disconnected": "Cancelled",
    }
    _OPENAI_TYPES = {
        "queue_full": "requests",
        "draining": "server_error",
        "internal": "server_error",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self, style: str) -> Response:
        if style == "openai":
            body: Any = {
                "error": {
                    "message": self.message,
                    "type": self._OPENAI_TYPES.get(self.kind, "invalid_request_error"),
                    "param": self.param,
                    "code": self.code,
                }
            }
        else:
            body = {"error": self.message, "error_type": self._TEI_TYPES.get(self.kind, "Validation")}
        return Response(orjson.dumps(body), self.status, self.headers, media_type="application/json")


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@dataclass
class Service:
    """Everything one running server shares: the runner, its batcher and metrics, the drain state."""

    runner: Runner
    settings: ServeSettings
    metrics: Metrics = field(default_factory=Metrics)
    batcher: Batcher = field(init=False)
    draining: bool = False
    in_flight: int = 0
    started: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        s = self.settings
        self.batcher = Batcher(
            self.runner,
            max_batch_tokens=s.max_batch_tokens,
            max_batch_requests=s.max_batch_requests,
            batch_size=s.batch_size,
            max_wait=s.max_wait_ms / 1000.0,
            max_queue=s.max_queue,
            metrics=self.metrics,
        )
        self.names: tuple[str, ...] = s.served_model_names or (self.runner.name,)

    def begin_drain(self) -> None:
        """Answer new embedding requests with 503 from now on; queued and running ones still finish."""
        self.draining = True

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and self.batcher.pending == 0


# ------------------------------------------------------------------------------------------- auth


class _ApiKeyMiddleware:
    """``Authorization: Bearer KEY`` on every path but /health; compared in constant time."""

    def __init__(self, app: ASGIApp, api_key: str, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self._digest = hashlib.sha256(api_key.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        token = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    token = rest.strip()
                break
        # hash first: compare_digest then sees equal lengths, so not even the key's length leaks
        if hmac.compare_digest(hashlib.sha256(token).digest(), self._digest):
            await self.app(scope, receive, send)
            return
        message = (
            "missing API key: send 'Authorization: Bearer <key>'"
            if not token
            else "incorrect API key in the Authorization header"
        )
        style = "openai" if scope["path"].startswith("/v1/") else "tei"
        error = ApiError(
            401, message, kind="unauthorized", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
        if self.metrics is not None:
            self.metrics.answered("unauthorized", 401, 0.0, "unauthorized")
        await error.response(style)(scope, receive, send)


# ------------------------------------------------------------------------------------------- requests


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"the request body has {declared} bytes; this server takes at most {limit}", kind="too_large"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, f"the request body is over {limit} bytes, the most this server takes", kind="too_large"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise ApiError(400, "the request body is empty; send a JSON object", kind="empty")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got a JSON {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        list: "array",
        dict: "object",
    }.get(type(value), "null" if value is None else type(value).__name__)


def _check_unknown(data: Mapping[str, Any], known: Sequence[str], status: int) -> None:
    unknown = [key for key in data if key not in known]
    if unknown:
        raise ApiError(
            status,
            f"unrecognized request field(s) {', '.join(map(repr, unknown))}; this endpoint takes {', '.join(known)}",
            param=unknown[0],
        )


def _texts(value: Any, name: str, *, allow_empty_text: bool, status: int) -> list[str]:
    """A string or a non-empty list of strings → the list; ApiError naming the offending entry otherwise."""
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list):
        if not value:
            raise ApiError(
                400, f"'{name}' is an empty list; send at least one text", kind="empty", param=name
            )
        texts = value
        for index, item in enumerate(texts):
            if not isinstance(item, str):
                if isinstance(item, (int, list)) and not isinstance(item, bool):
                    raise ApiError(
                        status,
                        f"'{name}' holds token ids ({name}[{index}] is an {_type_name(item)}); this server takes "
                        "text only, so send strings (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)",
                        param=name,
                    )
                raise ApiError(
                    status,
                    f"'{name}[{index}]' must be a string, got {_type_name(item)} {item!r:.60}",
                    param=name,
                )
    elif value is None:
        raise ApiError(status, f"'{name}' is required: a string or a list of strings", param=name)
    else:
        raise ApiError(
            status, f"'{name}' must be a string or a list of strings, got {_type_name(value)}", param=name
        )
    if not allow_empty_text:
        for index, text in enumerate(texts):
            if not text:
                raise ApiError(
                    400, f"'{name}[{index}]' is an empty string; every input needs text", param=name
                )
    return texts


def _optional(
    data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], status: int, what: str
) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ApiError(status, f"'{key}' must be {what}, got {value!r}", param=key)
    if not isinstance(value, kind):
        raise ApiError(status, f"'{key}' must be {what}, got {_type_name(value)} {value!r:.60}", param=key)
    return value


class _Prepared:
    """A validated request: its texts, the prompt, token counts after truncation."""

    def __init__(self, texts: list[str], prompt: str, counts: list[int]) -> None:
        self.texts = texts
        self.prompt = prompt
        self.counts = counts


async def _prepare(
    service: Service,
    texts: list[str],
    *,
    prompt_name: Any,
    truncate: bool,
    name: str,
    status: int,
    size_status: int,
) -> _Prepared:
    """Limits, prompt and token counts; ``status`` for bad values, ``size_status`` for inputs over a limit."""
    s = service.settings
    runner = service.runner
    if len(texts) > s.max_inputs:
        raise ApiError(
            size_status,
            f"'{name}' has {len(texts)} inputs; this server takes at most {s.max_inputs} per request",
            kind="too_large",
            param=name,
        )
    for index, text in enumerate(texts):
        if len(text) > s.max_input_chars:
            raise ApiError(
                size_status,
                f"'{name}[{index}]' has {len(text)} characters; this server takes at most {s.max_input_chars}",
                kind="too_large",
                param=name,
            )
    if prompt_name is None:
        prompt = runner.default_prompt
    else:
        if not isinstance(prompt_name, str):
            raise ApiError(
                status, f"'prompt_name' must be a string, got {_type_name(prompt_name)}", param="prompt_name"
            )
        if prompt_name not in runner.prompts:
            known = ", ".join(sorted(runner.prompts)) or "none"
            raise ApiError(
                status,
                f"prompt_name {prompt_name!r} is not one of the model's prompts ({known})",
                param="prompt_name",
            )
        prompt = runner.prompts[prompt_name]
    if sum(map(len, texts)) > _BIG_REQUEST_CHARS:
        counts = await asyncio.to_thread(runner.count_tokens, texts, prompt)
    else:
        counts = runner.count_tokens(texts, prompt)
    limit = runner.max_length
    for index, count in enumerate(counts):
        if count > limit:
            if not truncate:
                raise ApiError(
                    size_status,
                    f"'{name}[{index}]' has {count} tokens but the model takes at most {limit}; "
                    'send "truncate": true to cut it',
                    kind="too_large",
                    param=name,
                )
            counts[index] = limit
    return _Prepared(texts, prompt, counts)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _embed(service: Service, request: Request, prepared: _Prepared) -> Job:
    """Queue the inputs, wait for the worker; drop them if the client goes away first."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def resolve(_job: Job) -> None:
        loop.call_soon_threadsafe(_set_done, future)

    job = Job(prepared.texts, prepared.counts, prepared.prompt, deliver=resolve)
    try:
        service.batcher.submit(job)
    except QueueFull as err:
        raise ApiError(
            429,
            f"the server is busy ({err}); retry after {err.retry_after} s",
            kind="queue_full",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(err.retry_after)},
        ) from None
    except Draining:
        raise _draining_error() from None
    gone = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait((future, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not future.done():
            dropped = service.batcher.cancel(job)
            logger.info("client went away: dropped %d of its %d queued inputs", dropped, len(job.texts))
        gone.cancel()
    if not future.done():
        raise ApiError(499, "the client closed the connection", kind="client_disconnected")
    if job.error is not None:
        if classify(job.error) == "bad_input":  # e.g. a prompt that leaves no room for the text
            raise ApiError(400, one_line(job.error))
        logger.error("the model failed on a request: %r", job.error)
        raise ApiError(
            500, "the model failed on this request (the server log has the details)", kind="internal"
        )
    return job


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _draining_error() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down and takes no new requests",
        kind="draining",
        code="service_unavailable",
        headers={"Retry-After": "5", "Connection": "close"},
    )


def _dense(service: Service, job: Job) -> np.ndarray:
    if not service.runner.is_sparse:
        return job.rows
    out = np.zeros((len(job.rows), service.runner.width), dtype=np.float32)
    for row, (indices, values) in zip(out, job.rows, strict=True):
        row[indices] = values
    return out


def _finish(rows: np.ndarray, dimensions: int, normalize: bool) -> np.ndarray:
    """Matryoshka cut, then L2 normalisation (a zero row stays zero)."""
    if dimensions < rows.shape[1]:
        rows = rows[:, :dimensions]
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))[:, None]
        rows = rows / np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(rows, dtype=np.float32)


def _dimensions(service: Service, value: Any, status: int) -> int:
    runner = service.runner
    if value is None:
        return runner.dimension
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            status,
            f"'dimensions' must be an integer, got {_type_name(value)} {value!r:.60}",
            param="dimensions",
        )
    if runner.is_sparse:
        raise ApiError(status, "'dimensions' does not apply to a sparse (SPLADE) model", param="dimensions")
    if not 1 <= value <= runner.dimension:
        raise ApiError(
            status,
            f"'dimensions' must be between 1 and {runner.dimension} (the model's dimension), got {value}",
            param="dimensions",
        )
    return value


# ------------------------------------------------------------------------------------------- endpoints

_OPENAI_FIELDS = ("input", "model", "encoding_format", "dimensions", "user", "prompt_name")


async def _openai_embeddings(service: Service, request: Request) -> Response:
    data = await _read_json(request, service.settings.max_body_bytes)
    _check_unknown(data, _OPENAI_FIELDS, 400)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(
            400, f"'model' is required: one of {', '.join(service.names)}, got {model!r:.60}", param="model"
        )
    if model not in service.names:
        raise ApiError(
            404,
            f"The model {model!r:.200} does not exist on this server; it serves {', '.join(service.names)}",
            kind="model_not_found",
            param="model",
            code="model_not_found",
        )
    encoding = data.get("encoding_format", "float")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise ApiError(
            400,
            f"'encoding_format' must be 'float' or 'base64', got {encoding!r:.60}",
            param="encoding_format",
        )
    dimensions = _dimensions(service, data.get("dimensions"), 400)
    _optional(data, "user", str, 400, "a string")
    texts = _texts(data.get("input"), "input", allow_empty_text=False, status=400)
    prepared = await _prepare(
        service,
        texts,
        prompt_name=data.get("prompt_name"),
        truncate=True,
        name="input",
        status=400,
        size_status=400,
    )
    job = await _embed(service, request, prepared)
    rows = _finish(_dense(service, job), dimensions, service.runner.normalize)
    tokens = sum(prepared.counts)
    if encoding == "base64":
        items = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(row.astype("<f4").tobytes()).decode(),
            }
            for i, row in enumerate(rows)
        ]
    else:
        items = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    return _json(
        {
            "object": "list",
            "data": items,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _model_card(service: Service, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": service.started, "owned_by": "tokenpool"}


async def _openai_models(service: Service, request: Request) -> Response:
    return _json({"object": "list", "data": [_model_card(service, name) for name in service.names]})


async def _openai_model(service: Service, request: Request) -> Response:
    name = request.path_params["model"]
    if name not in service.names:
        raise ApiError(
            404,
            f"The model {name!r:.200} does not exist on this server",
            kind="model_not_found",
            code="model_not_found",
        )
    return _json(_model_card(service, name))


_TEI_FIELDS = ("inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions")
_TEI_SPARSE_FIELDS = ("inputs", "truncate", "truncation_direction", "prompt_name")


async def _tei_request(
    service: Service, request: Request, fields: Sequence[str]
) -> tuple[dict[str, Any], _Prepared]:
    data = await _read_json(request, service.settings.max_body_bytes)
    _check_unknown(data, fields, 422)
    truncate = _optional(data, "truncate", bool, 422, "true or false")
    direction = _optional(data, "truncation_direction", str, 422, "'Right' or 'Left'")
    if direction is not None and direction.lower() != "right":
        raise ApiError(
            422,
            f"truncation_direction {direction!r:.40} is not supported: tokenpool truncates on the right (the end)",
            param="truncation_direction",
        )
    texts = _texts(data.get("inputs"), "inputs", allow_empty_text=True, status=422)
    prepared = await _prepare(
        service,
        texts,
        prompt_name=data.get("prompt_name"),
        truncate=bool(truncate),
        name="inputs",
        status=422,
        size_status=413,
    )
    return data, prepared


async def _tei_embed(service: Service, request: Request) -> Response:
    data, prepared = await _tei_request(service, request, _TEI_FIELDS)
    normalize = _optional(data, "normalize", bool, 422, "true or false")
    dimensions = _dimensions(service, data.get("dimensions"), 422)
    job = await _embed(service, request, prepared)
    normalize = service.runner.normalize if normalize is None else normalize
    return _json(_finish(_dense(service, job), dimensions, normalize))


async def _tei_embed_sparse(service: Service, request: Request) -> Response:
    if not service.runner.is_sparse:
        raise ApiError(
            400,
            "/embed_sparse needs a sparse (SPLADE) model; this server runs a dense one: use /embed",
            param="inputs",
        )
    _, prepared = await _tei_request(service, request, _TEI_SPARSE_FIELDS)
    job = await _embed(service, request, prepared)
    out = []
    for indices, values in job.rows:
        if service.runner.normalize:
            norm = float(np.sqrt(np.dot(values.astype(np.float64), values)))
            values = values / norm if norm > 0 else values
        out.append([{"index": i, "value": v} for i, v in zip(indices.tolist(), values.tolist(), strict=True)])
    return _json(out)


async def _info(service: Service, request: Request) -> Response:
    runner, s = service.runner, service.settings
    extra = dict(runner.info)
    pooling = "+".join(extra.get("pooling", ())) or "unknown"
    return _json(
        {
            "model_id": service.names[0],
            "model_sha": None,
            "model_dtype": extra.get("dtype"),
            "model_type": {"embedding": {"pooling": pooling}},
            "max_concurrent_requests": s.max_queue,
            "max_input_length": runner.max_length,
            "max_batch_tokens": s.max_batch_tokens,
            "max_batch_requests": s.max_batch_requests,
            "max_client_batch_size": s.max_inputs,
            "auto_truncate": False,
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "server": "tokenpool",
            "served_model_names": list(service.names),
            "dimension": runner.dimension,
            "normalize": runner.normalize,
            "sparse": runner.is_sparse,
            "prompts": dict(runner.prompts),
            "default_prompt": runner.default_prompt,
            **{key: value for key, value in extra.items() if key not in ("pooling", "dtype")},
        }
    )


async def _health(service: Service, request: Request) -> Response:
    if service.draining:
        raise _draining_error()
    if not service.batcher.alive:
        raise ApiError(503, "the model worker is not running", kind="internal")
    return Response(b"", 200)


async def _metrics(service: Service, request: Request) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


Handler = Callable[[Service, Request], Awaitable[Response]]


def _endpoint(service: Service, name: str, style: str, handler: Handler, *, work: bool = False) -> Any:
    """Wrap a handler: error objects in the endpoint's style, metrics, and (``work``) the drain gate."""

    async def endpoint(request: Request) -> Response:
        began = time.perf_counter()
        kind = None
        tracked = False
        try:
            if work:
                if service.draining:
                    raise _draining_error()
                service.in_flight += 1
                service.metrics.in_flight.inc()
                tracked = True
            response = await handler(service, request)
        except ApiError as err:
            kind = err.kind
            response = err.response(style)
        except Exception:  # a bug, not bad input: log it, never send a traceback
            logger.exception("unexpected error on %s", name)
            kind = "internal"
            response = ApiError(
                500, "internal server error (the server log has the details)", kind=kind
            ).response(style)
        finally:
            if tracked:
                service.in_flight -= 1
                service.metrics.in_flight.dec()
        service.metrics.answered(name, response.status_code, time.perf_counter() - began, kind)
        return response

    return endpoint


def create_app(runner: Runner, settings: ServeSettings | None = None) -> Starlette:
    """The ASGI app serving ``runner``. ``app.state.service`` is its `Service` (batcher, metrics, drain)."""
    settings = settings or ServeSettings()
    service = Service(runner, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        service.batcher.start()
        try:
            yield
        finally:
            service.begin_drain()
            if not await asyncio.to_thread(service.batcher.close, settings.drain_timeout):
                logger.error("the model worker did not finish within %s s", settings.drain_timeout)

    def route(path: str, name: str, style: str, handler: Handler, method: str, **options: Any) -> Route:
        return Route(path, _endpoint(service, name, style, handler, **options), methods=[method])

    routes = [
        route("/v1/embeddings", "openai_embeddings", "openai", _openai_embeddings, "POST", work=True),
        route("/v1/models", "openai_models", "openai", _openai_models, "GET"),
        route("/v1/models/{model:path}", "openai_model", "openai", _openai_model, "GET"),
        route("/embed", "embed", "tei", _tei_embed, "POST", work=True),
        route("/embed_sparse", "embed_sparse", "tei", _tei_embed_sparse, "POST", work=True),
        route("/info", "info", "tei", _info, "GET"),
        route("/health", "health", "tei", _health, "GET"),
        route("/metrics", "metrics", "tei", _metrics, "GET"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        path = request.url.path
        if status == 405:
            message = f"{request.method} is not allowed on {path}"
        elif status == 404:
            message = f"no endpoint {path}; see /info, /v1/embeddings, /v1/models, /embed, /embed_sparse, /health, /metrics"
        else:
            message = str(getattr(exc, "detail", "")) or "error"
        kind = "not_found" if status == 404 else "invalid_request"
        headers = getattr(exc, "headers", None)
        response = ApiError(status, message, kind=kind, headers=headers).response(
            "openai" if path.startswith("/v1/") else "tei"
        )
        service.metrics.answered("other", status, 0.0, kind)
        return response

    middleware = []
    if settings.api_key is not None:
        from starlette.middleware import Middleware

        middleware.append(Middleware(_ApiKeyMiddleware, api_key=settings.api_key, metrics=service.metrics))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.service = service
    return app
