"""Output writers, one per format, in the `WRITERS` registry (.npy, .parquet, .jsonl; .npz for sparse rows).

Every writer takes an iterable of ``(ids, vectors)`` chunks, so that only one chunk is in memory at a time, and
writes a complete file at ``path`` (the embed job writes into its work folder and renames the file into place).
A new output format is one `Writer` row below; suffix detection and help texts derive from it
(`tokenpool.io.formats`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from .readers import pyarrow_parquet

if TYPE_CHECKING:
    import numpy as np

# numpy is imported inside the writers, so that the CLI can build its help from `WRITERS` without loading it
Chunks = Iterable[tuple["np.ndarray", "np.ndarray"]]


@dataclass(frozen=True)
class Writer:
    """One output format: ``write(path, chunks, rows, dim)`` writes ``rows`` × ``dim`` vectors to ``path``.

    ``chunks`` yields ``(ids, vectors)``: the input record index of each row and its float32 vector.
    """

    name: str
    suffixes: tuple[str, ...]
    write: Callable[[str | os.PathLike[str], Chunks, int, int], None]
    description: str = ""


def write_npy(fh: IO[bytes], chunks: Chunks, rows: int, dim: int, dtype: Any = "<f4") -> None:
    """A ``rows × dim`` .npy file (float32, or ``dtype`` codes), written chunk by chunk (the header needs
    ``rows`` up front)."""
    import numpy as np

    dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": (rows, dim),
    }
    np.lib.format.write_array_header_1_0(fh, header)
    written = 0
    for _, vectors in chunks:
        fh.write(np.ascontiguousarray(vectors, dtype=dtype).tobytes())
        written += len(vectors)
    if written != rows:
        raise RuntimeError(f"wrote {written} rows into an .npy header announcing {rows}")


def write_jsonl(fh: IO[bytes], chunks: Chunks) -> None:
    """One ``{"id": record index, "embedding": [...]}`` object per line."""
    for ids, vectors in chunks:
        for ident, vector in zip(ids.tolist(), vectors.tolist(), strict=True):
            fh.write(json.dumps({"id": ident, "embedding": vector}).encode() + b"\n")


def write_parquet(
    path: str | os.PathLike[str],
    chunks: Chunks,
    dim: int,
    dtype: Any = "float32",
    metadata: dict[bytes, bytes] | None = None,
) -> None:
    """Columns ``id`` (int64, input record index) and ``embedding`` (fixed-size list of float32, or of
    ``dtype`` codes), a row group per chunk; ``metadata`` goes into the schema."""
    pq = pyarrow_parquet("writing .parquet")
    import numpy as np
    import pyarrow as pa

    value_type = pa.from_numpy_dtype(np.dtype(dtype))
    schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(value_type, dim))], metadata=metadata)
    with pq.ParquetWriter(str(path), schema) as writer:
        for ids, vectors in chunks:
            flat = pa.array(np.ascontiguousarray(vectors, dtype=dtype).reshape(-1), type=value_type)
            table = pa.table(
                {
                    "id": pa.array(ids.astype(np.int64)),
                    "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                },
                schema=schema,
            )
            writer.write_table(table)


def _npy_file(path: str | os.PathLike[str], chunks: Chunks, rows: int, dim: int) -> None:
    with open(path, "wb") as fh:
        write_npy(fh, chunks, rows, dim)
        sync(fh)


def _jsonl_file(path: str | os.PathLike[str], chunks: Chunks, rows: int, dim: int) -> None:
    with open(path, "wb") as fh:
        write_jsonl(fh, chunks)
        sync(fh)


def _parquet_file(path: str | os.PathLike[str], chunks: Chunks, rows: int, dim: int) -> None:
    write_parquet(path, chunks, dim)


def _npz_file(path: str | os.PathLike[str], chunks: Chunks, rows: int, dim: int) -> None:
    from ..errors import CorpusError

    raise CorpusError(f"{path}: .npz holds sparse rows of SPLADE models; name a dense output .npy, .parquet or .jsonl")


def sync(fh: Any) -> None:
    """Flush ``fh`` to disk (before it is renamed into place)."""
    fh.flush()
    os.fsync(fh.fileno())


WRITERS: dict[str, Writer] = {
    writer.name: writer
    for writer in (
        Writer("npy", (".npy",), _npy_file, "float32 array N × D"),
        Writer("parquet", (".parquet", ".pq"), _parquet_file, "columns id, embedding"),
        Writer("jsonl", (".jsonl", ".ndjson"), _jsonl_file, 'one {"id", "embedding"} per line'),
        # sparse rows only (tokenpool.io.storage writes them; a dense writer here would be a mistake)
        Writer("npz", (".npz",), _npz_file, "scipy CSR matrix of sparse rows (SPLADE models)"),
    )
}
