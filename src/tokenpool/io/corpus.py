"""Streaming corpus readers (.txt, .jsonl, .csv, .tsv, .parquet, stdin) and output writers (.npy, .parquet, .jsonl).

Readers yield one record at a time so that `tokenpool embed` runs in bounded memory on any corpus size; every
bad input raises `CorpusError` with a one-line message naming the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np

INPUT_FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
OUTPUT_FORMATS = ("npy", "parquet", "jsonl")
_SUFFIXES = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
}
STDIN = "-"


class CorpusError(ValueError):
    """A user-facing problem with an input or output file; the message is one line, fit for the CLI."""


def input_format(path: str, override: str | None = None) -> str:
    """The reader for ``path``: ``override`` if given, else its suffix (stdin defaults to txt)."""
    if override is not None:
        if override not in INPUT_FORMATS:
            raise CorpusError(f"unknown input format {override!r}; choose one of {', '.join(INPUT_FORMATS)}")
        return override
    if path == STDIN:
        return "txt"
    fmt = _SUFFIXES.get(os.path.splitext(path)[1].lower())
    if fmt not in INPUT_FORMATS:
        raise CorpusError(
            f"{path}: cannot tell the input format from its name; use a .txt, .jsonl, .csv, .tsv or "
            f".parquet file, or pass --format"
        )
    return fmt


def output_format(path: str) -> str:
    """The writer for ``path``, from its suffix."""
    fmt = _SUFFIXES.get(os.path.splitext(path)[1].lower())
    if fmt not in OUTPUT_FORMATS:
        raise CorpusError(f"{path}: unsupported output type; name the output .npy, .parquet or .jsonl")
    return fmt


def check_readable(path: str) -> None:
    """Raise `CorpusError` now (before any model loads) if ``path`` cannot be opened for reading."""
    if path == STDIN:
        return
    open_readable(path).close()


def open_readable(path: str) -> IO[bytes]:
    """``path`` opened for binary reading; a missing, directory or unreadable path → one-line `CorpusError`."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def iter_records(
    path: str, fmt: str, *, field: str = "text", column: str = "text"
) -> Iterator[tuple[int, str]]:
    """Yield ``(line, text)`` per record: ``line`` is where the record starts (1-based; the row for parquet)."""
    check_readable(path)
    if fmt == "parquet":
        yield from _parquet_records(path, column)
        return
    with _open_binary(path) as fh:
        if fmt == "txt":
            yield from _txt_records(fh, path)
        elif fmt == "jsonl":
            yield from _jsonl_records(fh, path, field)
        elif fmt in ("csv", "tsv"):
            yield from _table_records(fh, path, column, tab=fmt == "tsv")
        else:
            raise CorpusError(f"unknown input format {fmt!r}")


def count_records(path: str, fmt: str) -> int | None:
    """How many records ``iter_records`` will yield (a cheap pre-pass for the progress bar), None if unknown."""
    if path == STDIN:
        return None
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        if fmt in ("csv", "tsv"):
            return sum(1 for _ in iter_records(path, fmt, column=_ANY_COLUMN))
        with open(path, "rb") as fh:
            if fmt == "jsonl":
                return sum(1 for raw in fh if raw.strip())
            lines, last = 0, b"\n"
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
            return lines + (last != b"\n")
    except (OSError, ImportError, CorpusError):
        return None


class _AnyColumn(str):
    """Sentinel column for counting rows without checking the header."""


_ANY_COLUMN = _AnyColumn("")


def _open_binary(path: str) -> IO[bytes]:
    if path == STDIN:
        return _NoClose(sys.stdin.buffer)
    return open_readable(path)


class _NoClose:
    """Wrap stdin so that ``with`` does not close it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def __enter__(self) -> IO[bytes]:
        return self._fh

    def __exit__(self, *exc: object) -> None:
        return None


def _where(path: str) -> str:
    return "<stdin>" if path == STDIN else path


def _decoded_lines(fh: IO[bytes], path: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text with its line ending)``, strict UTF-8 (a leading BOM is dropped)."""
    for number, raw in enumerate(fh, 1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError(
                f"{_where(path)}, line {number}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                f"column {exc.start + 1})"
            ) from None


def _strip_newline(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    return text


def _txt_records(fh: IO[bytes], path: str) -> Iterator[tuple[int, str]]:
    for number, line in _decoded_lines(fh, path):
        yield number, _strip_newline(line)


def _jsonl_records(fh: IO[bytes], path: str, field: str) -> Iterator[tuple[int, str]]:
    where = _where(path)
    for number, line in _decoded_lines(fh, path):
        if not line.strip():
            continue  # blank lines separate nothing in JSON Lines; they are not records
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(
                f"{where}, line {number}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise CorpusError(f"{where}, line {number}: expected a JSON object, got {type(obj).__name__}")
        if field not in obj:
            names = ", ".join(map(repr, list(obj)[:10])) or "none"
            raise CorpusError(
                f"{where}, line {number}: no field {field!r} (fields: {names}); choose one with --field"
            )
        value = obj[field]
        if not isinstance(value, str):
            raise CorpusError(f"{where}, line {number}: field {field!r} is {_json_type(value)}, not a string")
        yield number, value


def _json_type(value: Any) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _table_records(fh: IO[bytes], path: str, column: str, *, tab: bool) -> Iterator[tuple[int, str]]:
    """CSV (RFC 4180 quoting) or TSV (plain tab split, no quoting); the first row names the columns."""
    where = _where(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    lines = (text for _, text in _decoded_lines(fh, path))
    if tab:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines, strict=True)
    index = -1
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise CorpusError(f"{where}, line {start}: malformed CSV ({exc})") from None
        if not row:
            continue  # a blank line
        if index < 0:
            if isinstance(column, _AnyColumn):
                index = 0
                continue
            if column not in row:
                names = ", ".join(map(repr, row[:20]))
                raise CorpusError(
                    f"{where}: no column {column!r} in the header (columns: {names}); "
                    f"choose one with --column"
                )
            index = row.index(column)
            continue
        if isinstance(column, _AnyColumn):
            yield start, ""
            continue
        if index >= len(row):
            raise CorpusError(
                f"{where}, line {start}: the row has {len(row)} field(s), so no value for column "
                f"{column!r} (field {index + 1})"
            )
        yield start, row[index]
    if index < 0 and not isinstance(column, _AnyColumn):
        raise CorpusError(f"{where}: empty file, no header row naming column {column!r}")


def _parquet_records(path: str, column: str) -> Iterator[tuple[int, str]]:
    if path == STDIN:
        raise CorpusError("parquet input cannot be read from stdin; pass a file")
    pq = _pyarrow_parquet("reading .parquet")
    import pyarrow as pa

    try:
        pfile = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"{path}: not a readable parquet file ({exc})") from None
    schema = pfile.schema_arrow
    if isinstance(column, _AnyColumn):
        column = schema.names[0] if schema.names else ""
    if column not in schema.names:
        names = ", ".join(map(repr, schema.names[:20]))
        raise CorpusError(f"{path}: no column {column!r} (columns: {names}); choose one with --column")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(pa, kind)):
        raise CorpusError(f"{path}: column {column!r} holds {kind}, not strings")
    row = 0
    for batch in pfile.iter_batches(columns=[column], batch_size=1024):
        for value in batch.column(0).to_pylist():
            row += 1
            if value is None:
                raise CorpusError(f"{path}, row {row}: column {column!r} is null")
            yield row, value


def _is_string_view(pa: Any, kind: Any) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(kind))


def _pyarrow_parquet(purpose: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"{purpose} needs pyarrow: pip install 'tokenpool[parquet]'") from None
    return pq


# ---------------------------------------------------------------------------------------------------- writers
# Each writer takes an iterable of (ids, vectors) chunks, so that only one chunk is in memory at a time.

Chunks = Iterable[tuple[np.ndarray, np.ndarray]]


def write_npy(fh: IO[bytes], chunks: Chunks, rows: int, dim: int) -> None:
    """A float32 ``rows × dim`` .npy file, written chunk by chunk (the header needs ``rows`` up front)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
        "fortran_order": False,
        "shape": (rows, dim),
    }
    np.lib.format.write_array_header_1_0(fh, header)
    written = 0
    for _, vectors in chunks:
        fh.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        written += len(vectors)
    if written != rows:
        raise RuntimeError(f"wrote {written} rows into an .npy header announcing {rows}")


def write_jsonl(fh: IO[bytes], chunks: Chunks) -> None:
    """One ``{"id": record index, "embedding": [...]}`` object per line."""
    for ids, vectors in chunks:
        for ident, vector in zip(ids.tolist(), vectors.tolist(), strict=True):
            fh.write(json.dumps({"id": ident, "embedding": vector}).encode() + b"\n")


def write_parquet(path: str, chunks: Chunks, dim: int) -> None:
    """Columns ``id`` (int64, input record index) and ``embedding`` (fixed-size list of float32), a row group per chunk."""
    pq = _pyarrow_parquet("writing .parquet")
    import pyarrow as pa

    schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for ids, vectors in chunks:
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
            table = pa.table(
                {
                    "id": pa.array(ids.astype(np.int64)),
                    "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                },
                schema=schema,
            )
            writer.write_table(table)
