"""Sparse rows (CSR) from dense vectors one batch at a time, for SPLADE-style outputs over a vocabulary.

Pure numpy: `SparseRows` holds CSR parts (``indptr`` int64, ``indices`` int32, ``values`` float32, column
indices ascending within a row); `SparseRows.to_scipy` builds a ``scipy.sparse.csr_matrix`` (scipy is imported
only there). `CSRBuilder` gathers batches that arrive in any row order — the Encoder's length-sorted batches —
and assembles the rows in input order in O(non-zeros) memory, so an N × V dense array never exists."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import is_int
from ._backends import check_has_values, to_numpy

__all__ = ["SparseRows", "CSRBuilder", "sparsify", "keep_largest", "check_sparse_options", "collect_rows", "concat_rows"]


@dataclass
class SparseRows:
    """CSR parts of ``len(indptr) - 1`` rows over ``n_cols`` columns."""

    indptr: np.ndarray  # int64, rows + 1
    indices: np.ndarray  # int32, ascending within each row
    values: np.ndarray  # float32
    n_cols: int

    @property
    def n_rows(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, values) of row ``i`` (negative: counted from the end, as a list's)."""
        if not is_int(i) or not -self.n_rows <= i < self.n_rows:
            raise IndexError(f"row {i!r} is not one of the {self.n_rows} rows")
        start, stop = int(self.indptr[i % self.n_rows]), int(self.indptr[i % self.n_rows + 1])
        return self.indices[start:stop], self.values[start:stop]

    def to_dense(self) -> np.ndarray:
        out = np.zeros((self.n_rows, self.n_cols), dtype=np.float32)
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        out[rows, self.indices] = self.values
        return out

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.csr_matrix`` (float32) sharing these arrays."""
        try:
            import scipy.sparse
        except ImportError:
            raise ImportError("sparse output as a matrix needs scipy: pip install 'tokenpool[sparse]' (or "
                              "use the SparseRows parts)", name="scipy") from None  # fmt: skip
        parts = (self.values, self.indices, self.indptr)
        return scipy.sparse.csr_matrix(parts, shape=(self.n_rows, self.n_cols), copy=False)


def check_sparse_options(top_k: Any, threshold: Any) -> tuple[int | None, float]:
    """Validated (top_k, threshold): top_k None or a positive int, threshold a finite number ≥ 0."""
    if top_k is not None and (not is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be a positive int (the non-zeros kept per row) or None, got {top_k!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    try:
        value = float(threshold)
    except OverflowError:  # an int past float's range: not a finite threshold
        value = math.inf
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"threshold must be a finite number ≥ 0, got {threshold!r:.60}")
    return (None if top_k is None else int(top_k)), value


_FLOAT32_ZERO = 2.0**-150  # the largest magnitude float32 rounds to 0 (half its smallest subnormal, ties to even)


def sparsify(dense: Any, *, top_k: int | None = None, threshold: float = 0.0) -> SparseRows:
    """CSR parts of a dense b × V batch: entries with ``|value| > threshold``, and of those the ``top_k``
    largest in magnitude per row (ties broken towards the lower column), column indices ascending. NaN is
    always kept and ranks above every magnitude, ±inf included (as numpy's sort and ``torch.topk`` order it):
    a row holding NaN keeps a NaN under any ``top_k``, never comes out clean. Values are compared as given
    (float64 as float64) and stored as float32: a kept finite value past float32's range is a ValueError."""
    top_k, threshold = check_sparse_options(top_k, threshold)
    check_has_values(dense, "sparsify's rows")  # (a meta tensor; a masked array's mask would go unread)
    array = to_numpy(dense)  # (any library's: torch's bfloat16 and tracked tensors too)
    if array.ndim != 2:
        raise ValueError(f"sparsify needs a 2-D batch (rows × vocabulary), got shape {array.shape}")
    if array.dtype.kind not in "fiub":
        raise TypeError(f"sparsify needs real numbers, got dtype {array.dtype}")
    # ranked in float32 where that is exact (float32 and narrower input), else in float64: float64 values
    # that round to one float32 (or past its range, to inf) are not ties, and large integers stay apart
    rank_type = np.float32 if array.dtype.kind == "f" and array.dtype.itemsize <= 4 else np.float64
    with np.errstate(over="ignore"):  # (long double past float64's range ranks as inf; refused below)
        magnitude = np.abs(array.astype(rank_type, copy=False))
    # NaN is kept and shown, as `pool` shows it (not a clean-looking sparse row)
    keep = magnitude > np.float64(threshold)  # in float64: a Python float is rounded to float32 against float32
    keep |= np.isnan(magnitude)
    if rank_type is np.float64:  # a value float32 stores as 0 (|v| <= 2^-150) is no entry: never an explicit 0
        keep &= ~(magnitude <= _FLOAT32_ZERO)
    if top_k is not None and top_k < array.shape[1]:
        crowded = np.flatnonzero(keep.sum(axis=1) > top_k)
        if crowded.size:
            ranks = [_ranks(keep[crowded], magnitude[crowded])]
            del magnitude  # (the peak: this batch's magnitudes, then its ranks, are gone before the next copies)
            keep[crowded] = _top_k(ranks, top_k)
    rows, cols = np.nonzero(keep)  # row-major: columns ascending within each row
    counts = np.bincount(rows, minlength=array.shape[0])
    indptr = np.zeros(array.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    picked = array[rows, cols]
    with np.errstate(over="ignore"):
        values = picked.astype(np.float32)
    overflow = np.flatnonzero(np.isinf(values) & np.isfinite(picked))
    if overflow.size:  # (float64 input: a finite value past float32's range would be stored as inf)
        at = overflow[0]
        raise ValueError(f"sparsify stores float32 values: row {rows[at]} column {cols[at]} holds "
                         f"{float(picked[at])!r}, beyond float32's range")  # fmt: skip
    return SparseRows(indptr, cols.astype(np.int32), values, int(array.shape[1]))


def _ranks(kept: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """Integers that order as the kept magnitudes (float32 or float64, ≥ 0 or NaN; ``magnitude`` is a copy,
    overwritten): the bits of |value| (+0 < … < inf), above them one NaN (every NaN made the same one, so NaNs
    tie), dropped entries below all (-1)."""
    magnitude[np.isnan(magnitude)] = np.nan
    bits = np.int32 if magnitude.dtype == np.float32 else np.int64
    return np.where(kept, magnitude.view(bits), bits(-1))


def _top_k(held: list[np.ndarray], top_k: int) -> np.ndarray:
    """Which of each row's ranks (``held``'s one array, taken out of it so that it is freed early) are its
    ``top_k`` largest, ties to the lower column."""
    ranks = held.pop()
    last = ranks.shape[1] - top_k
    kth = np.partition(ranks, last, axis=1)[:, last : last + 1]  # the k-th largest per row
    above = ranks > kth
    ties = ranks == kth
    del ranks
    room = top_k - above.sum(axis=1, keepdims=True, dtype=np.int32)
    return above | (ties & (np.cumsum(ties, axis=1, dtype=np.int32) <= room))


def keep_largest(dense: Any, top_k: int) -> np.ndarray:
    """A dense b × V batch with only each row's ``top_k`` largest magnitudes left (`sparsify`'s choice, ties
    included): a SparseEncoder's ``max_active_dims`` on rows that stay dense."""
    return sparsify(dense, top_k=top_k).to_dense()


class CSRBuilder:
    """Collect `SparseRows` batches for arbitrary row positions; `build` returns them in row order."""

    def __init__(self, n_rows: int, n_cols: int) -> None:
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        self._parts: list[tuple[np.ndarray, ...]] = []  # (row positions, counts, indices, values) per batch

    def add(self, rows: Any, batch: SparseRows) -> None:
        """Add ``batch`` whose row j is row ``rows[j]`` of the result."""
        positions = np.asarray(rows).reshape(-1)
        if positions.size and positions.dtype.kind not in "iu":  # (int64 would truncate 1.5 to row 1)
            raise TypeError(f"row positions must be integers, got dtype {positions.dtype}: {positions[:5].tolist()}")
        positions = positions.astype(np.int64, copy=False)
        if positions.size != batch.n_rows:
            raise ValueError(f"{positions.size} row positions for a batch of {batch.n_rows} rows")
        if batch.n_cols != self.n_cols:
            raise ValueError(f"a batch of {batch.n_cols} columns for a matrix of {self.n_cols}")
        self._parts.append((positions, np.diff(batch.indptr), batch.indices, batch.values))

    def build(self) -> SparseRows:
        empty = tuple(np.zeros(0, dtype) for dtype in (np.int64, np.int64, np.int32, np.float32))
        rows, counts, indices, values = map(np.concatenate, zip(*(self._parts or [empty]), strict=True))
        if rows.size != self.n_rows or not np.array_equal(np.sort(rows), np.arange(self.n_rows)):
            raise ValueError(f"the batches cover {rows.size} row positions, not each of "
                             f"0..{self.n_rows - 1} once")
        self._parts = []
        order = np.argsort(rows, kind="stable")
        starts = np.zeros(counts.size, dtype=np.int64)  # where each added row begins in `indices`
        np.cumsum(counts[:-1], out=starts[1:])
        new_counts = counts[order]
        indptr = np.zeros(self.n_rows + 1, dtype=np.int64)
        np.cumsum(new_counts, out=indptr[1:])
        gather = np.repeat(starts[order] - indptr[:-1], new_counts) + np.arange(indptr[-1], dtype=np.int64)
        return SparseRows(indptr, indices[gather], values[gather], self.n_cols)


def collect_rows(
    batches: Iterable[tuple[Any, Any]], n_rows: int, n_cols: int, *, top_k: int | None = None,
    threshold: float = 0.0,
) -> SparseRows:
    """Sparse rows from ``(row positions, dense b × n_cols batch)`` pairs in any row order; each dense batch
    is dropped once sparsified, so memory holds one dense batch and the non-zeros kept so far."""
    top_k, threshold = check_sparse_options(top_k, threshold)
    builder = CSRBuilder(n_rows, n_cols)
    for rows, dense in batches:
        builder.add(rows, sparsify(dense, top_k=top_k, threshold=threshold))
        del dense
    return builder.build()


def concat_rows(parts: Iterable[SparseRows], n_cols: int) -> SparseRows:
    """The rows of ``parts`` one after another (an empty list gives 0 rows)."""
    parts = list(parts)
    if any(part.n_cols != n_cols for part in parts):
        raise ValueError(f"parts over {sorted({p.n_cols for p in parts})} columns, expected {n_cols}")
    starts = list(itertools.accumulate((part.nnz for part in parts), initial=0))  # each part's first non-zero
    indptr = [np.zeros(1, dtype=np.int64)] + [part.indptr[1:] + starts[i] for i, part in enumerate(parts)]
    indices = [p.indices for p in parts] or [np.zeros(0, dtype=np.int32)]
    values = [p.values for p in parts] or [np.zeros(0, dtype=np.float32)]
    return SparseRows(np.concatenate(indptr), np.concatenate(indices), np.concatenate(values), int(n_cols))
