"""Output writers in the `WRITERS` registry (.npy with its sidecar index, .parquet, .jsonl; .npz for sparse
rows): each writes a `RowStream` to a complete file, then reads it back (RuntimeError when it does not hold
what the chunks held). A new output format is one `Writer` row below.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..core.durable import sync_dir
from .readers import parquet_file, pyarrow_parquet

if TYPE_CHECKING:
    import numpy as np

    from .rows import Parts, RowSchema


@dataclass(frozen=True)
class RowStream:
    """What a writer writes: ``rows`` rows of ``schema`` (``items`` .npy rows: token vectors, non-zeros), whose
    chunks ``chunks()`` yields one at a time (a writer may call it more than once); ``has_ids``: the optional
    id column is written; ``metadata``: parquet schema metadata."""

    schema: RowSchema
    chunks: Callable[[], Iterable[Parts]]
    rows: int
    items: int
    has_ids: bool = False
    metadata: Mapping[bytes, bytes] | None = None


@dataclass(frozen=True)
class Writer:
    """One output format: ``write(path, stream, sidecar)`` writes ``stream`` to ``path`` (and, for .npy, the
    row index to ``sidecar`` when the schema has one)."""

    name: str
    suffixes: tuple[str, ...]
    write: Callable[[Path, RowStream, Path | None], None]


def sync(fh: Any) -> None:
    """Flush ``fh`` to disk (before it is renamed into place)."""
    fh.flush()
    os.fsync(fh.fileno())


def sync_path(path: Path) -> None:
    """Flush a file that a library wrote and closed (pyarrow, zipfile) to disk, as `sync` does for our own
    handles: the job deletes its chunks once the output is renamed into place."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def replace_synced(source: Path, target: Path) -> None:
    """`os.replace` ``source`` by ``target``, then sync the folders of both (`sync_dir`): a renamed file is
    where it was put even after a power cut."""
    os.replace(source, target)
    sync_dir(target.parent)
    if os.path.abspath(source.parent) != os.path.abspath(target.parent):
        sync_dir(source.parent)


def write_npy(fh: IO[bytes], arrays: Iterable[np.ndarray], rows: int, width: int | None, dtype: Any = "<f4") -> str:
    """A ``rows × width`` .npy file (``width`` None: a vector of ``rows`` values) written array by array (the
    header needs ``rows`` up front); returns the sha256 of the data written after the header. An array whose rows
    are not ``width`` values (one value for None) is a ValueError, before its bytes are written."""
    import numpy as np

    dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    shape = (rows,) if width is None else (rows, width)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)
    digest, written = hashlib.sha256(), 0
    for k, array in enumerate(arrays):
        if np.shape(array)[1:] != shape[1:]:  # its bytes would not be rows of the header's shape
            rows_of = "(n,)" if width is None else f"(n, {width})"
            raise ValueError(f"array {k} has shape {np.shape(array)!r}, not {rows_of} as the header's shape {shape} needs")
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        fh.write(data)
        digest.update(data)
        written += len(array)
    if written != rows:
        raise RuntimeError(f"wrote {written} rows into an .npy header announcing {rows}")
    return digest.hexdigest()


def _npy(path: Path, stream: RowStream, sidecar: Path | None) -> None:
    """The schema's array column, rows one after another; the other columns in ``sidecar`` (one JSON line per
    row, with each row's first line in the array when its items are ragged)."""
    schema = stream.schema
    array = schema.column(schema.array)

    def arrays(index: IO[bytes] | None) -> Iterator[Any]:
        first = 0
        for parts in stream.chunks():
            if index is not None:
                index.writelines(schema.json_lines(parts, stream.has_ids, "sidecar", first))
            first += schema.items(parts)
            yield parts[array.key]

    with open(path, "wb") as fh, open(sidecar, "wb") if sidecar else nullcontext() as index:
        sha256 = write_npy(fh, arrays(index), stream.items, array.width, array.dtype)
        for out in (fh, index):
            if out is not None:
                sync(out)
    with open(path, "rb") as fh:
        _check_npy(fh, path.name, (stream.items, array.width), array.dtype, sha256)
    if sidecar is not None:
        _check_lines(sidecar, stream.rows)


def _check_npy(fh: IO[bytes], name: str, shape: tuple[int, ...], dtype: Any, sha256: str) -> None:
    """RuntimeError unless the .npy stream ``fh`` (a file, an .npz member) is a C-order ``shape`` array of
    ``dtype`` whose data has the ``sha256`` that `write_npy` returned: read in blocks, never whole."""
    import numpy as np

    found_shape, fortran, found = _npy_header(fh)
    digest = hashlib.sha256()
    while block := fh.read(1 << 18):
        digest.update(block)
    if fortran or found != np.dtype(dtype) or tuple(found_shape) != shape or digest.hexdigest() != sha256:
        held = " x ".join(map(str, shape))
        raise RuntimeError(f"the assembled {name} does not hold the {held} {np.dtype(dtype)} values written; "
                           f"nothing renamed")  # fmt: skip


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, Any]:
    """The shape, Fortran order and dtype of the .npy stream ``fh`` (left at its data)."""
    import numpy as np

    major, _ = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    return read_header(fh)


def _check_lines(path: Path, rows: int) -> None:
    with open(path, "rb") as fh:
        found = sum(1 for _ in fh)
    if found != rows:
        raise RuntimeError(f"the assembled {path.name} has {found} lines, expected {rows}; nothing renamed")


def _jsonl(path: Path, stream: RowStream, sidecar: Path | None) -> None:
    """One JSON object per row."""
    with open(path, "wb") as fh:
        for parts in stream.chunks():
            fh.writelines(stream.schema.json_lines(parts, stream.has_ids))
        sync(fh)
    _check_lines(path, stream.rows)


def _parquet(path: Path, stream: RowStream, sidecar: Path | None) -> None:
    """A row group per chunk (per `RowSchema.arrow_pieces` of one over 2**31 - 1 ragged items); the schema's
    metadata (precision, calibration, vocabulary) in the file's."""
    pq = pyarrow_parquet("writing .parquet")
    import pyarrow as pa

    schema = stream.schema.arrow_schema(stream.has_ids, stream.metadata)
    # a file, never a URI; its name as the file system's bytes (pyarrow encodes a str as strict UTF-8)
    with pa.OSFile(os.fsencode(path), "wb") as sink, pq.ParquetWriter(sink, schema) as writer:
        for parts in stream.chunks():
            for piece in stream.schema.arrow_pieces(parts):
                writer.write_table(pa.table(stream.schema.arrow_columns(piece, stream.has_ids), schema=schema))
    sync_path(path)
    found = parquet_file(path).metadata.num_rows
    if found != stream.rows:
        raise RuntimeError(f"the assembled {path.name} has {found} rows, expected {stream.rows}; nothing renamed")


NPZ_INT32_ITEMS = 2**31  # the non-zeros from which a .npz's column indices are int64 (scipy's index dtype rule)


def _npz(path: Path, stream: RowStream, sidecar: Path | None) -> None:
    """A ``scipy.sparse.save_npz``-compatible CSR file (float32 data, int32 indices — int64 from `NPZ_INT32_ITEMS`
    non-zeros on, as scipy saves such a matrix —, int64 indptr) of sparse rows (``indices``/``values`` counted by
    ``nnz``), streamed: the chunks are read once per array."""
    import numpy as np

    vocabulary = stream.schema.vocabulary
    index = "<i4" if stream.items < NPZ_INT32_ITEMS else "<i8"
    ends = [0]  # where indptr ends: the non-zeros the chunks count

    def indptr() -> Iterator[np.ndarray]:
        yield np.zeros(1, dtype=np.int64)
        for parts in stream.chunks():
            yield np.cumsum(parts["nnz"]) + ends[0]
            ends[0] += int(np.sum(parts["nnz"]))

    members = (("indices", index, stream.items, (parts["indices"] for parts in stream.chunks())),
               ("indptr", "<i8", stream.rows + 1, indptr()),
               ("data", "<f4", stream.items, (parts["values"] for parts in stream.chunks())))  # fmt: skip
    written = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, dtype, count, arrays in members:
            with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                written[name] = ((count,), dtype, write_npy(fh, arrays, count, None, dtype))
        for name, value in (("format", np.array(b"csr")), ("shape", np.array([stream.rows, vocabulary]))):
            with zf.open(name + ".npy", "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=False)
    sync_path(path)
    shape = _check_npz(path, written)
    if (shape, ends[0]) != ((stream.rows, vocabulary), stream.items):
        raise RuntimeError(f"the assembled {path.name} holds a {shape} matrix of {ends[0]} non-zeros, expected "
                           f"{stream.rows} rows ({stream.items} non-zeros); nothing renamed")  # fmt: skip


def _check_npz(path: Path, written: Mapping[str, tuple[tuple[int, ...], str, str]]) -> tuple[int, ...]:
    """The shape an .npz holds, after `_check_npy` of each member ``written`` names (its shape, dtype, sha256):
    a member cut short, of another dtype or with other bytes, or a damaged zip, is a RuntimeError."""
    import numpy as np

    try:
        with zipfile.ZipFile(path) as zf:
            for name, (shape, dtype, sha256) in written.items():
                with zf.open(name + ".npy") as fh:
                    _check_npy(fh, f"{path.name} ({name}.npy)", shape, dtype, sha256)
            with zf.open("shape.npy") as fh:
                return tuple(int(v) for v in np.lib.format.read_array(fh, allow_pickle=False))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:  # (KeyError: no such member)
        raise RuntimeError(f"the assembled {path.name} is not the .npz written ({exc}); nothing renamed") from None


WRITERS: dict[str, Writer] = {
    writer.name: writer
    for writer in (
        Writer("npy", (".npy",), _npy),
        Writer("parquet", (".parquet", ".pq"), _parquet),
        Writer("jsonl", (".jsonl", ".ndjson"), _jsonl),
        Writer("npz", (".npz",), _npz),  # scipy CSR matrix of sparse rows (SPLADE models)
    )
}
