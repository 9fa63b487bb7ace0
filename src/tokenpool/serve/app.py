"""The ASGI application: the routes of the OpenAI (`tokenpool.serve.openai`) and TEI (`tokenpool.serve.tei`)
protocols in front of a `tokenpool.serve.service.Service`, with the API key gate and JSON 404/405s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import documents, openai, tei
from .http import ApiError, ApiKeyMiddleware, Handler, TrailingSlashMiddleware, endpoint, style_of
from .runner import Runner
from .service import Service
from .settings import ServeSettings

logger = logging.getLogger("tokenpool.serve")

__all__ = ["ServeSettings", "Service", "create_app"]

# path, metric name, handler, method, whether it queues model work (drain gate)
ROUTES: tuple[tuple[str, str, Handler, str, bool], ...] = (
    ("/v1/embeddings", "openai_embeddings", openai.embeddings, "POST", True),
    ("/v1/models", "openai_models", openai.models, "GET", False),
    ("/v1/models/{model:path}", "openai_model", openai.model, "GET", False),
    ("/embeddings", "openai_embeddings", openai.embeddings, "POST", True),  # infinity's paths (no /v1) ...
    ("/models", "openai_models", openai.models, "GET", False),  # ... for clients whose base URL has none
    ("/embed", "embed", tei.embed, "POST", True),
    ("/embed_sparse", "embed_sparse", tei.embed_sparse, "POST", True),
    ("/embed_documents", "embed_documents", documents.embed_documents, "POST", True),
    ("/", "root", tei.root, "POST", True),  # TEI's compatibility route: /embed (/embed_sparse for SPLADE)
    ("/", "health", tei.health, "GET", False),  # TEI's (Inference API) health route, public as /health
    ("/info", "info", tei.info, "GET", False),
    ("/health", "health", tei.health, "GET", False),
    ("/metrics", "metrics", tei.metrics, "GET", False),
)


def create_app(runners: Runner | Mapping[str, Runner], settings: ServeSettings | None = None) -> Starlette:
    """The ASGI app serving one runner, or several keyed by model name. ``app.state.service`` is its
    `Service` (models, batchers, metrics, drain)."""
    settings = settings or ServeSettings()
    service = Service(runners, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        for model in service.models:
            model.batcher.start()
        try:
            yield
        finally:
            service.begin_drain()
            for model in service.models:
                if not await asyncio.to_thread(model.batcher.close, settings.drain_timeout):
                    logger.error("the worker of %s did not finish within %s s", model.name, settings.drain_timeout)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        path = request.url.path
        if status == 405:
            message = f"{request.method} is not allowed on {path}"
        elif status == 404:
            paths = dict.fromkeys(route[0] for route in ROUTES if "{" not in route[0])
            message = f"no endpoint {path}; see {', '.join(paths)}"
        else:
            message = str(getattr(exc, "detail", "")) or "error"
        kind = "not_found" if status == 404 else "invalid_request"
        service.metrics.answered("other", status, 0.0, kind)
        return ApiError(status, message, kind=kind, headers=getattr(exc, "headers", None)).response(style_of(path))

    middleware = [Middleware(TrailingSlashMiddleware)]  # first: the key gate sees the path the routes see
    if settings.api_key is not None:
        middleware.append(Middleware(ApiKeyMiddleware, api_key=settings.api_key, metrics=service.metrics))
    routes = [Route(path, endpoint(service, name, handler, work=work), methods=[method])
              for path, name, handler, method, work in ROUTES]  # fmt: skip
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})  # fmt: skip
    app.router.redirect_slashes = False  # never a redirect (from a POST least of all)
    app.state.service = service
    return app
