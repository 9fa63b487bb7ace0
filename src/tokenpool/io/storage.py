"""Writers for storage-ready outputs — sparse rows (parquet, jsonl, scipy .npz) and quantized codes — and the
calibration that travels with an int8/uint8 output (a sidecar ``OUT.calibration.json``, and parquet metadata).

Writers take iterables of chunks, so that one chunk is in memory at a time, as `tokenpool.io.corpus`'s do.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..core.quantize import Calibration
from ..core.sparse import SparseRows
from ..errors import CorpusError
from .readers import pyarrow_parquet

__all__ = [
    "CALIBRATION_SUFFIX",
    "SPARSE_FORMATS",
    "calibration_file_for",
    "read_calibration",
    "parquet_metadata",
    "write_sparse_parquet",
    "write_sparse_jsonl",
    "write_sparse_npz",
]

CALIBRATION_SUFFIX = ".calibration.json"
SPARSE_FORMATS = ("npz", "parquet", "jsonl")
META_PRECISION = b"tokenpool.precision"
META_DIMENSION = b"tokenpool.dimension"
META_CALIBRATION = b"tokenpool.calibration"
META_VOCABULARY = b"tokenpool.vocabulary_size"

SparseChunks = Iterable[tuple[np.ndarray, SparseRows]]
Decode = Callable[[np.ndarray], list[str]]


def calibration_file_for(output: str | os.PathLike[str]) -> Path:
    """Where an int8/uint8 output's calibration is written: ``<output>.calibration.json``."""
    out = Path(output)
    return out.with_name(out.name + CALIBRATION_SUFFIX)


def read_calibration(output: str | os.PathLike[str]) -> Calibration:
    """The calibration of an int8/uint8 output written by ``tokenpool embed``: its sidecar file, else (for
    parquet) the ``tokenpool.calibration`` schema metadata."""
    sidecar = calibration_file_for(output)
    if sidecar.is_file():
        return Calibration.load(sidecar)
    if Path(output).suffix.lower() in (".parquet", ".pq") and Path(output).is_file():
        pq = pyarrow_parquet("reading .parquet")
        metadata = pq.read_schema(output).metadata or {}
        if META_CALIBRATION in metadata:
            return Calibration.from_json(metadata[META_CALIBRATION], f"{output} (parquet metadata)")
    raise FileNotFoundError(f"{output}: no calibration beside it ({sidecar.name}) or in its metadata")


def parquet_metadata(
    precision: str, dimension: int, calibration: Calibration | None = None
) -> dict[bytes, bytes]:
    """Schema metadata of a dense output: precision, model dimension and (int8/uint8) the calibration."""
    metadata = {META_PRECISION: precision.encode(), META_DIMENSION: str(int(dimension)).encode()}
    if calibration is not None:
        metadata[META_CALIBRATION] = calibration.to_json().encode()
    return metadata


# ------------------------------------------------------------------------------------------ sparse writers


def write_sparse_jsonl(fh: IO[bytes], chunks: SparseChunks, decode: Decode | None = None) -> None:
    """One ``{"id": record index, "indices": [...], "values": [...]}`` per line (``"tokens"`` with ``decode``)."""
    for ids, rows in chunks:
        for j, ident in enumerate(ids.tolist()):
            indices, values = rows.row(j)
            record: dict[str, Any] = {"id": ident, "indices": indices.tolist(), "values": values.tolist()}
            if decode is not None:
                record["tokens"] = decode(indices)
            fh.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")


def write_sparse_parquet(
    path: str,
    chunks: SparseChunks,
    vocabulary_size: int,
    decode: Decode | None = None,
    metadata: dict[bytes, bytes] | None = None,
) -> None:
    """Columns ``id`` (int64), ``indices`` (list<int32>), ``values`` (list<float32>) and, with ``decode``,
    ``tokens`` (list<string>); a row group per chunk."""
    pq = pyarrow_parquet("writing .parquet")
    import pyarrow as pa

    fields = [("id", pa.int64()), ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))]
    if decode is not None:
        fields.append(("tokens", pa.list_(pa.string())))
    meta = {META_VOCABULARY: str(int(vocabulary_size)).encode(), **(metadata or {})}
    schema = pa.schema(fields, metadata=meta)
    with pq.ParquetWriter(path, schema) as writer:
        for ids, rows in chunks:
            offsets = pa.array(rows.indptr.astype(np.int32, copy=False))
            columns = {
                "id": pa.array(ids.astype(np.int64)),
                "indices": pa.ListArray.from_arrays(offsets, pa.array(rows.indices, type=pa.int32())),
                "values": pa.ListArray.from_arrays(offsets, pa.array(rows.values, type=pa.float32())),
            }
            if decode is not None:
                tokens = pa.array(decode(rows.indices), type=pa.string())
                columns["tokens"] = pa.ListArray.from_arrays(offsets, tokens)
            writer.write_table(pa.table(columns, schema=schema))


def write_sparse_npz(
    path: str, chunks: Callable[[], SparseChunks], rows: int, nnz: int, vocabulary_size: int
) -> None:
    """A ``scipy.sparse.save_npz``-compatible CSR file (float32 data, int32 indices, int64 indptr), streamed:
    ``chunks()`` is called once per array, and each chunk is read, written and dropped in turn."""
    if nnz >= 2**31:
        raise CorpusError(
            f"{path}: {nnz} non-zeros exceed the int32 indices a scipy .npz holds; use .parquet"
        )

    def member(zf: zipfile.ZipFile, name: str, dtype: str, count: int, parts: Iterable[np.ndarray]) -> None:
        with zf.open(name + ".npy", "w", force_zip64=True) as fh:
            header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (count,)}
            np.lib.format.write_array_header_1_0(fh, header)
            written = 0
            for part in parts:
                fh.write(np.ascontiguousarray(part, dtype=dtype).tobytes())
                written += part.size
            if written != count:
                raise RuntimeError(f"wrote {written} values into {name}.npy announcing {count}")

    def indptr_parts() -> Iterable[np.ndarray]:
        yield np.zeros(1, dtype=np.int64)
        offset = 0
        for _, part in chunks():
            yield part.indptr[1:] + offset
            offset += part.nnz

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        member(zf, "indices", "<i4", nnz, (part.indices for _, part in chunks()))
        member(zf, "indptr", "<i8", rows + 1, indptr_parts())
        member(zf, "data", "<f4", nnz, (part.values for _, part in chunks()))
        for name, value in (("format", np.array(b"csr")), ("shape", np.array([rows, vocabulary_size]))):
            with zf.open(name + ".npy", "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)


# ------------------------------------------------------------------------------------------ the embed job's plan


def _model_name(encoder: Any) -> str:
    path = Path(encoder.model_path)
    return "/".join(path.parts[-2:]) if len(path.parts) >= 2 else str(path)


def check_storage_options(job: Any, out_fmt: str) -> None:
    """What can be refused before a model loads: an unknown precision, --calibration with a precision that
    needs none (or an unreadable one), --calibration-size below 2, --tokens into .npz, a bad top_k/threshold."""
    from ..core.quantize import CALIBRATED_PRECISIONS, check_precision
    from ..core.sparse import check_sparse_options
    from .readers import check_readable

    precision = check_precision(job.precision)
    check_sparse_options(job.top_k, job.threshold)
    if job.calibration:
        if precision not in CALIBRATED_PRECISIONS:
            raise CorpusError(f"--calibration is for --precision int8 or uint8, not {precision}")
        check_readable(job.calibration)
    elif precision in CALIBRATED_PRECISIONS and job.calibration_size < 2:
        raise CorpusError(f"--calibration-size must be at least 2 (texts), got {job.calibration_size}")
    if job.input != "-" and Path(job.input).resolve() == calibration_file_for(job.output).resolve():
        raise CorpusError(
            f"{calibration_file_for(job.output)}: the output's calibration file would replace the input; name "
            f"another output file"
        )
    if out_fmt == "npz" and job.tokens:
        raise CorpusError("--tokens needs a .parquet or .jsonl output (a scipy .npz holds numbers only)")


class OutputPlan:
    """What `tokenpool.io.embedjob.embed_corpus` writes for one job: float32 rows, quantized codes (with the
    calibration fixed before the first chunk and kept in the manifest), or sparse rows."""

    def __init__(self, encoder: Any, job: Any, out_fmt: str) -> None:
        from ..core.quantize import CALIBRATED_PRECISIONS, check_precision
        from ..core.sparse import check_sparse_options

        self.encoder = encoder
        self.job = job
        self.out_fmt = out_fmt
        self.precision = check_precision(job.precision)
        name = _model_name(encoder)
        sparse_model = bool(getattr(encoder, "is_sparse", False))
        if job.dense and not sparse_model:
            raise CorpusError(f"--dense is for sparse (SPLADE) models; {name} is a dense model")
        self.sparse = sparse_model and not job.dense
        sparse_flags = [
            flag
            for flag, used in (
                ("--top-k", job.top_k is not None),
                ("--threshold", job.threshold),
                ("--tokens", job.tokens),
            )
            if used
        ]
        if self.sparse:
            if self.precision != "float32":
                raise CorpusError(
                    f"--precision {self.precision} is for dense models; {name} is a sparse (SPLADE) model, whose "
                    f"rows are written as indices and values"
                )
            if out_fmt == "npy":
                raise CorpusError(
                    f"{job.output}: {name} is a sparse (SPLADE) model and writes sparse rows; name the output "
                    f".npz, .parquet or .jsonl (or pass --dense for an N × V float32 .npy)"
                )
            if out_fmt == "npz" and job.tokens:
                raise CorpusError(
                    "--tokens needs a .parquet or .jsonl output (a scipy .npz holds numbers only)"
                )
            check_sparse_options(job.top_k, job.threshold)
        else:
            if out_fmt == "npz":
                raise CorpusError(
                    f"{job.output}: .npz holds sparse rows of SPLADE models; name a dense output .npy, .parquet "
                    f"or .jsonl"
                )
            if sparse_flags:
                raise CorpusError(
                    f"{', '.join(sparse_flags)} apply to sparse (SPLADE) rows; {name} writes dense vectors"
                )
        self.calibrated = self.precision in CALIBRATED_PRECISIONS
        self.given: Calibration | None = None
        if job.calibration:
            if not self.calibrated:
                raise CorpusError(f"--calibration is for --precision int8 or uint8, not {self.precision}")
            self.given = Calibration.load(job.calibration)
            self.given.check_encoder(encoder)
        elif self.calibrated and job.calibration_size < 2:
            raise CorpusError(f"--calibration-size must be at least 2 (texts), got {job.calibration_size}")
        self.calibration: Calibration | None = self.given
        self.calibration_file: Path | None = None

    @classmethod
    def for_job(cls, encoder: Any, job: Any, out_fmt: str) -> OutputPlan:
        return cls(encoder, job, out_fmt)

    # -- what a resumed run must match
    @property
    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.sparse:
            out.update(
                output="sparse",
                top_k=self.job.top_k,
                threshold=float(self.job.threshold),
                tokens=self.job.tokens,
            )
        if self.precision != "float32":
            out["precision"] = self.precision
        if self.calibrated:
            out["calibration"] = "file" if self.given else f"first {self.job.calibration_size} records"
        return out

    def manifest_fields(self) -> dict[str, Any]:
        """What the manifest records about the output: the chunks' row width and dtype (verified on resume),
        the precision, sparse rows, and the calibration (fixed before the first chunk)."""
        from ..core.quantize import code_dtype, code_width

        dimension = int(self.encoder.dimension)
        fields: dict[str, Any] = {
            "precision": self.precision,
            "sparse": self.sparse,
            "nnz_done": 0,
            "calibration": self.given.to_dict() if self.given else None,
        }
        if not self.sparse:
            fields.update(width=code_width(self.precision, dimension), code_dtype=code_dtype(self.precision).str)
        return fields

    def check_resumed(self, manifest: dict[str, Any], folder: Path) -> None:
        stored = manifest.get("calibration")
        if stored is not None:
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

    # -- while running
    def needs_calibration(self, manifest: dict[str, Any]) -> bool:
        return self.calibrated and manifest.get("calibration") is None

    def calibrate(self, encoder: Any, texts: list[str], manifest: dict[str, Any], encode: Callable) -> None:
        where = "<stdin>" if self.job.input == "-" else self.job.input
        try:
            calibration = Calibration.for_encoder(
                encoder,
                encode(texts),
                source=f"first {len(texts)} texts of {Path(where).name}",
                prompt=self.job.prompt,
                prompt_name=self.job.prompt_name,
            )
        except ValueError as err:
            raise CorpusError(
                f"{where}: cannot calibrate {self.precision} on its first {len(texts)} text(s) "
                f"(--calibration-size {self.job.calibration_size}): {err}"
            ) from None
        manifest["calibration"] = calibration.to_dict()
        self.calibration = calibration

    def quantize(self, vectors: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
        from ..core.quantize import quantize

        if self.precision == "float32":
            return vectors
        if self.calibrated and self.calibration is None:
            self.calibration = Calibration.from_dict(manifest["calibration"])
        return quantize(vectors, self.precision, self.calibration)

    def encode_sparse(self, encoder: Any, texts: list[str], job: Any, bar: Any) -> SparseRows:
        from ..core.sparse import collect_rows
        from .embedjob import vector_batches

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for indices, vectors in vector_batches(
                encoder, texts, batch_size=job.batch_size, prompt=job.prompt, prompt_name=job.prompt_name
            ):
                yield indices, vectors  # one dense b × V batch at a time
                if bar is not None:
                    bar.update(len(indices))

        return collect_rows(
            batches() if texts else (),
            len(texts),
            int(encoder.dimension),
            top_k=job.top_k,
            threshold=job.threshold,
        )

    # -- at the end
    def assemble(
        self, work: Any, manifest: dict[str, Any], output: Path, lines_file: Path | None, assemble: Callable
    ) -> None:
        """Write the output through ``assemble`` (embedjob's rename-into-place), then its calibration sidecar."""
        write = None
        if self.sparse:
            write = self._sparse_writer(work, manifest)
        elif self.precision != "float32":
            write = self._code_writer(work, manifest)
        assemble(work, manifest, self.out_fmt, output, lines_file, write)
        sidecar = calibration_file_for(output)
        if self.calibrated:
            if self.calibration is None:
                self.calibration = Calibration.from_dict(manifest["calibration"])
            tmp = self.calibration.save(work.path / ("output" + CALIBRATION_SUFFIX))
            os.replace(tmp, sidecar)
            self.calibration_file = sidecar
        elif not sidecar.is_symlink() and _is_calibration_file(sidecar):
            sidecar.unlink()  # left by an earlier int8 run (tokenpool's format); it would not describe this output

    def _sparse_writer(self, work: Any, manifest: dict[str, Any]) -> Callable[[Path, bool], None]:
        vocabulary = int(manifest["dimension"])
        tokenizer = getattr(self.encoder, "tokenizer", None)
        decode: Decode | None = None
        if self.job.tokens:

            def decode(indices: np.ndarray) -> list[str]:
                return [str(t) for t in tokenizer.convert_ids_to_tokens(indices.tolist())]

        def write(tmp: Path, kept: bool) -> None:
            def chunks() -> SparseChunks:
                for ids, _, rows in work.iter_chunks(manifest, kept):  # verified, one at a time
                    yield ids, rows

            rows, nnz = int(manifest["rows_done"]), int(manifest["nnz_done"])
            if self.out_fmt == "npz":
                write_sparse_npz(str(tmp), chunks, rows, nnz, vocabulary)
            elif self.out_fmt == "parquet":
                write_sparse_parquet(str(tmp), chunks(), vocabulary, decode)
            else:
                with open(tmp, "wb") as fh:
                    write_sparse_jsonl(fh, chunks(), decode)
                    fh.flush()
                    os.fsync(fh.fileno())
            check_sparse_assembled(tmp, self.out_fmt, rows, nnz, vocabulary)

        return write

    def _code_writer(self, work: Any, manifest: dict[str, Any]) -> Callable[[Path, bool], None]:
        import hashlib

        from ..core.quantize import code_dtype, code_width
        from .embedjob import check_assembled
        from .writers import write_jsonl, write_npy, write_parquet

        dimension = int(manifest["dimension"])
        width = code_width(self.precision, dimension)
        dtype = code_dtype(self.precision)

        def write(tmp: Path, kept: bool) -> None:
            digest = hashlib.sha256()

            def stream() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                for ids, _, codes in work.iter_chunks(manifest, kept):  # verified, one at a time
                    digest.update(np.ascontiguousarray(codes).tobytes())
                    yield ids, codes

            if self.out_fmt == "parquet":
                if self.calibrated and self.calibration is None:
                    self.calibration = Calibration.from_dict(manifest["calibration"])
                metadata = parquet_metadata(self.precision, dimension, self.calibration)
                write_parquet(str(tmp), stream(), width, dtype, metadata)
            else:
                with open(tmp, "wb") as fh:
                    if self.out_fmt == "npy":
                        write_npy(fh, stream(), manifest["rows_done"], width, dtype)
                    else:
                        write_jsonl(fh, stream())
                    fh.flush()
                    os.fsync(fh.fileno())
            check_assembled(tmp, self.out_fmt, int(manifest["rows_done"]), width, digest.hexdigest(), dtype.str)

        return write


def check_sparse_assembled(path: Path, out_fmt: str, rows: int, nnz: int, vocabulary: int) -> None:
    """Read back an assembled sparse output before it gets its final name: ``rows`` rows, ``nnz`` non-zeros
    over ``vocabulary`` columns. A mismatch is a RuntimeError: nothing is renamed."""
    if out_fmt == "npz":
        with np.load(path, allow_pickle=False) as data:
            found = (tuple(int(v) for v in data["shape"]), int(data["indices"].size), int(data["indptr"][-1]))
        ok = found == ((rows, vocabulary), nnz, nnz)
    elif out_fmt == "parquet":
        pq = pyarrow_parquet("reading .parquet")
        meta = pq.ParquetFile(path).metadata
        found = (int(meta.num_rows),)
        ok = found == (rows,)
    else:
        with open(path, "rb") as fh:
            found = (sum(1 for _ in fh),)
        ok = found == (rows,)
    if not ok:
        raise RuntimeError(f"the assembled {path.name} holds {found}, expected {rows} rows ({nnz} non-zeros)")


def _is_calibration_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b'"format": "tokenpool.calibration"' in head
