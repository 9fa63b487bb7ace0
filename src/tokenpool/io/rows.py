"""Rows of a corpus job's output as named columns (`RowSchema`; the kinds are in `tokenpool.jobs.rows`): how a
chunk of them (part name → array; a list of str or None for a `TEXT` column) is stored, checked, and turned
into Arrow columns (parquet, Ray) and JSON lines (.jsonl, the .npy sidecar index); pyarrow loads lazily.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# OFFSET: the .npy row where a row's items start (the sidecar of a ragged array), computed when written
SCALAR, TEXT, VECTOR, RAGGED, OFFSET = "scalar", "text", "vector", "ragged", "offset"
Parts = dict[str, Any]
LIST_ITEMS = 2**31 - 1  # the items one pyarrow list array holds: its offsets are int32


@dataclass(frozen=True)
class Column:
    """One column. ``part``: the stored part it reads (default: its name). ``show``: ``"all"`` outputs, only the
    .npy ``"sidecar"``, or ``"none"`` (bookkeeping kept in the work folder). ``width``: values per row
    (`VECTOR`) or per item (`RAGGED`, None for one); ``lengths``: the column counting a `RAGGED` row's items.
    ``optional``: a `TEXT` column written only when some row of the output has a value."""

    name: str
    kind: str = SCALAR
    dtype: str = "<i8"
    width: int | None = None
    lengths: str | None = None
    part: str | None = None
    show: str = "all"
    optional: bool = False

    @property
    def key(self) -> str:
        return self.part or self.name

    def item_shape(self) -> tuple[int, ...]:
        return () if self.width is None else (self.width,)


@dataclass(frozen=True)
class RowSchema:
    """The columns of one output kind, in output order. ``array``: the column an .npy output holds (rows one
    after another); ``sidecar``: the suffix of the .npy output's row index (None: no index); ``per_record``:
    one row per input record (else any number, e.g. chunks); ``derived``: parts computed from the stored ones
    when rows are written (decoded tokens); ``ascii``: JSON lines escape non-ASCII characters; ``vocabulary``:
    the columns a sparse row spans."""

    columns: tuple[Column, ...]
    array: str | None = None
    sidecar: str | None = None
    per_record: bool = True
    ascii: bool = True
    derived: Mapping[str, Callable[[Parts], Any]] = field(default_factory=dict)
    vocabulary: int | None = None

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def stored(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.key not in self.derived and c.kind != OFFSET)

    @property
    def record_key(self) -> str:
        """The part holding each row's input record number (the first column's)."""
        return self.columns[0].key

    def items(self, parts: Parts) -> int:
        """The items of these rows' ragged columns (token vectors, non-zeros), else their number of rows."""
        ragged = next((c for c in self.columns if c.kind == RAGGED), None)
        if ragged is not None:
            return int(np.sum(parts[self.column(ragged.lengths).key]))
        return len(parts[self.record_key])

    def arrow_pieces(self, parts: Parts) -> Iterator[Parts]:
        """These rows in consecutive pieces of at most `LIST_ITEMS` ragged items each (one piece, ``parts``
        itself, when they fit), so that each piece's Arrow list columns can be built (`arrow_columns`)."""
        ragged = next((c for c in self.columns if c.kind == RAGGED), None)
        if ragged is None or self.items(parts) <= LIST_ITEMS:
            yield parts
            return
        bounds = np.asarray(_bounds(parts[self.column(ragged.lengths).key]))
        first = 0
        while first < len(bounds) - 1:  # a row holding more items than that is a piece alone
            last = max(first + 1, int(np.searchsorted(bounds, bounds[first] + LIST_ITEMS, side="right")) - 1)
            items = slice(bounds[first], bounds[last])
            yield {c.key: parts[c.key][items if c.kind == RAGGED else slice(first, last)] for c in self.stored}
            first = last

    def concat(self, blocks: Sequence[Parts]) -> Parts:
        """The rows of ``blocks`` (one at least) one after another."""
        out: Parts = {}
        for c in self.stored:
            pieces = [b[c.key] for b in blocks]
            out[c.key] = [v for p in pieces for v in p] if c.kind == TEXT else np.concatenate(pieces).astype(c.dtype)
        return out

    def check(self, parts: Parts, start: int, stop: int, complete: bool) -> str | None:
        """Why ``parts`` cannot be rows of input records ``start``..``stop``-1 (None when they can): shapes and
        dtypes; record numbers inside the range, in order (each record once, every one when ``complete``)."""
        n = len(parts[self.record_key])
        for c in self.stored:
            value = parts[c.key]
            if c.kind == TEXT:
                if not isinstance(value, list) or len(value) != n or any(
                    v is not None and not isinstance(v, str) for v in value
                ):
                    return f"holds {c.key} that are not {n} texts"
                continue
            rows = int(np.sum(parts[self.column(c.lengths).key])) if c.kind == RAGGED else n
            if value.dtype != np.dtype(c.dtype) or value.shape != (rows, *c.item_shape()):
                return f"holds {c.key} {value.dtype} {value.shape}, expected {np.dtype(c.dtype)} {(rows, *c.item_shape())}"
        docs = parts[self.record_key]
        steps = np.diff(docs)
        if n and (docs[0] < start or docs[-1] >= stop or np.any(steps <= 0 if self.per_record else steps < 0)):
            return f"holds record numbers outside {start}..{stop - 1} or out of order"
        if complete and self.per_record and n != stop - start:
            return f"has {n} rows for records {start}..{stop - 1}"
        return None

    def shown(self, has_ids: bool, where: str) -> list[Column]:
        """The columns an output shows: ``where`` is ``"rows"`` (parquet, jsonl) or ``"sidecar"``."""
        keep = ("all",) if where == "rows" else ("all", "sidecar")
        return [
            c for c in self.columns
            if c.show in keep and (has_ids or not c.optional) and not (where == "sidecar" and c.name == self.array)
        ]  # fmt: skip

    def json_lines(self, parts: Parts, has_ids: bool, where: str = "rows", first: int = 0) -> Iterator[bytes]:
        """One JSON object per row; ``where="sidecar"``: the .npy index, whose `OFFSET` column counts from
        ``first`` (the .npy row of these parts' first item)."""
        parts = self._with_derived(parts)
        columns = self.shown(has_ids, where)
        values = {c.name: _as_list(parts[c.key]) for c in columns if c.kind != OFFSET}
        bounds = {c.lengths: _bounds(parts[self.column(c.lengths).key]) for c in self.columns if c.lengths}
        for k in range(len(parts[self.record_key])):
            row: dict[str, Any] = {}
            for c in columns:
                if c.kind == RAGGED:
                    row[c.name] = values[c.name][bounds[c.lengths][k] : bounds[c.lengths][k + 1]]
                elif c.kind == OFFSET:
                    row[c.name] = first + bounds[self.column(self.array).lengths][k]
                else:
                    row[c.name] = values[c.name][k]
            yield json.dumps(row, ensure_ascii=self.ascii).encode() + b"\n"

    def _with_derived(self, parts: Parts) -> Parts:
        return {**parts, **{key: derive(parts) for key, derive in self.derived.items()}} if self.derived else parts

    def arrow_schema(self, has_ids: bool, metadata: Mapping[bytes, bytes] | None = None) -> Any:
        import pyarrow as pa

        return pa.schema([(c.name, _arrow_type(pa, c)) for c in self.shown(has_ids, "rows")], metadata=metadata)

    def arrow_columns(self, parts: Parts, has_ids: bool) -> dict[str, Any]:
        """Each shown column of these rows as a pyarrow array, in output order."""
        import pyarrow as pa

        parts = self._with_derived(parts)
        out = {}
        for c in self.shown(has_ids, "rows"):
            out[c.name] = _flat_array(pa, c, parts[c.key])
            if c.kind == RAGGED:
                offsets = np.asarray(_bounds(parts[self.column(c.lengths).key]), dtype=np.int32)
                out[c.name] = pa.ListArray.from_arrays(pa.array(offsets), out[c.name])
        return out


def _as_list(value: Any) -> list:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _bounds(lengths: np.ndarray) -> list[int]:
    """Where each row's items start in the flat values, and (last) where the last one ends."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64).tolist()


def _value_type(pa: Any, c: Column) -> Any:
    return pa.string() if c.dtype == "str" or c.kind == TEXT else pa.from_numpy_dtype(np.dtype(c.dtype))


def _arrow_type(pa: Any, c: Column) -> Any:
    item = _value_type(pa, c) if c.width is None else pa.list_(_value_type(pa, c), c.width)
    return pa.list_(item) if c.kind == RAGGED else item


def _flat_array(pa: Any, c: Column, value: Any) -> Any:
    """Values of a text, scalar or vector column (or the items of a ragged one) as a pyarrow array."""
    if c.dtype == "str" or c.kind == TEXT:
        return pa.array(value, type=pa.string())
    flat = pa.array(np.ascontiguousarray(value, dtype=c.dtype).reshape(-1), type=_value_type(pa, c))
    return flat if c.width is None else pa.FixedSizeListArray.from_arrays(flat, c.width)
