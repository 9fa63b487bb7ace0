"""Streaming input readers in the `READERS` registry (.txt, .jsonl, .csv, .tsv, .parquet, stdin): one record
at a time (bounded memory), every bad input a one-line `CorpusError` naming the file and line. A new input
format is one `Reader` row below; the CLI's choices and help and suffix detection derive from it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, Literal

from ..errors import CorpusError, lone_surrogate, shown_name

STDIN = "-"
TEXT_KEY = "text"  # the default JSON field / column holding each record's text (--field, --column)
STDIN_FORMAT = "txt"  # what stdin is read as without --format
BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark, dropped where a file starts with it
# other encodings' byte-order marks, UTF-32's first (UTF-32 LE's starts with UTF-16 LE's; PowerShell 5 writes UTF-16)
_FOREIGN_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
                 (b"\xfe\xff", "UTF-16"))  # fmt: skip
# the first bytes of the compressed files Ray's readers decompress (`COMPRESSION_SUFFIXES`); no reader here does
# (bzip2's: its stream header, then a block's or the end's magic, so that a text starting "BZh" is not one)
_COMPRESSED = ((rb"\x1f\x8b", "gzip"), (rb"\x28\xb5\x2f\xfd", "zstd"), (rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", "bzip2"),
               (rb"\x04\x22\x4d\x18", "lz4"))  # fmt: skip
COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".lz4")
_AFTER_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")  # where a line ends at a lone \r (old-Mac line endings)

# (line where the record starts, 1-based (parquet: its row), text, the values of the asked-for extra fields or
# columns: None in .txt and where a record has none)
Records = Iterator[tuple[int, str, tuple[Any, ...]]]


@dataclass(frozen=True)
class Reader:
    """One input format: ``read(path, *, field, column, extras)`` yields `Records` (``path`` may be
    `STDIN`); ``count(path)`` is the progress bar's cheap pre-pass (it may raise); ``text_option``: the option
    picking the text in a record (``"field"``, ``"column"`` or None); ``description``: shown in help."""

    name: str
    suffixes: tuple[str, ...]
    read: Callable[..., Records]
    count: Callable[[str], int | None]
    text_option: Literal["field", "column"] | None = None
    description: str = ""


def check_readable(path: str, *, folders: bool = False) -> None:
    """`CorpusError` now (before any model loads) if ``path`` cannot be read. Only a regular file is
    opened (probing a pipe would consume it); ``folders``: a folder that can be listed is readable (Ray)."""
    if path == STDIN:
        _stdin()
        return
    if is_regular_file(path):
        open_readable(path).close()
        return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if stat.S_ISDIR(mode) and not folders:
        raise CorpusError(f"{where(path)}: is a directory, not a file")
    if not os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)):
        raise CorpusError(f"{where(path)}: cannot read it (permission denied)")


def is_regular_file(path: str) -> bool:
    """True for a regular file (after symlinks); False for stdin, pipes, devices, missing paths."""
    if path == STDIN:
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_readable(path: str) -> IO[bytes]:
    """``path`` opened for binary reading; a missing, directory or unreadable path → one-line `CorpusError`."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: OSError) -> CorpusError:
    known = {FileNotFoundError: "no such file", IsADirectoryError: "is a directory, not a file"}
    return CorpusError(f"{where(path)}: {known.get(type(exc)) or f'cannot read it ({exc.strerror or exc})'}")


def _stdin() -> IO[bytes]:
    """stdin's binary stream, or a `CorpusError` when stdin is closed."""
    if sys.stdin is None or getattr(sys.stdin, "buffer", None) is None:
        raise CorpusError("stdin is closed; pass an INPUT file or pipe the texts in")
    return sys.stdin.buffer


def open_binary(path: str) -> AbstractContextManager[IO[bytes]]:
    """``path`` opened for reading in a ``with``, which does not close stdin."""
    return nullcontext(_stdin()) if path == STDIN else open_readable(path)


def where(path: str | os.PathLike[str]) -> str:
    """How messages name ``path`` (``<stdin>`` for `STDIN`), as text (a `pathlib.Path` too), quoted as Python
    writes it where it holds a backslash or a character that does not print (`shown_name`)."""
    return "<stdin>" if path == STDIN else shown_name(str(path))


def decoded_lines(fh: IO[bytes], path: str, *, lone_cr: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text with its line ending)``, strict UTF-8 (a leading BOM is dropped); lines end
    at ``\\n`` only (``lone_cr``: also after a lone ``\\r``); invalid UTF-8 or a NUL byte (no text holds one;
    UTF-16 and UTF-32 without a byte-order mark do) raises `CorpusError` naming the line, byte and column (and
    what the file looks like instead: `_foreign_hint`)."""
    number, start = 0, b""
    try:
        for first, raw in enumerate(fh):
            if first == 0:
                start = raw[:10]  # (a compressed file's first bytes: its error may come on a later "line")
                if raw.startswith(BOM):
                    raw = raw[3:]
                    if not raw:
                        return  # the file is a byte-order mark only: no line, as an empty file
            pieces = list(filter(None, _AFTER_LONE_CR.split(raw))) if lone_cr and b"\r" in raw else [raw]
            for k, piece in enumerate(pieces):
                number += 1
                try:
                    text = piece.decode("utf-8")
                except UnicodeDecodeError as exc:
                    after = partial(_byte_after, fh, pieces, k)
                    raise CorpusError(
                        f"{where(path)}, line {number}: invalid UTF-8 (byte 0x{piece[exc.start]:02x} at column "
                        f"{exc.start + 1}){_foreign_hint(start, piece if number == 1 else b'', invalid=(piece, after))}"
                    ) from None
                if "\0" in text:  # (a JSON "\\u0000" escape is text; a raw NUL is not)
                    raise CorpusError(f"{where(path)}, line {number}: a NUL byte (column {piece.index(0) + 1}), which "
                                      f"is not text{_foreign_hint(start, b'', piece)}")  # fmt: skip
                yield number, text
    except OSError as exc:  # (a failing disk or mount: Python's own error names no file)
        raise CorpusError(f"{where(path)}, line {number + 1} or after: cannot read it ({exc.strerror or exc})") from None


def _foreign_hint(
    start: bytes,
    first: bytes = b"",
    nuls: bytes = b"",
    invalid: tuple[bytes, Callable[[], bytes]] = (b"", bytes),
) -> str:
    """What a file that is no UTF-8 text looks like ("" when nothing), for its error: compressed by its first
    bytes ``start``; UTF-16/UTF-32 by the byte-order mark its ``first`` line starts with, or by the NULs of the
    line ``nuls`` (a quarter of its bytes or more: every 2nd (4th) byte of ASCII text in UTF-16 (UTF-32));
    UTF-16 by the ``invalid`` line and a call reading the byte after it (`_utf16_line`: CJK text in UTF-16
    need hold no NUL)."""
    packed = next((name for magic, name in _COMPRESSED if re.match(magic, start)), None)
    if packed:
        return f"; it looks {packed}-compressed: decompress it first"
    mark = next((name for bom, name in _FOREIGN_BOMS if first.startswith(bom)), None)
    if mark:
        return f"; it looks like {mark} (it starts with a {mark} byte-order mark): save it as UTF-8"
    if nuls and 4 * nuls.count(0) >= len(nuls):
        return "; it looks like UTF-16 or UTF-32 without a byte-order mark: save it as UTF-8"
    if _utf16_line(*invalid):
        return "; it looks like UTF-16 without a byte-order mark: save it as UTF-8"
    return ""


def _utf16_line(line: bytes, after: Callable[[], bytes]) -> bool:
    """Whether ``line`` reads as printable UTF-16 text ending in a UTF-16 line break (LE: its \\n or \\r
    byte followed by a NUL, the byte ``after()`` it; BE: preceded by one). Other encodings' text holds no NUL,
    so it never passes; a line with no break (a one-line file) is no evidence: a GBK or Latin-1 one-liner
    reads as printable UTF-16 (CJK, Hangul) as often as not."""
    if line[-1:] not in (b"\n", b"\r"):
        return False
    if line[-2:-1] == b"\0" and _printable_as(line[len(line) % 2 :], "utf-16-be"):
        return True
    # the NUL is read last, only for a line that reads so: on an open pipe that read waits for more input
    return _printable_as(line[(len(line) - 1) % 2 :] + b"\0", "utf-16-le") and after() == b"\0"


def _printable_as(data: bytes, encoding: str) -> bool:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)


def _byte_after(fh: IO[bytes], pieces: list[bytes], k: int) -> bytes:
    """The byte after line piece ``k`` of a line of ``fh``: the next piece's first, else read after a \\n
    (b"" at the end of the file)."""
    if k + 1 < len(pieces):
        return pieces[k + 1][:1]
    return fh.read(1) if pieces[k].endswith(b"\n") else b""


def strip_newline(text: str) -> str:
    """A line of `decoded_lines` without its ending (``\n`` or ``\r\n``; a lone ``\r`` is kept)."""
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def read_txt(path: str, *, field: str = TEXT_KEY, column: str = TEXT_KEY, extras: tuple[str, ...] = ()) -> Records:
    """One record per line (``\\n`` or ``\\r\\n``); an empty line is the record ``""``."""
    none = (None,) * len(extras)
    with open_binary(path) as fh:
        for number, line in decoded_lines(fh, path):
            yield number, strip_newline(line), none


def count_txt(path: str) -> int:
    with open(path, "rb") as fh:
        lines, last = 0, b"\n"
        block = fh.read(1 << 20).removeprefix(BOM)
        while block:
            lines += block.count(b"\n")
            last = block[-1:]
            block = fh.read(1 << 20)
        return lines + (last != b"\n")


class _Repeated(dict):
    """A JSON object with a name given more than once (the last value kept, as `json` keeps it); ``counts``:
    how often each repeated name is given."""

    counts: dict[str, int]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json`'s object hook: a dict, or a `_Repeated` one that remembers the names given twice or more."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    repeated = _Repeated(obj)
    repeated.counts = {name: n for name, n in Counter(name for name, _ in pairs).items() if n > 1}
    return repeated


_JSON = json.JSONDecoder(object_pairs_hook=_object)
_JSON_SPACE = " \t\r\n"  # JSON's whitespace (RFC 8259): a line of other spaces (U+00A0, U+3000) is no JSON
_JSON_SPACE_BYTES = _JSON_SPACE.encode()


def is_blank_json(line: str) -> bool:
    """Whether a JSON Lines line is blank, JSON whitespace only (`_JSON_SPACE`), which readers skip: a line of
    other whitespace (U+000C, U+00A0) is no JSON, and refused."""
    return not line.strip(_JSON_SPACE)


def json_object(line: str, place: str, number: int, names: tuple[str, ...] | None = ()) -> dict[str, Any]:
    """The JSON object on a .jsonl line; `CorpusError` naming the line when it is no JSON object, or when
    one of the ``names`` read from it (None: every name) is given twice (which value is meant?)."""
    try:
        obj = _JSON.decode(line)
    except json.JSONDecodeError as exc:
        why = f"{exc.msg} at column {exc.colno}"
        if line.startswith("\ufeff"):  # (only a file's first line may start with one)
            why = "the line starts with a byte-order mark, U+FEFF, as a file joined onto another does"
        raise CorpusError(f"{place}, line {number}: invalid JSON ({why})") from None
    except RecursionError:
        raise CorpusError(f"{place}, line {number}: JSON nested too deeply to read") from None
    except ValueError as exc:  # a number json cannot convert (an integer of over 4300 digits)
        raise CorpusError(f"{place}, line {number}: invalid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CorpusError(f"{place}, line {number}: expected a JSON object, got {type(obj).__name__}")
    for name in obj if names is None else names:
        if name in getattr(obj, "counts", {}):
            raise CorpusError(
                f"{place}, line {number}: field {name!r} is given {obj.counts[name]} times; which one is meant?"
            )
    return obj


def read_jsonl(path: str, *, field: str = TEXT_KEY, column: str = TEXT_KEY, extras: tuple[str, ...] = ()) -> Records:
    """One JSON object per line, the text in ``field``; blank lines (JSON whitespace only) are skipped."""
    with open_binary(path) as fh:
        for number, obj in jsonl_objects(fh, path, field, extras):
            yield number, obj[field], tuple(obj.get(name) for name in extras)


def jsonl_objects(
    fh: IO[bytes], path: str, field: str, extras: tuple[str, ...] = (), *, every: bool = False
) -> Iterator[tuple[int, dict]]:
    """``(line, object)`` per record of a JSON Lines stream read from ``path`` (`read_jsonl`'s, Ray's): blank
    lines skipped; `CorpusError` naming the line for anything `json_object` refuses, an object without a string
    ``field``, or a read field (``field``, ``extras``; ``every`` field, for a job that passes them all on, as
    Ray's does) holding a lone surrogate."""
    place = where(path)
    for number, line in decoded_lines(fh, path):
        if is_blank_json(line):
            continue  # blank lines separate nothing in JSON Lines; they are not records
        obj = json_object(line, place, number, None if every else (field, *extras))
        if field not in obj:
            names = ", ".join(map(repr, list(obj)[:10])) or "none"
            raise CorpusError(f"{place}, line {number}: no field {field!r} (fields: {names}); choose one with --field")
        if not isinstance(obj[field], str):
            raise CorpusError(f"{place}, line {number}: field {field!r} is {_json_type(obj[field])}, not a string")
        for name in list(obj) if every else (field, *extras):
            for value in _strings(obj.get(name)) if every else [obj.get(name)]:
                if isinstance(value, str):
                    check_encodable(value, place, number, name)
        yield number, obj


def _strings(value: Any) -> Iterator[str]:
    """The strings of a JSON value, inside its arrays and objects too, in order (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, (list, dict)):
            stack.extend(reversed(list(item.values() if isinstance(item, dict) else item)))


def check_encodable(value: str, place: str, number: int, field: str) -> None:
    """`CorpusError` naming the file, line and field of a value that holds a lone surrogate (`lone_surrogate`)."""
    found = lone_surrogate(value)
    if found is not None:
        raise CorpusError(f"{place}, line {number}: field {field!r} holds {found}, which is not text")


def count_jsonl(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(1 for n, raw in enumerate(fh) if (raw.removeprefix(BOM) if n == 0 else raw).strip(_JSON_SPACE_BYTES))


def _json_type(value: Any) -> str:
    if isinstance(value, dict):  # a `_Repeated` one too
        return "an object"
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", list: "an array"}
    return names.get(type(value), type(value).__name__)


def _read_table(
    path: str, *, tab: bool, field: str = TEXT_KEY, column: str = TEXT_KEY, extras: tuple[str, ...] = ()
) -> Records:
    """One record per row after the header row (.csv: RFC 4180 quoting; ``tab``: .tsv, plain tab split, no
    quoting), the text in ``column``; ``extras`` are None where the header, or a short row, has none."""
    place = where(path)
    with open_binary(path) as fh:
        rows, header, index = _table(fh, path, column, tab)
        wanted = [_header_index(header, name, place, required=False) for name in extras]
        for start, row in rows:
            yield start, _table_text(row, header, index, start, place, column), tuple(
                None if k is None or k >= len(row) else row[k] for k in wanted
            )


def _count_table(path: str, *, tab: bool) -> int:
    with open_binary(path) as fh:
        rows = _tsv_rows(fh, path) if tab else csv_rows(fh, path)
        next(rows, None)  # the header
        return sum(1 for _ in rows)


def _tsv_rows(fh: IO[bytes], path: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` per non-blank line, split on tabs: a quote or a lone ``\\r`` is an ordinary character."""
    for number, line in decoded_lines(fh, path):
        text = strip_newline(line)
        if text:
            yield number, text.split("\t")


def csv_rows(fh: IO[bytes], path: str) -> Iterator[tuple[int, list[str]]]:
    """``(line where the row starts, fields)`` per non-blank row, RFC 4180 quoting; lines end at ``\\n``,
    ``\\r\\n`` or a lone ``\\r`` (old-Mac files), as the csv module reads a file opened with ``newline=""``."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader((text for _, text in csv_lines(fh, path)), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CorpusError(f"{where(path)}, line {start}: malformed CSV ({exc})") from None
        if row:  # else a blank line
            yield start, row


def csv_lines(fh: IO[bytes], path: str) -> Iterator[tuple[int, str]]:
    """``(number, line)`` of `decoded_lines`, each also split after a lone ``\\r``, numbered in that count: what
    ``open(path, newline="")`` gives the csv module (it keeps every line break of a quoted field, and ends a
    record at any of the three); the STS pairs reader reads its lines so too."""
    return decoded_lines(fh, path, lone_cr=True)


def table_columns(fh: IO[bytes], path: str, column: str, *, tab: bool) -> dict[str, list[str | None]]:
    """A whole .csv (``tab``: .tsv) as its columns of strings (None past a short row's end), in header order,
    read and checked as `_read_table` reads it (the Ray job's reader); a column named twice is refused too."""
    place = where(path)
    rows, header, index = _table(fh, path, column, tab)
    for name in header:
        _header_index(header, name, place)
    out: dict[str, list[str | None]] = {name: [] for name in header}
    for start, row in rows:
        _table_text(row, header, index, start, place, column)
        for k, values in enumerate(out.values()):
            values.append(row[k] if k < len(row) else None)
    return out


def _table(fh: IO[bytes], path: str, column: str, tab: bool) -> tuple[Iterator[Any], list[str], int]:
    """The rows after the header row (.csv, or ``tab``: .tsv), the header, and where it names ``column``."""
    rows = _tsv_rows(fh, path) if tab else csv_rows(fh, path)
    header = next(rows, None)
    if header is None:
        raise CorpusError(f"{where(path)}: empty file, no header row naming column {column!r}")
    return rows, header[1], _header_index(header[1], column, where(path))


def _table_text(row: list[str], header: list[str], index: int, start: int, place: str, column: str) -> str:
    """The text of a row (``column``, field ``index``); a row too short to have one, or with values past the
    columns the ``header`` names (an unquoted separator split a field: which part is the text?), is a
    `CorpusError`. Empty fields there (a separator ending every row, as some exports write) hold nothing."""
    if any(row[len(header) :]):
        raise CorpusError(
            f"{place}, line {start}: the row has {len(row)} fields but the header names {len(header)} columns (a "
            f"comma in a .csv field must be quoted; a .tsv field cannot hold a tab)"
        )
    if index >= len(row):
        raise CorpusError(
            f"{place}, line {start}: the row has {len(row)} field(s), so no value for column {column!r} "
            f"(field {index + 1})"
        )
    return row[index]


def _header_index(header: list[str], name: str, place: str, *, required: bool = True) -> int | None:
    """Where the header names column ``name`` (None when it does not and it is not ``required``); a column
    named twice is refused (which one is meant?)."""
    if name not in header:
        if not required:
            return None
        names = ", ".join(map(repr, header[:20]))
        raise CorpusError(f"{place}: no column {name!r} in the header (columns: {names}); choose one with --column")
    if header.count(name) > 1:
        raise CorpusError(f"{place}: {header.count(name)} columns are named {name!r}; which one is meant?")
    return header.index(name)


def read_parquet(path: str, *, field: str = TEXT_KEY, column: str = TEXT_KEY, extras: tuple[str, ...] = ()) -> Records:
    """One record per row, the text in the string ``column``; needs pyarrow."""
    refuse_parquet_stdin(path, "parquet")
    import pyarrow as pa

    pfile = parquet_file(path)
    schema = pfile.schema_arrow
    if column not in schema.names:
        names = ", ".join(map(repr, schema.names[:20]))
        raise CorpusError(f"{where(path)}: no column {column!r} (columns: {names}); choose one with --column")
    present = [name for name in dict.fromkeys(extras) if name in schema.names and name != column]
    for name in (column, *present):  # present: a column named twice is refused, as in a .csv header
        _header_index(schema.names, name, where(path))
    kind = schema.field(column).type
    if not is_string_type(kind.value_type if pa.types.is_dictionary(kind) else kind):  # dictionary: values
        raise CorpusError(f"{where(path)}: column {column!r} holds {kind}, not strings")
    row = 0
    for batch in _parquet_batches(pfile, [column, *present], path):
        # by name: pyarrow reads a name as a column path too ("a.b" also selects struct "a"'s field "b")
        data = {name: _pylist(batch.column(name), path, name, row) for name in [column, *present]}
        for k, value in enumerate(data[column]):
            row += 1
            if value is None:
                raise null_text(path, row, column)
            yield row, value, tuple(data[name][k] if name in data else None for name in extras)


def refuse_parquet_stdin(path: str, fmt: str) -> None:
    """`CorpusError` for input of format ``fmt`` "parquet" read from stdin: a parquet file is read from its end."""
    if fmt == "parquet" and path == STDIN:
        raise CorpusError("parquet input cannot be read from stdin; pass a file")


def parquet_file(path: str | os.PathLike[str]) -> Any:
    """The local file ``path`` opened as a `pyarrow.parquet.ParquetFile`; a missing, damaged or non-parquet file
    is a `CorpusError` naming it (not pyarrow's bare message). Opened as a file, never parsed as a URI as
    pyarrow parses a string (``run:1/in.parquet`` is refused, ``file:/x/in.parquet`` read as ``/x/in.parquet``)."""
    pq = pyarrow_parquet("reading .parquet")
    import pyarrow as pa

    try:
        return pq.ParquetFile(pa.OSFile(os.fsencode(path)))  # (bytes: a name that is not UTF-8 opens too)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"{where(path)}: not a readable parquet file ({exc})") from None


def null_text(path: str, row: int, column: str) -> CorpusError:
    """The error for a null text: row ``row`` (1-based) of the parquet file ``path``."""
    return CorpusError(f"{where(path)}, row {row}: column {column!r} is null")


def first_null_row(pfile: Any, column: str) -> int | None:
    """The first row (1-based) of the `pyarrow.parquet.ParquetFile` ``pfile`` whose ``column`` is null, or None.
    Only the row groups whose statistics count a null there, or hold no count, are read (the Ray job's check
    before it starts: its actors see rows, not files). ``column`` is the top-level column of that name, as
    `read_parquet` reads it; where a struct's field path spells the same (struct "a", field "b" beside a column
    "a.b"), no statistics say which is which, and every row group is read."""
    meta, before = pfile.metadata, 0
    leaves = [j for j in range(meta.num_columns) if meta.schema.column(j).path == column]
    leaf = leaves[0] if len(leaves) == 1 else None
    for group in range(meta.num_row_groups):
        stats = None if leaf is None else meta.row_group(group).column(leaf).statistics
        if stats is None or not stats.has_null_count or stats.null_count:
            values = pfile.read_row_group(group, columns=[column]).column(column)
            if values.null_count:
                return before + values.is_valid().to_pylist().index(False) + 1
        before += meta.row_group(group).num_rows
    return None


def _parquet_batches(pfile: Any, columns: list[str], path: str) -> Iterator[Any]:
    """The file's record batches of ``columns``; a page that cannot be read (a damaged file) is a `CorpusError`
    naming the file and the first row it held, not pyarrow's bare message."""
    import pyarrow as pa

    batches, rows = pfile.iter_batches(columns=columns, batch_size=1024), 0
    try:  # (an error of the caller's, while a batch is out, is not raised here)
        for batch in batches:
            yield batch
            rows += batch.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"{where(path)}, row {rows + 1} or after: not readable parquet data ({exc})") from None


def _pylist(values: Any, path: str, name: str, before: int) -> list:
    """A parquet column's values of one batch (after row ``before``) as Python objects; a string that is not
    UTF-8 (parquet writers need not check) is a `CorpusError` naming its row."""
    try:
        return values.to_pylist()
    except UnicodeDecodeError:
        for k in range(len(values)):
            try:
                values[k].as_py()
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{where(path)}, row {before + k + 1}: column {name!r} holds invalid UTF-8 ({exc.reason})") from None
        raise


def count_parquet(path: str) -> int:
    return int(parquet_file(path).metadata.num_rows)


def is_string_type(kind: Any) -> bool:
    """Whether the Arrow type ``kind`` holds strings: string, large string or string view (pyarrow >= 16)."""
    import pyarrow as pa

    view = getattr(pa.types, "is_string_view", None)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or (view and view(kind)))


def pyarrow_parquet(purpose: str) -> Any:
    """``pyarrow.parquet``, or a `CorpusError` saying that ``purpose`` needs the parquet extra."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"{purpose} needs pyarrow: pip install 'tokenpool[parquet]'") from None
    return pq


read_csv, count_csv = partial(_read_table, tab=False), partial(_count_table, tab=False)
read_tsv, count_tsv = partial(_read_table, tab=True), partial(_count_table, tab=True)


READERS: dict[str, Reader] = {
    reader.name: reader
    for reader in (
        Reader("txt", (".txt", ".text"), read_txt, count_txt, None, "one text per line"),
        Reader("jsonl", (".jsonl", ".ndjson"), read_jsonl, count_jsonl, "field"),
        Reader("csv", (".csv",), read_csv, count_csv, "column"),
        Reader("tsv", (".tsv", ".tab"), read_tsv, count_tsv, "column"),
        Reader("parquet", (".parquet", ".pq"), read_parquet, count_parquet, "column"),
    )
}


def iter_records(
    path: str, fmt: str, *, field: str = TEXT_KEY, column: str = TEXT_KEY, extras: tuple[str, ...] = ()
) -> Records:
    """Yield ``(line, text, extras' values)`` per record of ``path`` read as ``fmt`` (a `READERS` name)."""
    check_readable(path)
    reader = READERS.get(fmt)
    if reader is None:
        raise CorpusError(f"unknown input format {fmt!r}")
    yield from reader.read(path, field=field, column=column, extras=extras)


def count_records(path: str, fmt: str) -> int | None:
    """How many records `iter_records` will yield (a cheap pre-pass for the progress bar), None if unknown."""
    reader = READERS.get(fmt)
    if reader is None or not is_regular_file(path):  # a pipe read here would be empty for the embedding
        return None
    try:
        return reader.count(path)
    except (OSError, ValueError, ImportError, CorpusError):  # ValueError: pyarrow's ArrowInvalid (a damaged file)
        return None
