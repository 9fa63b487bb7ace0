"""The ASGI application: the routes of the OpenAI (`tokenpool.serve.openai`) and TEI (`tokenpool.serve.tei`)
protocols in front of a `tokenpool.serve.service.Service`, with the API key gate and JSON 404/405s. Plain ASGI:
a request goes from uvicorn to its endpoint through one call (`App`), no middleware stack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from starlette.datastructures import URL
from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from . import documents, openai, tei
from .http import (
    ApiError,
    ApiKeyGate,
    Handler,
    Request,
    Response,
    endpoint,
    route_path,
    style_of,
    without_trailing_slash,
)
from .runner import Runner
from .service import Service
from .settings import ServeSettings

logger = logging.getLogger("tokenpool.serve")
WORKER_STOP_SECONDS = 0.5  # the least a drain still gives workers to stop (idle ones take a moment)

__all__ = ["KEYED", "PUBLIC", "ROUTES", "WORK", "App", "Route", "ServeSettings", "Service", "create_app"]

# path, metric name, handler, method, and what a request passes before its handler (the one place that says it):
# WORK (the API key, then the drain gate: it queues model work), KEYED (the API key) or PUBLIC (nothing: a health
# check, which a load balancer or orchestrator calls without credentials)
WORK, KEYED, PUBLIC = "work", "keyed", "public"
ROUTES: tuple[tuple[str, str, Handler, str, str], ...] = (
    ("/v1/embeddings", "openai_embeddings", openai.embeddings, "POST", WORK),
    ("/v1/models", "openai_models", openai.models, "GET", KEYED),
    ("/v1/models/{model:path}", "openai_model", openai.model, "GET", KEYED),
    ("/embeddings", "openai_embeddings", openai.embeddings, "POST", WORK),  # infinity's paths (no /v1) ...
    ("/models", "openai_models", openai.models, "GET", KEYED),  # ... for clients whose base URL has none
    ("/models/{model:path}", "openai_model", openai.model, "GET", KEYED),
    ("/embed", "embed", tei.embed, "POST", WORK),
    ("/embed_sparse", "embed_sparse", tei.embed_sparse, "POST", WORK),
    ("/embed_all", "embed_all", tei.embed_all, "POST", WORK),
    ("/embed_documents", "embed_documents", documents.embed_documents, "POST", WORK),
    ("/similarity", "similarity", tei.similarity, "POST", WORK),
    ("/tokenize", "tokenize", tei.tokenize, "POST", WORK),  # (tokenizer work: refused while draining, and
    ("/decode", "decode", tei.decode, "POST", WORK),  # counted in flight so a drain waits for it)
    ("/", "root", tei.root, "POST", WORK),  # TEI's compatibility route: /embed (/embed_sparse: SPLADE; /similarity)
    ("/", "health", tei.health, "GET", PUBLIC),  # TEI's (Inference API) health route
    ("/info", "info", tei.info, "GET", KEYED),
    ("/health", "health", tei.health, "GET", PUBLIC),
    ("/ping", "health", tei.health, "GET", PUBLIC),  # TEI's (AWS SageMaker) health route
    ("/metrics", "metrics", tei.metrics, "GET", KEYED),
)


@dataclass
class Route:
    """One route: a Starlette path, its method (GET takes HEAD too) and endpoint; public: no API key asked."""

    path: str
    method: str
    endpoint: Callable[[Request], Awaitable[Response]]
    public: bool = False
    methods: tuple[str, ...] = field(init=False)
    regex: re.Pattern[str] = field(init=False)
    convertors: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.methods = (self.method, "HEAD") if self.method == "GET" else (self.method,)
        self.regex, _, self.convertors = compile_path(self.path)

    def params(self, path: str) -> dict[str, Any] | None:
        """The path parameters when ``path`` is this route's, else None."""
        if (match := self.regex.match(path)) is None:
            return None
        return {name: self.convertors[name].convert(value) for name, value in match.groupdict().items()}


class App:
    """The ASGI app: its lifespan runs the model workers; a request (trailing slashes dropped) passes the API
    key gate unless its route is public, then goes to its route, else gets Starlette's 405 or 404 as JSON."""

    def __init__(self, service: Service, routes: list[Route]) -> None:
        self.service = service
        self.state = SimpleNamespace(service=service)  # as a Starlette app's ``state``
        settings = service.settings
        self.gate = None if settings.api_key is None else ApiKeyGate(settings.api_key, service.metrics)
        self.routes = routes
        # the routes matching each literal path, found once by the same scan (`_respond` scans for other paths)
        self._literal = list(dict.fromkeys(route.path for route in routes if "{" not in route.path))
        self._by_path = {path: self._scan(path) for path in self._literal}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await (await self._respond(without_trailing_slash(scope), receive)).send(send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":  # no websocket route: closed (Starlette's router closes it so)
            await send({"type": "websocket.close", "code": 1000, "reason": ""})

    def _scan(self, path: str) -> list[tuple[Route, dict[str, Any]]]:
        return [(route, params) for route in self.routes if (params := route.params(path)) is not None]

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        """The answer of the route for the path and method once the API key gate passes it, else 404/405."""
        path, method = route_path(scope), scope["method"]
        matches = self._by_path.get(path) or self._scan(path)
        taken = next(((route, params) for route, params in matches if method in route.methods), None)
        named = taken[0] if taken is not None else matches[0][0] if matches else None  # (a 405 names the first)
        if self.gate is not None and not (named is not None and named.public):
            refusal = self.gate.refusal(scope)
            if refusal is not None:
                return refusal
        if taken is None:
            return self._unrouted(scope, named)
        return await taken[0].endpoint(Request(scope, receive, taken[1]))

    def _unrouted(self, scope: Scope, route: Route | None) -> Response:
        """404 (no route takes the path), or 405 naming the methods of the first route that does."""
        path, headers = URL(scope=scope).path, None
        if route is not None:
            status, kind, message = 405, "invalid_request", f"{scope['method']} is not allowed on {path}"
            headers = {"Allow": ", ".join(route.methods)}
        else:
            status, kind, message = 404, "not_found", f"no endpoint {path}; see {', '.join(self._literal)}"
        self.service.metrics.answered("other", status, 0.0, kind)
        return ApiError(status, message, kind=kind, headers=headers).response(style_of(route_path(scope)))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """ASGI lifespan: the workers start before the first request and finish what they hold at shutdown."""
        started = False
        await receive()
        try:
            async with self._workers():
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()
        except BaseException:
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    @contextlib.asynccontextmanager
    async def _workers(self) -> AsyncIterator[None]:
        service = self.service
        try:  # (a worker that fails to start still has the others closed)
            for model in service.models:
                model.batcher.start()
            yield
        finally:
            service.begin_drain()
            for model in service.models:  # what is left of the drain's one timeout (a moment for idle workers)
                timeout = max(service.drain_left(), WORKER_STOP_SECONDS)
                if not await asyncio.to_thread(model.batcher.close, timeout):
                    logger.error("the worker of %s did not finish within %.1f s", model.name, timeout)


def create_app(runners: Runner | Mapping[str, Runner], settings: ServeSettings | None = None) -> App:
    """The ASGI app serving one runner, or several keyed by model name. ``app.service`` (also
    ``app.state.service``) is its `Service` (models, batchers, metrics, drain)."""
    service = Service(runners, settings or ServeSettings())
    routes = [Route(path, method, endpoint(service, name, handler, work=passes == WORK), public=passes == PUBLIC)
              for path, name, handler, method, passes in ROUTES]  # fmt: skip
    return App(service, routes)
