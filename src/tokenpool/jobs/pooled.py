"""``tokenpool embed``: one pooled vector per record — float32, the codes of a compact ``--precision`` (the
int8/uint8 calibration fixed before the first chunk, in the manifest, then ``OUT.calibration.json``) or a
SPLADE model's sparse rows; ``--skip-empty`` writes the kept line numbers to ``OUT.lines.txt``.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import sys
from collections.abc import Iterator, Mapping
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..core.quantize import (
    CALIBRATED_PRECISIONS,
    Calibration,
    code_dtype,
    code_width,
    quantize,
)
from ..errors import CorpusError
from ..io.readers import check_readable, where
from ..io.rows import Parts
from ..io.storage import CALIBRATION_SUFFIX, calibration_file_for, rows_metadata
from ..io.workdir import WorkDir, write_atomic
from ..model.folders import display_name
from ..model.outputs import encode_sparse_rows, sparse_tokens
from ..model.request import EncodeRequest
from .rows import sparse_rows, vector_rows
from .skeleton import (
    SAMPLE_KEY,
    EmbedJob,
    Item,
    JobFormats,
    Kind,
    check_replaceable,
    lines_file_for,
    named_lines,
    sample_entry,
    side_files_of,
)


def check(job: EmbedJob, formats: JobFormats) -> None:
    """The files a pooled job reads or writes besides its input and output: a --calibration file to read, the
    calibration sidecar and --skip-empty line numbers it writes (not the input, nor a file tokenpool did not
    write; a sidecar that is the --calibration given is read and kept, in any layout), and .npz holding numbers
    only."""
    calibration, sidecar = job.request.calibration, calibration_file_for(job.output)
    if isinstance(calibration, (str, os.PathLike)):
        check_readable(str(calibration))
    given_sidecar = is_given_file(calibration, sidecar)  # read, then kept (`Pooled.side_files`)
    writes = job.request.precision in CALIBRATED_PRECISIONS or calibration is not None  # (passed along: written)
    sides = side_files_of(job.output)
    if writes and not given_sidecar:  # (`check_common`: not the input)
        check_replaceable(sidecar, *sides[sidecar])
    if job.skip_empty:
        check_replaceable(lines_file_for(job.output), *sides[lines_file_for(job.output)])
    if formats.output == "npz" and job.request.decoded_tokens:
        raise CorpusError("--tokens needs a .parquet or .jsonl output (a scipy .npz holds numbers only)")


class Pooled(Kind):
    """Pooled rows: `vector_rows` (float32 or codes) or `sparse_rows` (a SPLADE model without --dense)."""

    lines_file = True

    def __init__(self, encoder: Any, job: EmbedJob, out_fmt: str) -> None:
        super().__init__(encoder, job, out_fmt)
        self.request = job.request  # checked against the encoder: the calibration is loaded
        self.precision, self.given = self.request.precision, self.request.calibration
        self.calibration = self.given
        # the output's sidecar holds the calibration given (it may be the --calibration file itself): kept as is
        self.given_beside = self.given is not None and holds(calibration_file_for(job.output), self.given)
        self.sparse = self.request.writes_sparse(encoder)
        self.width = int(encoder.dimension)
        name = display_name(encoder)
        if self.sparse and out_fmt == "npy":
            raise CorpusError(
                f"{where(job.output)}: {name} is a sparse (SPLADE) model and writes sparse rows; name the output "
                f".npz, .parquet or .jsonl (or pass --dense for an N × V float32 .npy)"
            )
        if not self.sparse and out_fmt == "npz":
            raise CorpusError(
                f"{where(job.output)}: .npz holds sparse rows of SPLADE models; name a dense output .npy, .parquet "
                f"or .jsonl"
            )
        self.schema = (
            sparse_rows(self.width, partial(sparse_tokens, encoder) if self.request.decoded_tokens else None)
            if self.sparse
            else vector_rows(code_width(self.precision, self.width), code_dtype(self.precision).str)
        )  # fmt: skip

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        request = self.request
        if self.sparse:
            out.update(output="sparse", top_k=request.top_k, threshold=request.threshold, tokens=request.decoded_tokens)
        if self.precision != "float32":
            out["precision"] = self.precision
        if self.precision in CALIBRATED_PRECISIONS:
            out["calibration"] = "file" if self.given else f"first {request.calibration_size} records"
        return out

    def manifest_fields(self) -> dict[str, Any]:
        return {"calibration": self.given.to_dict() if self.given else None}

    def resumed(self, manifest: dict[str, Any], folder: Path) -> None:
        stored = manifest.get("calibration")
        if stored is None:
            return
        try:
            calibration = Calibration.from_dict(stored, where(folder / "manifest.json"))
        except ValueError as err:
            raise CorpusError(f"{err}; delete {where(folder)} to start over") from None
        if self.given is not None and calibration != self.given:
            flag = self.request.spell("calibration", valued=False)
            raise CorpusError(
                f"refusing to resume: the {flag} given differs from the calibration the partial run used (kept in "
                f"{where(folder / 'manifest.json')}); rerun with {flag} giving that calibration, or delete "
                f"{where(folder)} to start over"
            )
        self.calibration = calibration

    def prepare(self, items: Iterator[Item], manifest: dict[str, Any]) -> Iterator[Item]:
        """int8/uint8 without a stored calibration: calibrate on the first records (read before any chunk is
        written, then put back in front of the stream)."""
        if self.precision not in CALIBRATED_PRECISIONS or manifest.get("calibration") is not None:
            return items
        head = list(itertools.islice(items, min(self.request.calibration_size, sys.maxsize)))  # (islice: <= maxsize)
        kept = [item for item in head if item[1].strip() or not self.job.skip_empty]
        with named_lines(self.job, kept):
            self.calibration = calibrate(self.encoder, self.request, [item[1] for item in kept], where(self.job.input))
        manifest["calibration"] = self.calibration.to_dict()
        whole = len(head) < self.request.calibration_size  # the input ended first (a checked request: an int)
        manifest[SAMPLE_KEY] = sample_entry(head, "calibration", whole)  # a resume checks it (`check_sample`)
        return itertools.chain(head, items)

    def encode(self, kept: list[tuple[int, Item]]) -> Parts:
        texts = [item[1] for _, item in kept]
        parts: Parts = {
            "doc": np.array([i for i, _ in kept], dtype=np.int64),
            "line": np.array([item[0] for _, item in kept], dtype=np.int64),
        }
        if self.sparse:
            rows = encode_sparse_rows(self.encoder, texts, self.request)
            return {**parts, "nnz": np.diff(rows.indptr), "indices": rows.indices, "values": rows.values}
        vectors = request_vectors(self.encoder, self.request, texts)
        if self.precision != "float32":
            vectors = quantize(vectors, self.precision, self.calibration)  # a pure function per row
        return {**parts, "embedding": vectors}

    def metadata(self, manifest: Mapping[str, Any]) -> dict[bytes, bytes] | None:
        calibration = None if self.sparse else self._stored(manifest)
        return rows_metadata(self.precision, self.width, sparse=self.sparse, calibration=calibration)

    def _stored(self, manifest: Mapping[str, Any]) -> Calibration | None:
        if self.precision in CALIBRATED_PRECISIONS and self.calibration is None:
            self.calibration = Calibration.from_dict(manifest["calibration"])
        return self.calibration

    def side_files(self, work: WorkDir, manifest: Mapping[str, Any], output: Path) -> list[tuple[Path, Path]]:
        """The calibration sidecar, when the rows have one; one that already holds it (the --calibration given
        may be that file, laid out or annotated by hand) is kept as it is. One that held the calibration given
        when the job started and holds another now is the user's: refused, untouched."""
        calibration = self._stored(manifest)
        if calibration is None:
            return []
        self.calibration_file = final = calibration_file_for(output)
        if holds(final, calibration):
            return [(final, final)]
        if self.given_beside:
            flag = self.request.spell("calibration", valued=False)
            raise CorpusError(
                f"{where(final)}: changed while the job ran; it held the {flag} the rows are quantized with (kept "
                f"in {where(work.path / 'manifest.json')}) and is left as it is; put that calibration back and "
                f"rerun with --resume, or delete {where(work.path)} to start over"
            )
        written = work.path / ("output" + CALIBRATION_SUFFIX)  # (a name the work folder owns, `.tmp` too)
        write_atomic(written, calibration.file_text().encode())
        return [(written, final)]


def request_vectors(encoder: Any, request: EncodeRequest, texts: list[str]) -> np.ndarray:
    """Float32 ``len(texts) × dimension``: the encoder's own pooling, one forward pass per batch of ``request``'s
    batch size, token budget, prompt and long-document handling (`Encoder.iter_vector_batches`)."""
    out = np.zeros((len(texts), int(encoder.dimension)), dtype=np.float32)
    filled = np.zeros(len(texts), dtype=bool)
    batches = encoder.iter_vector_batches(
        texts, batch_size=request.batch_size, prompt=request.prompt, prompt_name=request.prompt_name,
        max_batch_tokens=request.max_batch_tokens, long_documents=request.long_documents,
    )  # fmt: skip
    for indices, vectors in batches if texts else ():
        out[indices], filled[indices] = vectors, True
    if not filled.all():
        raise RuntimeError(f"the encoder returned no vector for {int((~filled).sum())} of {len(texts)} texts")
    return out


def calibrate(encoder: Any, request: EncodeRequest, texts: list[str], source: str) -> Calibration:
    """The calibration of ``texts`` (the first of the input ``source``: a file or URI) from their float32 vectors
    (`request_vectors`), as every job makes it; a ValueError it meets is a `CorpusError` naming the sample."""
    name = posixpath.basename(source.rstrip("/"))  # (a URI's too: s3://bucket/dir/)
    try:
        vectors = request_vectors(encoder, request, texts)
        return Calibration.for_encoder(encoder, vectors, source=f"first {len(texts)} texts of {name}",
                                       prompt=request.prompt, prompt_name=request.prompt_name)  # fmt: skip
    except ValueError as err:
        raise calibration_failed(source, request, len(texts), err) from None


def calibration_failed(source: str, request: EncodeRequest, count: int, err: Exception) -> CorpusError:
    """The error of a calibration on the first ``count`` texts of ``source`` that ``err`` stopped (any job's)."""
    return CorpusError(f"{source}: cannot calibrate {request.precision} on its first {count} text(s) "
                       f"({request.spell('calibration_size')}): {err}")


def is_given_file(calibration: Any, sidecar: Path) -> bool:
    """Whether the calibration given (a file's path; a `Calibration` is none) is the file ``sidecar`` itself, not
    a symlink to it: a file the job reads and keeps as it is, in any layout, and never replaces."""
    if not isinstance(calibration, (str, os.PathLike)):
        return False
    with suppress(OSError):
        return not sidecar.is_symlink() and os.path.samefile(calibration, sidecar)
    return False


def holds(path: Path, calibration: Calibration) -> bool:
    """Whether ``path`` is a regular file (not a symlink) holding ``calibration``, in any layout."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        return Calibration.load(path) == calibration
    except (OSError, ValueError):
        return False
