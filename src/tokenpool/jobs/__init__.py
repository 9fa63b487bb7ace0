"""Corpus jobs (``tokenpool embed``): one resumable skeleton (`tokenpool.jobs.skeleton`) configured per output
kind — pooled vectors, codes and sparse rows (`.pooled`), chunk rows (`.chunks`), token rows (`.tokens`) —
with one row schema per kind (`.rows`).

    job = EmbedJob("examples/corpus.txt", "corpus.npy", EncodeRequest(precision="int8"), chunk_size=16)
    formats = check_job(job)                    # bad input fails here, before the model loads
    result = embed_corpus(Encoder(), job, formats=formats)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..core.quantize import DEFAULT_CALIBRATION_SIZE
from ..model.options import EncoderOptions
from ..model.request import EncodeRequest
from . import chunks, pooled, tokens
from .skeleton import EmbedJob, EmbedResult, JobFormats, Kind, check_common, check_work, lines_file_for, run

__all__ = ["EmbedJob", "EmbedResult", "EncodeRequest", "JobFormats", "check_job", "embed_corpus", "lines_file_for"]

# job.kind → (its model-free check, its configuration of the skeleton)
KINDS: dict[str, tuple[Callable[[EmbedJob, JobFormats], None], type[Kind]]] = {
    "vectors": (pooled.check, pooled.Pooled),
    "chunks": (chunks.check, chunks.Chunks),
    "tokens": (tokens.check, tokens.Tokens),
}


def check_job(job: EmbedJob, options: EncoderOptions | None = None) -> JobFormats:
    """Check everything about ``job`` that needs no model, before one loads — its request (with the encoder
    ``options`` when given), input and output — and put its request in canonical form; raise if it cannot run.
    `embed_corpus` takes the result as ``formats=`` so that it does not check again."""
    request = job.request
    if request.calibration is None and request.calibration_size is None:  # int8/uint8: calibrate on a sample
        request = replace(request, calibration_size=DEFAULT_CALIBRATION_SIZE)
    job.request = request.check(options)
    formats = check_common(job)
    KINDS[job.kind][0](job, formats)
    check_work(job)  # (last: a partial run, a lock, an unwritable folder named once nothing else is wrong)
    return formats


def embed_corpus(
    encoder: Any, job: EmbedJob, log: Callable[[str], None] | None = None, *, formats: JobFormats | None = None
) -> EmbedResult:
    """Embed every record of ``job.input`` with ``encoder`` into ``job.output`` (the rows of ``job.kind``)."""
    log = log or (lambda message: print(f"tokenpool: {message}", file=sys.stderr))
    formats = formats if formats is not None else check_job(job)
    job = replace(job, request=job.request.check_encoder(encoder))  # the calibration comes back loaded
    kind = KINDS[job.kind][1](encoder, job, formats.output)
    return run(encoder, job, formats, kind, log)
