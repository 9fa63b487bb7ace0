"""Compiled row kernels for the numpy fast paths, when numba is installed (`pip install tokenpool[fast]`).

numpy has no segment reduction: `core/fast.py` reduces each row with one numpy call, whose loop loads, adds and
stores a D-wide accumulator per token and runs one row per call. These kernels reduce a whole group of rows in
one call that releases the GIL (so the thread pool's groups run in parallel) with a vectorised loop per token,
reading each real token once. They sum each column sequentially, token after token, as numpy's einsum does
(the same bits for D ≥ 2; weighted sums within one rounding, as einsum may fuse the multiply-add); max is
exact. numba is imported on first use (`core/fast.py` asks only for inputs of `COMPILED_ELEMENTS` or more),
never by ``import tokenpool``; without it, or with `ENABLED` False, the numpy kernels run. The first use on a
machine compiles both dtypes (seconds); numba caches the machine code on disk for later processes.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import numpy as np

ENABLED = True  # tests turn this off to run the numpy kernels on the same inputs

_lock = threading.Lock()
_kernels: Any = None
_tried = False


def kernels() -> Any | None:
    """The compiled kernels (`Kernels`), or None when numba is missing, fails to import, or `ENABLED` is off."""
    global _kernels, _tried
    if not ENABLED:
        return None
    if _tried:
        return _kernels
    with _lock:
        if not _tried:
            _kernels = _build() if importlib.util.find_spec("numba") is not None else None
            _tried = True
    return _kernels


def _build() -> Any | None:
    try:
        import numba
    except Exception:  # a numba that does not match this numpy: the numpy kernels still work
        return None
    for cache in (True, False):  # (caching needs a writable folder: numba's own, or the user's cache)
        try:
            return Kernels(numba, cache)
        except Exception:  # pragma: no cover - a numba or LLVM that cannot compile here
            continue
    return None  # pragma: no cover


class Kernels:
    """Row-group reductions of a flat T×D table: row r is ``table[starts[r] : starts[r] + counts[r]]``; each
    kernel writes ``out[r]`` for every r in ``rows`` (non-empty rows only) and no other row. Compiled for
    C-contiguous float32 and float64 tables and int64 index arrays when built (so a failure shows here, once).
    The input table is typed read-only, so read-only arrays (``np.load(mmap_mode="r")``, ``np.frombuffer``) and
    writable ones (which numba passes as read-only) run the same machine code; the output stays writable."""

    DTYPES = (np.float32, np.float64)

    def __init__(self, numba: Any, cache: bool) -> None:
        types, index = numba.types, numba.types.int64[::1]
        sums, weighted = [], []
        for dtype in (types.float32, types.float64):
            table, out = types.Array(dtype, 2, "C", readonly=True), dtype[:, ::1]  # (out: the table's dtype)
            sums.append(types.void(table, index, index, index, out))
            weighted.append(types.void(table, index, index, index, dtype[::1], index, out))

        def jit(signatures: list, function: Any) -> Any:
            return numba.njit(signatures, nogil=True, cache=cache, boundscheck=False)(function)

        self.sum_rows = jit(sums, _sum_rows)
        self.max_rows = jit(sums, _max_rows)
        self.weighted_rows = jit(weighted, _weighted_rows)


# The kernels below are compiled by numba (plain Python loops, run as machine code); in pure Python they would
# be far slower than numpy, so they are never called uncompiled.


def _sum_rows(table, starts, counts, rows, out):  # pragma: no cover - runs compiled
    width = table.shape[1]
    for r in rows:
        start = starts[r]
        acc = out[r]
        for j in range(width):
            acc[j] = 0
        for t in range(start, start + counts[r]):
            for j in range(width):
                acc[j] += table[t, j]


def _weighted_rows(table, starts, counts, rows, ranks, rank_base, out):  # pragma: no cover - runs compiled
    width = table.shape[1]
    for r in rows:
        start, first = starts[r], rank_base[r]
        acc = out[r]
        for j in range(width):
            acc[j] = 0
        for k in range(counts[r]):
            weight = ranks[first + k]
            for j in range(width):
                acc[j] += weight * table[start + k, j]


def _max_rows(table, starts, counts, rows, out):  # pragma: no cover - runs compiled
    for r in rows:
        start = starts[r]
        acc = out[r]
        acc[:] = table[start]
        for t in range(start + 1, start + counts[r]):
            np.maximum(acc, table[t], acc)  # propagates NaN, like numpy's (a plain `if a > m` loop did not vectorise)
