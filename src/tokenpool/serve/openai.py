"""The OpenAI protocol: ``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from typing import Any

from .fields import OPENAI, OPENAI_FIELDS
from .http import ApiError, Request, Response, json_response, route_path
from .service import Service, packed

__all__ = ["embeddings", "model", "models"]


async def embeddings(service: Service, request: Request) -> Response:
    req = await service.request(request, OPENAI, OPENAI_FIELDS)
    if req.model is None and service.settings.strict_model_name:
        raise ApiError(400, f"'model' is required: one of {', '.join(service.names)}", param="model")
    # (no name: the first dense model, as TEI's /embed)
    served, prepared, job = await service.embed(request, req)
    rows = packed(served.answer(job, prepared.request), req)
    tokens = prepared.used
    return json_response({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
        "model": served.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_tokens": prepared.truncated},
    })  # fmt: skip


def _card(service: Service, name: str, request: Request) -> dict[str, Any]:
    """OpenAI's model card, with infinity's ``stats`` (its client reads them: a card without is a KeyError).
    Its client takes no ``owned_by`` but "infinity": on its paths (no /v1) the card names no owner, which
    OpenAI's clients read as None."""
    served = service.model_for(name)
    stats = {"queue_absolute": served.batcher.queued, "batch_size": service.settings.batch_size}
    card = {"id": name, "object": "model", "created": service.started, "stats": stats}
    return {**card, "owned_by": "tokenpool"} if route_path(request.scope).startswith("/v1/") else card


async def models(service: Service, request: Request) -> Response:
    return json_response({"object": "list", "data": [_card(service, name, request) for name in service.names]})


async def model(service: Service, request: Request) -> Response:
    """The card of a model id: a listed one (aliases included) is its own card, as OpenAI's retrieve answers;
    another resolves as `embeddings` does (`Service.model_for`), and the card names the model that answers."""
    name = request.path_params["model"]
    served = service.model_for(name)
    return json_response(_card(service, name if name in served.names else served.name, request))
