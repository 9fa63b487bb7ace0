"""The TEI protocol: ``POST /embed`` and ``/embed_sparse``, ``POST /`` (TEI's compatibility route),
``GET /info``, ``/health``; and ``/metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .._version import __version__
from ..core.pooling import finish_vectors
from .fields import TEI, TEI_FIELDS, TEI_SPARSE_FIELDS, EmbedRequest, named_model, parse
from .http import ApiError, Request, Response, draining_error, json_response
from .service import Model, Prepared, Service, packed

__all__ = ["embed", "embed_sparse", "health", "info", "metrics", "root"]


def _headers(req: EmbedRequest, prepared: Prepared) -> dict[str, str]:
    """TEI's headers (tokens embedded; characters of the inputs as sent, before any prompt) and tokenpool's
    own (the same tokens under their earlier name, and the tokens truncation cut)."""
    tokens = str(prepared.used)
    return {"x-compute-tokens": tokens, "x-compute-characters": str(sum(map(len, req.texts))),
            "x-total-tokens": tokens, "x-truncated-tokens": str(prepared.truncated)}  # fmt: skip


async def embed(service: Service, request: Request) -> Response:
    return await _dense(service, request, await service.request(request, TEI, TEI_FIELDS))


async def embed_sparse(service: Service, request: Request) -> Response:
    return await _sparse(service, request, await service.request(request, TEI, TEI_SPARSE_FIELDS))


async def _dense(service: Service, request: Request, req: EmbedRequest) -> Response:
    served = service.model_for(req.model, sparse=False)
    prepared, job = await service.embed(request, req, served)
    return json_response(packed(served.answer(job, prepared.request), req), _headers(req, prepared))


async def _sparse(service: Service, request: Request, req: EmbedRequest) -> Response:
    served = service.model_for(req.model, sparse=True)
    if not served.runner.is_sparse:
        raise ApiError(400, f"/embed_sparse needs a sparse (SPLADE) model; {served.name} is dense: use /embed",
                       param="inputs")  # fmt: skip
    prepared, job = await service.embed(request, req, served)
    out = []
    for indices, values in job.rows:
        if served.runner.normalize:
            values = finish_vectors(values[None, :], normalize=True)[0]
        out.append([{"index": i, "value": v} for i, v in zip(indices.tolist(), values.tolist(), strict=True)])
    return json_response(out, _headers(req, prepared))


async def root(service: Service, request: Request) -> Response:
    """TEI's ``POST /``: `embed_sparse` for a sparse (SPLADE) model, else `embed`, as TEI routes it by its
    model's kind; the model is the one the request names, else (none, or one not served) the first."""
    data = await service.body(request)
    served = service.by_name.get(named_model(data, TEI) or "", service.models[0])
    if served.runner.is_sparse:
        return await _sparse(service, request, parse(data, TEI, TEI_SPARSE_FIELDS))
    return await _dense(service, request, parse(data, TEI, TEI_FIELDS))


def _model_info(service: Service, served: Model) -> dict[str, Any]:
    runner, s = served.runner, service.settings
    extra = dict(runner.info)
    pooling = "+".join(extra.get("pooling", ())) or "unknown"
    return {
        "model_id": served.name,
        "served_model_name": served.name,  # TEI's one name (since v1.9); all of them in served_model_names
        "model_sha": None,
        "model_dtype": extra.get("dtype"),
        "model_type": {"embedding": {"pooling": pooling}},
        "max_concurrent_requests": s.max_queue,
        "max_input_length": runner.max_length,
        "max_batch_tokens": s.max_batch_tokens,
        "max_batch_requests": s.max_batch_requests,
        "max_client_batch_size": s.max_inputs,
        "auto_truncate": s.auto_truncate,
        "tokenization_workers": 1,
        "version": __version__,
        "sha": None,
        "docker_label": None,
        "server": "tokenpool",
        "served_model_names": list(served.names),
        "dimension": runner.dimension,
        "normalize": runner.normalize,
        "sparse": runner.is_sparse,
        "prompts": dict(runner.prompts),
        "default_prompt": runner.default_prompt,
        "calibrated": runner.calibration is not None,
        "workers": served.batcher.workers,  # forward passes run at once (`--workers`)
        **{key: value for key, value in extra.items() if key not in ("pooling", "dtype")},
    }


async def info(service: Service, request: Request) -> Response:
    """TEI's /info for the first model; ``models`` lists every served model's."""
    models = [_model_info(service, served) for served in service.models]
    return json_response({**models[0], "models": models})


async def health(service: Service, request: Request) -> Response:
    if service.draining:
        raise draining_error()
    if not all(served.batcher.alive for served in service.models):
        raise ApiError(503, "a model worker is not running", kind="internal")
    return Response(b"", 200)


async def metrics(service: Service, request: Request) -> Response:
    for served in service.models:  # the queues as they are now
        served.metrics.queue(served.batcher.queued, served.batcher.queued_requests)
    service.metrics.refresh()
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
