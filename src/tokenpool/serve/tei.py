"""The TEI protocol: ``POST /embed``, ``/embed_sparse`` and ``/embed_all``, ``POST /tokenize``, ``/decode`` and ``/similarity``,
``POST /`` (TEI's compatibility route), ``GET /info``, ``/health``; and ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .._version import __version__
from ..evaluation.sts import cosine_rows
from .fields import (
    TEI,
    TEI_ALL_FIELDS,
    TEI_FIELDS,
    TEI_SPARSE_FIELDS,
    TEXT_CHECKS,
    TOKENIZE_FIELDS,
    EmbedRequest,
    named_model,
    parse,
    parse_decode,
    parse_similarity,
)
from .http import ApiError, Request, Response, draining_error, json_response
from .service import Model, Prepared, Service, packed

__all__ = ["decode", "embed", "embed_all", "embed_sparse", "health", "info", "metrics", "root", "similarity", "tokenize"]


def _headers(req: EmbedRequest, prepared: Prepared) -> dict[str, str]:
    """TEI's headers (tokens embedded; characters of the inputs as sent, before any prompt) and tokenpool's
    own (the same tokens under their earlier name, and the tokens truncation cut)."""
    tokens = str(prepared.used)
    return {"x-compute-tokens": tokens, "x-compute-characters": str(sum(map(len, req.texts))),
            "x-total-tokens": tokens, "x-truncated-tokens": str(prepared.truncated)}  # fmt: skip


async def embed(service: Service, request: Request, req: EmbedRequest | None = None) -> Response:
    """TEI's /embed (``req``: the body as `root` read it)."""
    req = req or await service.request(request, TEI, TEI_FIELDS)
    served, prepared, job = await service.embed(request, req)
    return json_response(packed(served.answer(job, prepared.request), req), _headers(req, prepared))


async def embed_sparse(service: Service, request: Request, req: EmbedRequest | None = None) -> Response:
    """TEI's /embed_sparse (``req``: the body as `root` read it)."""
    req = req or await service.request(request, TEI, TEI_SPARSE_FIELDS)
    served = service.model_for(req.model, sparse=True)
    if not served.runner.is_sparse:
        raise ApiError(400, f"/embed_sparse needs a sparse (SPLADE) model; {served.name} is dense: use /embed",
                       param="inputs")  # fmt: skip
    served, prepared, job = await service.embed(request, req, served)
    out = []
    for indices, values in job.rows:  # (each row's non-zeros, finished as /embed finishes the whole row)
        finished = served.finish(values[None, :], prepared.request)[0]
        kept = np.flatnonzero(finished)
        out.append([{"index": i, "value": v} for i, v in zip(indices[kept].tolist(), finished[kept].tolist(), strict=True)])
    return json_response(out, _headers(req, prepared))


async def embed_all(service: Service, request: Request) -> Response:
    """TEI's /embed_all: per input, every token's vector (the model's last hidden states: special and prompt
    tokens included, as /tokenize lists them, unpooled and unnormalised) → ``[[[float, ...], ...], ...]``; a dense
    model's (TEI refuses SPLADE models too)."""
    req = await service.request(request, TEI, TEI_ALL_FIELDS)
    req.token_vectors = True
    served = service.model_for(req.model, sparse=False)
    if served.runner.is_sparse:
        raise ApiError(400, f"/embed_all gives a dense model's token vectors; {served.name} is a sparse (SPLADE) "
                       "model: use /embed_sparse", param="inputs")  # fmt: skip
    served, prepared, job = await service.embed(request, req, served)
    # (off the event loop: a vector per token is ~4 KB of JSON)
    return await asyncio.to_thread(json_response, job.rows, _headers(req, prepared))


def _tokens(text: str, ids: Any, spans: Any, pieces: list[str | None]) -> list[dict[str, Any]]:
    """TEI's tokens of one text (prompt included): a special token is its vocabulary entry, with no offsets;
    any other the text it covers, with its UTF-8 byte offsets in the text (TEI's offsets are the Rust
    tokenizer's, in bytes)."""
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    widths = 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)
    at = np.concatenate([[0], np.cumsum(widths)]).tolist()  # character → byte offset
    out = []
    for token, (start, stop), piece in zip(ids.tolist(), spans.tolist(), pieces, strict=True):
        if start < 0:
            out.append({"id": token, "text": piece, "special": True, "start": None, "stop": None})
        else:
            out.append({"id": token, "text": text[start:stop], "special": False, "start": at[start], "stop": at[stop]})
    return out


async def tokenize(service: Service, request: Request) -> Response:
    """TEI's /tokenize: each input's tokens (with the prompt in front, special tokens unless
    ``add_special_tokens`` is false), never truncated; one list per input, for one string too."""
    req = parse(await service.body(request), TEI, TOKENIZE_FIELDS, TEXT_CHECKS)  # (TEI's /tokenize: text only)
    rows = await service.model_for(req.model, sparse=False).tokens(req)  # (no name: /embed's model, whose tokens)
    # (off the event loop: ~60 bytes of JSON a token, and a request may hold millions of tokens)
    return await asyncio.to_thread(lambda: json_response([_tokens(*row) for row in rows]))


async def decode(service: Service, request: Request) -> Response:
    """TEI's /decode: the text of each list of ids (special tokens skipped unless ``skip_special_tokens`` is
    false); one list per text, for one flat list of ids too."""
    req = await asyncio.to_thread(parse_decode, await service.body(request))  # (each id checked: millions fit)
    return json_response(await service.model_for(req.model, sparse=False).decode(req))  # (no name: /tokenize's)


async def similarity(service: Service, request: Request, req: EmbedRequest | None = None) -> Response:
    """TEI's /similarity: the cosine of ``inputs.source_sentence`` and each of ``inputs.sentences``, from the
    vectors /embed gives them (the same checks, queue and finishing step; ``req``: the body as `root` read it)."""
    req = req or parse_similarity(await service.body(request))
    served, prepared, job = await service.embed(request, req)
    rows = served.answer(job, prepared.request)
    cosines = np.clip(cosine_rows(rows[1:], np.broadcast_to(rows[0], rows[1:].shape)), -1.0, 1.0)  # (not 1 + 2e-16)
    return json_response(cosines, _headers(req, prepared))


async def root(service: Service, request: Request) -> Response:
    """TEI's ``POST /``: `similarity` for a body whose ``inputs`` is an object (TEI's sentence-similarity task:
    huggingface_hub's ``InferenceClient.sentence_similarity`` posts there), else `embed_sparse` for a sparse
    (SPLADE) model and `embed` for a dense one, as TEI routes it by its model's kind; the model is the one the
    request names, else (none, or one not served) the first."""
    data = await service.body(request)
    if isinstance(data.get("inputs"), dict):
        return await similarity(service, request, parse_similarity(data))
    served = service.by_name.get(named_model(data, TEI) or "", service.models[0])
    if served.runner.is_sparse:
        return await embed_sparse(service, request, await service.parse(data, TEI, TEI_SPARSE_FIELDS))
    return await embed(service, request, await service.parse(data, TEI, TEI_FIELDS))


def _model_info(service: Service, served: Model) -> dict[str, Any]:
    runner, s = served.runner, service.settings
    extra = dict(runner.info)
    return {
        "model_id": served.name,
        "served_model_name": served.name,  # TEI's one name (since v1.9); all of them in served_model_names
        "model_sha": None,
        "model_dtype": extra.get("dtype"),
        "model_type": {"embedding": {"pooling": "+".join(extra.get("pooling", ())) or "unknown"}},
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
    """200 while every model worker runs, answering infinity's ``{"unix": time}`` (its client parses the body as a
    JSON object; TEI's is empty, and its clients read the status only), else 503."""
    if service.draining:
        raise draining_error()
    if not all(served.batcher.alive for served in service.models):
        raise ApiError(503, "a model worker is not running", kind="internal")
    return json_response({"unix": time.time()})


async def metrics(service: Service, request: Request) -> Response:
    for served in service.models:  # the queues as they are now
        served.metrics.queue(served.batcher.queued, served.batcher.queued_requests)
    service.metrics.refresh()
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
