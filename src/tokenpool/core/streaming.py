"""Streamed pooling: pooled rows that grow as blocks of tokens arrive, in O(rows × D) memory.

`RunningPool` keeps, per pooled row (a *unit*: a document, a chunk), the running statistics of its strategies'
`Running` rules (``core/strategies.py``), so a row's tokens may arrive in blocks, in any order, from different
model calls (the long-document window engine), and reading gives the rows `pool` gives for the same tokens.
Any Array API library; the state stays in the blocks' library and device."""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from ..errors import check_int, is_int
from ._backends import device, namespace
from .pooling import check_data, check_options, may_overflow, work_dtypes
from .reductions import rank_total, splade_activation, token_sum
from .strategies import SPECS, SUM_STATISTICS, Running, parse_combination

_LAST_POSITION = int(np.iinfo(np.int64).max)  # positions are recorded as int64


class RunningPool:
    """Running pooled rows: ``units`` rows of ``width`` values per strategy, strategies concatenated in order.

    ``add(unit, tokens, position)`` folds in consecutive tokens of one unit; ``read()`` returns the pooled
    rows (not finished: `finish_vectors` cuts and normalises them). ``reduction`` is SPLADE's ("max" or
    "sum"). ``dtype`` is what the statistics accumulate in (a dtype of the blocks' library, or its name);
    by default the one `pool` uses: float32 for half precision, the library's default float for integers,
    else the blocks' own. A unit that received no token reads as zeros, for every strategy."""

    def __init__(
        self, strategies: Any, units: int, width: int, *, reduction: str = "max", dtype: Any = None
    ) -> None:
        self.members = parse_combination(strategies)
        check_options(False, reduction, self.members)
        self.units, self.width = check_int(units, "units", minimum=0), check_int(width, "width", minimum=0)
        self.reduction = reduction
        self.rules: tuple[Running, ...] = tuple(SPECS[m].running.under(reduction) for m in self.members)
        self._state: dict[tuple[str, str], list[Any]] = {
            (rule.statistic, rule.activation): [None] * self.units for rule in self.rules
        }
        self.counts = np.zeros(self.units, dtype=np.int64)  # tokens pooled per unit
        self._rank_totals = [0] * self.units  # Σ (position + 1), exact
        self._first_at = np.full(self.units, np.iinfo(np.int64).max, dtype=np.int64)
        self._last_at = np.full(self.units, -1, dtype=np.int64)
        # per unit, the positions added so far as sorted disjoint [start, stop) runs, adjacent runs merged
        self._added: list[list[list[int]]] = [[] for _ in range(self.units)]
        self._dtype = dtype
        # the blocks' library, device and type name, fixed by the first block
        self._xp, self._device, self._library = None, None, ""
        self._work: Any = None  # what activations are computed in: `pool`'s accumulation dtype for the blocks
        self._acc: Any = None  # what the statistics accumulate in
        # (statistic, activation, unit) → a float64 sum beside a float32 one that overflowed (`_widen`)
        self._wide: dict[tuple[str, str, int], Any] = {}

    def add(self, unit: int, tokens: Any, position: int = 0) -> None:
        """Fold in ``tokens`` (k×D): unit ``unit``'s tokens number ``position`` … ``position + k - 1``.

        Positions are 0-based over the unit's real tokens, including any it leaves out (a prompt, which is
        simply not added): a token's weightedmean weight is its position + 1, cls and lasttoken take the
        tokens at the smallest and largest position added. Each position is added once (a ValueError names
        one added again: overlapping blocks would count its token twice); order is free."""
        tokens = self._check_block(unit, tokens, position)
        unit, position, k = int(unit), int(position), int(tokens.shape[0])  # (numpy's uint64 would wrap)
        if k == 0:
            return
        if position + k > _LAST_POSITION:
            raise ValueError(f"position {position} is out of range: a unit's positions must stay below "
                             f"{_LAST_POSITION} (this block of {k} tokens ends at {position + k - 1})")  # fmt: skip
        self._claim(unit, position, k)
        xp = self._xp
        for (statistic, activation), slot in self._state.items():
            if statistic == "first" and position >= self._first_at[unit]:
                continue
            if statistic == "last" and position + k - 1 <= self._last_at[unit]:
                continue
            old = slot[unit]
            part = self._part(statistic, activation, tokens, position, self._acc)
            if old is None or statistic in ("first", "last"):
                slot[unit] = part
            else:
                slot[unit] = xp.maximum(old, part) if statistic == "max" else old + part
            self._widen((statistic, activation, unit), old, tokens, position)
        self._first_at[unit] = min(int(self._first_at[unit]), position)
        self._last_at[unit] = max(int(self._last_at[unit]), position + k - 1)
        self._rank_totals[unit] += int(rank_total(position, k))  # (exact: below 2^53)
        self.counts[unit] += k

    def read(self) -> Any:
        """The pooled rows, ``units`` × (width · strategies), in the accumulation dtype of the blocks' library
        (numpy when nothing was added)."""
        if self._xp is None:
            return np.zeros((self.units, self.width * len(self.members)), dtype=self._empty_dtype())
        xp = self._xp
        if not self.units:
            return xp.zeros((0, self.width * len(self.members)), dtype=self._acc, device=self._device)
        parts = [xp.stack([self._row(rule, u) for u in range(self.units)]) for rule in self.rules]
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)

    def _empty_dtype(self) -> np.dtype:
        """What rows read in when no block came: ``dtype`` when numpy's (as a block would check it), else
        float32 (another library's dtype: no block says which library)."""
        dtype = self._dtype
        if dtype is None or not isinstance(dtype, (str, np.dtype, type)):
            return np.dtype(np.float32)
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"dtype {self._dtype!r} is not a dtype of numpy's library") from None
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"dtype must be a real floating dtype to accumulate in, got {self._dtype!r}")
        return dtype

    def _claim(self, unit: int, start: int, k: int) -> None:
        """Record positions ``start … start + k - 1`` of ``unit`` as added; ValueError if any already was."""
        runs, stop = self._added[unit], start + k
        i = bisect.bisect_right(runs, [start, math.inf])  # runs[:i] start at or before ``start``
        for j in (i - 1, i):
            if 0 <= j < len(runs) and runs[j][0] < stop and start < runs[j][1]:
                clash = max(start, runs[j][0])
                raise ValueError(f"position {clash} of unit {unit} was already added (this block covers positions "
                                 f"{start}..{stop - 1}): each position is added once")  # fmt: skip
        if i > 0 and runs[i - 1][1] == start:  # extends the run before it
            runs[i - 1][1] = stop
            if i < len(runs) and runs[i][0] == stop:
                runs[i - 1][1] = runs.pop(i)[1]
        elif i < len(runs) and runs[i][0] == stop:
            runs[i][0] = start
        else:
            runs.insert(i, [start, stop])

    def _row(self, rule: Running, unit: int) -> Any:
        count = int(self.counts[unit])
        value = self._state[rule.statistic, rule.activation][unit]
        if count == 0:
            return self._xp.zeros((self.width,), dtype=self._acc, device=self._device)
        ranks = max(float(self._rank_totals[unit]), 1.0)
        divisor = {"count": count, "sqrt_count": math.sqrt(count), "rank_total": ranks}.get(rule.divisor)
        row = value if divisor is None else value / divisor
        wide = self._wide.get((rule.statistic, rule.activation, unit))
        if wide is None:
            return row
        with np.errstate(over="ignore"):  # (a mean/√n past float32's range is inf: the true answer, as `pool`'s)
            redone = self._xp.astype(wide if divisor is None else wide / divisor, self._acc)
        return self._xp.where(self._xp.isfinite(row), row, redone)  # (`pool`'s rule: finite values keep their bits)

    def _widen(self, key: tuple[str, str, int], old: Any, tokens: Any, position: int) -> None:
        """Add the block to the unit's float64 sum, which starts (from ``old``, the float32 sum before the block)
        once its float32 sum holds NaN or inf: a float32 sum of values near 3.4e38 overflows where their mean
        does not. Reading takes the float64 sum where the float32 one is not finite, as `pool` redoes rows."""
        statistic, activation, unit = key
        xp, wide = self._xp, self._wide.get(key)
        if wide is None and not self._overflowed(statistic, self._state[statistic, activation][unit], tokens):
            return
        part = self._part(statistic, activation, tokens, position, xp.float64)
        if wide is None and old is not None:
            wide = xp.astype(old, xp.float64)
        self._wide[key] = part if wide is None else wide + part

    def _overflowed(self, statistic: str, total: Any, tokens: Any) -> bool:
        """Whether a float32 running sum holds NaN or inf after the block ``tokens``: one check of its D values
        (on CUDA a synchronisation), where `pool` would check its result (`may_overflow`)."""
        xp = self._xp
        return may_overflow(xp, statistic, total, tokens) and not bool(xp.all(xp.isfinite(total)))

    def _part(self, statistic: str, activation: str, tokens: Any, position: int, acc: Any) -> Any:
        """This block's contribution to one statistic, in ``acc``."""
        xp = self._xp
        if statistic in SUM_STATISTICS:  # the activation goes on every token before summing
            values = self._activate(activation, tokens)
            if statistic == "sum":
                return token_sum(xp, values, dtype=acc)  # (summed in acc: no float32 copy of a block)
            # ranks position + 1 …, offset after the arange: torch's float32 arange from past 2^53 has a wrong length
            ranks = xp.arange(int(tokens.shape[0]), dtype=acc, device=self._device) + float(position + 1)
            # (a product and a sum: torch.autocast runs a matmul in half precision, where Σ rank·h overflows)
            return token_sum(xp, ranks[:, None] * xp.astype(values, acc))
        # non-decreasing activations commute with max, first and last
        pick = 0 if statistic == "first" else -1
        # (max in the work dtype: torch has no CPU max for float8 or uint16/32/64 blocks, which `pool` promotes too)
        chosen = xp.max(self._activate("identity", tokens), axis=0) if statistic == "max" else tokens[pick, :]
        return xp.astype(self._activate(activation, chosen), acc)

    def _activate(self, activation: str, values: Any) -> Any:
        xp = self._xp
        values = values if values.dtype == self._work else xp.astype(values, self._work)
        if activation == "identity":
            return values
        return splade_activation(xp, values)

    def _check_block(self, unit: Any, tokens: Any, position: Any) -> Any:
        if not is_int(unit) or not 0 <= unit < self.units:
            raise IndexError(f"unit must be an int in 0..{self.units - 1}, got {unit!r}")
        check_int(position, "position", minimum=0)
        tokens = check_data(tokens, "tokens")
        if tokens.ndim != 2 or tokens.shape[1] != self.width:
            raise ValueError(f"tokens must be k×{self.width} (k tokens of width {self.width}), got shape "
                             f"{tuple(tokens.shape)}")  # fmt: skip
        xp = namespace(tokens)
        if self._xp is None:
            self._bind(xp, tokens)
        elif xp is not self._xp:
            raise TypeError(f"every block must come from one array library: got {type(tokens).__name__} after "
                            f"{self._library}")  # fmt: skip
        return tokens

    def _bind(self, xp: Any, tokens: Any) -> None:
        """Fix the library, device and dtypes on the first block."""
        _, self._work = work_dtypes(xp, tokens)
        dtype = self._dtype
        if isinstance(dtype, str):
            dtype = getattr(xp, dtype, None) if dtype.isidentifier() else None
            if dtype is None:
                raise ValueError(f"dtype {self._dtype!r} is not a dtype of {type(tokens).__name__}'s library")
        try:
            floating = dtype is None or xp.isdtype(dtype, "real floating")
        except (TypeError, AttributeError):  # another library's dtype: numpy's for torch blocks, or torch's for numpy's
            floating = False
        if not floating:
            raise ValueError(f"dtype must be a real floating dtype of {type(tokens).__name__}'s library to accumulate "
                             f"in, got {self._dtype!r}")
        self._acc = self._work if dtype is None else dtype
        self._xp, self._device, self._library = xp, device(tokens), type(tokens).__name__


__all__ = ["RunningPool"]
