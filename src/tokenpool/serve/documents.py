"""tokenpool's own protocol for whole documents: ``POST /embed_documents`` takes documents and a chunk spec
and answers one vector per chunk with its character span (late or naive chunking, through windows)."""

from __future__ import annotations

from .fields import DOCUMENT_FIELDS, DOCUMENTS
from .http import ApiError, Request, Response, json_response
from .service import Service, packed

__all__ = ["embed_documents"]


async def embed_documents(service: Service, request: Request) -> Response:
    req = await service.request(request, DOCUMENTS, DOCUMENT_FIELDS)
    if req.chunks is None:
        raise ApiError(422, "'chunks' is required: 'tokens:SIZE[:OVERLAP]', 'boundaries:MAX[:OVERLAP]' or 'spans' "
                       "(with 'spans': one list of [start, end] per document)", param="chunks")  # fmt: skip
    served, prepared, job = await service.embed(request, req)
    found = job.rows
    rows = packed(served.finish(found.vectors, prepared.request), req)
    columns = (found.doc.tolist(), found.chunk.tolist(), found.start.tolist(), found.end.tolist(), rows)
    data = [{"document": doc, "chunk": chunk, "start": start, "end": end, "embedding": row,
             **({"text": req.texts[doc][start:end]} if req.return_text else {})}
            for doc, chunk, start, end, row in zip(*columns, strict=True)]  # fmt: skip
    return json_response({"object": "list", "data": data, "model": served.name,
                          "usage": {"prompt_tokens": prepared.used, "total_tokens": prepared.used,
                                    "truncated_tokens": prepared.truncated}})  # fmt: skip
