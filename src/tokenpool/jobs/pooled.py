"""``tokenpool embed``: one pooled vector per record — float32, the codes of a compact ``--precision`` (with the
int8/uint8 calibration fixed before the first chunk and kept in the manifest), or a SPLADE model's sparse rows.

The calibration travels with the output as ``OUT.calibration.json`` (and in parquet metadata); ``--skip-empty``
writes the kept records' line numbers to ``OUT.lines.txt``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.quantize import (
    CALIBRATED_PRECISIONS,
    Calibration,
    check_precision,
    code_dtype,
    code_width,
    quantize,
)
from ..core.sparse import check_sparse_options, collect_rows
from ..errors import CorpusError
from ..io.readers import check_readable, where
from ..io.rows import Parts
from ..io.storage import CALIBRATION_SUFFIX, calibration_file_for, parquet_metadata
from ..io.workdir import WorkDir
from .rows import sparse_rows, vector_rows
from .skeleton import EmbedJob, Item, JobFormats, Kind, check_side_file, remove_if


def check(job: EmbedJob, formats: JobFormats) -> None:
    """What can be refused before a model loads: an unknown precision, --calibration with a precision that
    needs none (or an unreadable one), --calibration-size below 2, --tokens into .npz, a bad top_k/threshold."""
    precision = check_precision(job.precision)
    check_sparse_options(job.top_k, job.threshold)
    if job.calibration:
        if precision not in CALIBRATED_PRECISIONS:
            raise CorpusError(f"--calibration is for --precision int8 or uint8, not {precision}")
        check_readable(job.calibration)
    elif precision in CALIBRATED_PRECISIONS and job.calibration_size < 2:
        raise CorpusError(f"--calibration-size must be at least 2 (texts), got {job.calibration_size}")
    check_side_file(job, calibration_file_for(job.output), "the output's calibration file would replace the input")
    if formats.output == "npz" and job.tokens:
        raise CorpusError("--tokens needs a .parquet or .jsonl output (a scipy .npz holds numbers only)")


class Pooled(Kind):
    """Pooled rows: `vector_rows` (float32 or codes) or `sparse_rows` (a SPLADE model without --dense)."""

    lines_file = True

    def __init__(self, encoder: Any, job: EmbedJob, out_fmt: str) -> None:
        super().__init__(encoder, job, out_fmt)
        self.precision = check_precision(job.precision)
        self.sparse = self._check_model()
        self.width = int(encoder.dimension)
        self.given = Calibration.load(job.calibration) if job.calibration else None
        if self.given is not None:
            self.given.check_encoder(encoder)
        self.calibration = self.given
        if self.sparse:
            self.schema = sparse_rows(self.width, self._decode if job.tokens else None)
        else:
            width, dtype = code_width(self.precision, self.width), code_dtype(self.precision)
            self.schema = vector_rows(width, dtype.str)

    def _check_model(self) -> bool:
        """Whether the rows are sparse, after checking the options fit the model (dense or SPLADE)."""
        job, name = self.job, _model_name(self.encoder)
        sparse_model = bool(getattr(self.encoder, "is_sparse", False))
        if job.dense and not sparse_model:
            raise CorpusError(f"--dense is for sparse (SPLADE) models; {name} is a dense model")
        if sparse_model and not job.dense:
            if self.precision != "float32":
                raise CorpusError(
                    f"--precision {self.precision} is for dense models; {name} is a sparse (SPLADE) model, whose "
                    f"rows are written as indices and values"
                )
            if self.out_fmt == "npy":
                raise CorpusError(
                    f"{job.output}: {name} is a sparse (SPLADE) model and writes sparse rows; name the output "
                    f".npz, .parquet or .jsonl (or pass --dense for an N × V float32 .npy)"
                )
            return True
        if self.out_fmt == "npz":
            raise CorpusError(
                f"{job.output}: .npz holds sparse rows of SPLADE models; name a dense output .npy, .parquet or .jsonl"
            )
        flags = [f for f, used in (("--top-k", job.top_k is not None), ("--threshold", job.threshold),
                                   ("--tokens", job.tokens)) if used]  # fmt: skip
        if flags:
            raise CorpusError(f"{', '.join(flags)} apply to sparse (SPLADE) rows; {name} writes dense vectors")
        return False

    def _decode(self, indices: np.ndarray) -> list[str]:
        return [str(t) for t in self.encoder.tokenizer.convert_ids_to_tokens(indices.tolist())]

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.sparse:
            job = self.job
            out.update(output="sparse", top_k=job.top_k, threshold=float(job.threshold), tokens=job.tokens)
        if self.precision != "float32":
            out["precision"] = self.precision
        if self.precision in CALIBRATED_PRECISIONS:
            out["calibration"] = "file" if self.given else f"first {self.job.calibration_size} records"
        return out

    def manifest_fields(self) -> dict[str, Any]:
        return {"calibration": self.given.to_dict() if self.given else None}

    def resumed(self, manifest: dict[str, Any], folder: Path) -> None:
        stored = manifest.get("calibration")
        if stored is None:
            return
        try:
            calibration = Calibration.from_dict(stored, f"{folder}/manifest.json")
        except ValueError as err:
            raise CorpusError(f"{err}; delete {folder} to start over") from None
        if self.given is not None and calibration != self.given:
            raise CorpusError(
                f"refusing to resume: --calibration {self.job.calibration} differs from the calibration the "
                f"partial run used (kept in {folder}/manifest.json); rerun without --calibration, or delete "
                f"{folder} to start over"
            )
        self.calibration = calibration

    def prepare(self, items: Iterator[Item], manifest: dict[str, Any]) -> Iterator[Item]:
        """int8/uint8 without a stored calibration: calibrate on the first records (read before any chunk is
        written, then put back in front of the stream)."""
        if self.precision not in CALIBRATED_PRECISIONS or manifest.get("calibration") is not None:
            return items
        head = list(itertools.islice(items, self.job.calibration_size))
        texts = [item[1] for item in head if item[1].strip() or not self.job.skip_empty]
        source = where(self.job.input)
        try:
            self.calibration = Calibration.for_encoder(
                self.encoder, self._vectors(texts), source=f"first {len(texts)} texts of {Path(source).name}",
                prompt=self.job.prompt, prompt_name=self.job.prompt_name,
            )  # fmt: skip
        except ValueError as err:
            raise CorpusError(
                f"{source}: cannot calibrate {self.precision} on its first {len(texts)} text(s) "
                f"(--calibration-size {self.job.calibration_size}): {err}"
            ) from None
        manifest["calibration"] = self.calibration.to_dict()
        return itertools.chain(head, items)

    def _batches(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        job = self.job
        budget = {} if job.max_batch_tokens is None else {"max_batch_tokens": job.max_batch_tokens}
        if texts:
            yield from self.encoder.iter_vector_batches(
                texts, batch_size=job.batch_size, prompt=job.prompt, prompt_name=job.prompt_name, **budget
            )

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Float32 ``len(texts) × dimension``: the encoder's own pooling, one forward pass per batch."""
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        filled = np.zeros(len(texts), dtype=bool)
        for indices, vectors in self._batches(texts):
            out[indices], filled[indices] = vectors, True
        if not filled.all():
            raise RuntimeError(f"the encoder returned no vector for {int((~filled).sum())} of {len(texts)} texts")
        return out

    def encode(self, kept: list[tuple[int, Item]]) -> Parts:
        texts = [item[1] for _, item in kept]
        parts: Parts = {
            "doc": np.array([i for i, _ in kept], dtype=np.int64),
            "line": np.array([item[0] for _, item in kept], dtype=np.int64),
        }
        if self.sparse:
            rows = collect_rows(self._batches(texts), len(texts), self.width, top_k=self.job.top_k,
                                threshold=self.job.threshold)  # fmt: skip
            return {**parts, "nnz": np.diff(rows.indptr), "indices": rows.indices, "values": rows.values}
        vectors = self._vectors(texts)
        if self.precision != "float32":
            vectors = quantize(vectors, self.precision, self.calibration)  # a pure function per row
        return {**parts, "embedding": vectors}

    def metadata(self, manifest: Mapping[str, Any]) -> dict[bytes, bytes] | None:
        if self.sparse:
            return {b"tokenpool.vocabulary_size": str(self.width).encode()}
        if self.precision == "float32":
            return None
        return parquet_metadata(self.precision, self.width, self._stored(manifest))

    def _stored(self, manifest: Mapping[str, Any]) -> Calibration | None:
        if self.precision in CALIBRATED_PRECISIONS and self.calibration is None:
            self.calibration = Calibration.from_dict(manifest["calibration"])
        return self.calibration

    def finish(self, work: WorkDir, manifest: Mapping[str, Any], output: Path) -> None:
        """The calibration sidecar; a stale one (tokenpool's format, from an earlier int8 run) goes."""
        sidecar = calibration_file_for(output)
        calibration = self._stored(manifest)
        if calibration is not None:
            os.replace(calibration.save(work.path / ("output" + CALIBRATION_SUFFIX)), sidecar)
            self.calibration_file = sidecar
        else:
            remove_if(sidecar, lambda head: b'"format": "tokenpool.calibration"' in head[:4096])


def _model_name(encoder: Any) -> str:
    path = Path(encoder.model_path)
    return "/".join(path.parts[-2:]) if len(path.parts) >= 2 else str(path)
