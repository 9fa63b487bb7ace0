"""Fast paths for numpy and torch: read only the real tokens, never build a B×L×D temporary.

`make_plan` looks at the B×L ``keep`` mask once (O(B×L), on the host: one device→host copy of the mask on
CUDA) and finds, per row, the span of its pooled tokens, or their positions when the row has holes. Each
strategy then reduces slices of the hidden states in place of the padded tensor, so padding is never read:
NaN or inf there cannot leak. Rows with holes and half-precision inputs are processed in chunks of at most
`_CHUNK_BYTES` (or one output's worth, if larger) of float32 copies. torch fast paths are differentiable.

Threads: the numpy kernels (also used for float32/float64 torch CPU tensors, but for their sums and packed
max, which run torch's kernels on its own threads: `_bag_table`) reduce groups of rows in parallel on a thread
pool (numpy releases the GIL inside its reductions, as do `core/compiled.py`'s numba kernels, which reduce a
whole group per call for large inputs when numba is installed); each row is reduced by exactly the same calls
whichever thread runs it, so results are bit-identical for every thread count (`get_num_threads`). torch
kernels (half precision, autograd, CUDA) use torch's own intra-op threads."""

from __future__ import annotations

import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import check_int
from . import compiled
from ._backends import in_torch_transform, to_numpy
from .compiled import TOKEN_BLOCK
from .masks import host_view
from .reductions import rank_total
from .strategies import SPECS, Pooling

_CHUNK_BYTES = 1 << 20
# Below this many elements read, one thread: starting the others costs more than it saves.
_PARALLEL_ELEMENTS = 1 << 18
# From this many elements read (8 MiB of float32), `core/compiled.py`'s kernels where numba is installed: below,
# the ~0.6 s import of numba (once per process) is not repaid by the microseconds saved.
COMPILED_ELEMENTS = 1 << 21

_threads: int | None = None
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_executor_pid = 0
_executor_lock = threading.Lock()


def set_num_threads(threads: int | None) -> None:
    """Threads for the numpy pooling kernels; None = follow torch.get_num_threads() (or the CPU count)."""
    global _threads
    _threads = check_int(threads, "threads", optional=True)


def get_num_threads() -> int:
    """The thread count the numpy pooling kernels use now."""
    if _threads is not None:
        return _threads
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    return usable_cpus()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pool_executor(threads: int) -> ThreadPoolExecutor:
    """The kernels' thread pool, at least ``threads`` wide. A forked child gets its own: it inherits the parent's
    pool without its threads, and work queued there would wait for ever."""
    global _executor, _executor_size, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_size < threads or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenpool-pool")
            _executor_size, _executor_pid = threads, os.getpid()
        return _executor


def _token_bounds(sizes: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """[a, b) bounds of `compiled.token_bounds`' groups of rows (token counts ``sizes``), for the thread pool."""
    bounds = compiled.token_bounds(sizes, parts).tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def make_plan(hidden: Any, keep: Any, work_dtype: Any, real: Any = None) -> RowPlan | None:
    """A fast plan for B×L×D ``hidden`` (numpy or torch, floating point), or None for the generic path;
    ``real``: the mask before prompt exclusion (default ``keep``), which weightedmean ranks count from."""
    backend = _backend(hidden)
    if backend is None or backend[1].shape[0] == 0:
        return None
    spans = Spans.from_mask(to_numpy(keep))  # zero-copy on CPU; on CUDA the one device→host copy of a call
    if real is not None and real is not keep:  # the left-out prompt tokens precede every kept token
        spans.rank_base = np.count_nonzero(to_numpy(real), axis=1) - spans.counts
        spans.prompted = True
    return _padded_plan(backend, hidden, spans, work_dtype)


def host_plan(hidden: Any, attention_mask: Any, work_dtype: Any) -> RowPlan | None:
    """`make_plan` for a mask read where it lies (numpy, an untracked CPU tensor, or None: all real), checked and
    analysed in one compiled pass, for inputs large enough for `core/compiled.py`'s kernels once a call has built
    them (so a padded batch of few real tokens never imports numba for this); None where that does not apply,
    and for a mask with holes or a value other than 0/1 (`pool` then checks it and calls `make_plan`). Skips the
    boolean copy and its analysis: ~0.1 ms of a 1 ms pool right after a large read (issue 19, stop 37)."""
    backend = _backend(hidden)
    if backend is None or not backend[0].writes_rows or backend[1].size < COMPILED_ELEMENTS:
        return None
    rows, length = backend[1].shape[:2]
    if attention_mask is None:
        spans = Spans(np.full(rows, length), np.zeros(rows, np.int64), {})
        return _padded_plan(backend, hidden, spans, work_dtype) if rows else None
    kernels, mask = compiled.built(), host_view(attention_mask)  # (numba is imported by a call that reads enough)
    if kernels is None or mask is None or mask.shape != (rows, length) or mask.dtype not in kernels.MASK_DTYPES:
        return None
    starts, counts = np.empty(rows, np.int64), np.empty(rows, np.int64)
    total = kernels.mask_spans(np.ascontiguousarray(mask), starts, counts) if rows else -1
    if total < 0:  # a hole, or a value other than 0/1
        return None
    return _padded_plan(backend, hidden, Spans(counts, starts, {}, total=total), work_dtype)


@functools.lru_cache(maxsize=64)
def _row_bases(rows: int, length: int) -> np.ndarray:
    """Where each row of a padded batch starts in its flat (B·L)×D view (read-only: shared between calls)."""
    bases = np.arange(rows, dtype=np.int64) * length
    bases.flags.writeable = False
    return bases


def _index_array(values: np.ndarray) -> np.ndarray:
    """``values`` as the compiled kernels' index arrays are typed: C-contiguous, writable int64 (a packed plan's
    starts are a view of the caller's offsets, which may be read-only: pyarrow's, ``np.load(mmap_mode="r")``)."""
    if values.dtype == np.int64 and values.flags.c_contiguous and values.flags.writeable:
        return values
    return np.array(values, dtype=np.int64)


@functools.lru_cache(maxsize=8)
def _all_rows(rows: int) -> np.ndarray:
    """0, 1, …, rows − 1, shared between calls (never written, but writable: as the kernels' signatures)."""
    return np.arange(rows, dtype=np.int64)


def _padded_plan(backend: tuple[Any, Any, Any], source: Any, spans: Spans, work_dtype: Any) -> RowPlan:
    """The `RowPlan` of a padded batch (row i's table is ``hidden[i]``) whose pooled tokens are ``spans``."""
    ops, hidden, wrap = backend
    flat = ops.flat_view(hidden)  # (B·L)×D view, or None when the layout does not allow one
    bases = _row_bases(hidden.shape[0], hidden.shape[1])
    bag = functools.partial(_bag_table, ops, flat, source, lambda torch_ops: torch_ops.flat_view(source))
    return RowPlan(ops, spans, lambda i: hidden[i], flat, bases, ops.dtype(work_dtype), wrap, bag)


def packed_plan(
    tokens: Any, cu_seqlens: np.ndarray, skip: np.ndarray | None, work_dtype: Any, lengths: np.ndarray | None = None
) -> RowPlan | None:
    """A fast plan for T×D packed ``tokens`` (row i = ``tokens[cu[i]:cu[i+1]]``, first ``skip[i]`` left out;
    ``skip`` None: no prompt; ``lengths``: the rows' lengths where the caller has them)."""
    backend = _backend(tokens)
    if backend is None or len(cu_seqlens) < 2:
        return None
    ops, table, wrap = backend  # (table: a numpy view of CPU tokens, else the tokens themselves)
    spans = Spans.from_offsets(cu_seqlens, skip, lengths)
    flat = table if ops.is_flat(table) else None
    bases = np.zeros(len(spans.counts), dtype=np.int64)
    bag = functools.partial(
        _bag_table, ops, flat, tokens, lambda torch_ops: tokens if torch_ops.is_flat(tokens) else None
    )
    return RowPlan(ops, spans, lambda i: table, flat, bases, ops.dtype(work_dtype), wrap, bag, tokens)


def _bag_table(ops: Any, flat: Any, source: Any, torch_flat: Any) -> tuple[Any, Any] | None:
    """(torch kernels, flat torch table) for the sums by ``embedding_bag``, or None: torch's own tables, and
    untracked float32/float64 CPU tensors that the numpy kernels read otherwise (``torch_flat(ops)`` gives
    their flat view). Their sums run on torch's OpenMP threads, which a model's forward pass has just used:
    right after a torch op, our own threads wait for torch's still-spinning workers (a packed mean at 2.1×
    the floor, against 0.94× by ``embedding_bag``; issue 19, benchmarks/RESULTS.md stop 35)."""
    if flat is None:
        return None
    if ops.has_bag:
        return ops, flat
    if ops.wraps_torch and TORCH_CPU_ON_TORCH_THREADS:
        torch_ops = _TorchOps(sys.modules["torch"], source.device)
        table = torch_flat(torch_ops)
        return None if table is None else (torch_ops, table)
    return None


class Spans:
    """Where each row's pooled tokens lie in its table: ``[starts, stops)`` or, for rows with holes, ``holes``."""

    def __init__(self, counts: np.ndarray, starts: np.ndarray, holes: dict[int, np.ndarray], keep: Any = None,
                 total: int | None = None):  # fmt: skip
        self.counts = counts if counts.dtype == np.int64 else counts.astype(np.int64)  # read-only: views are fine
        self.starts = starts if starts.dtype == np.int64 else starts.astype(np.int64)
        self.holes = holes
        self.keep = keep  # host B×L mask of a padded batch (to list flat positions quickly), else None
        self.rank_base = np.zeros(len(counts), np.int64)  # weightedmean weights are rank_base + 1 … rank_base + n
        self.prompted = False  # whether rank_base was set (prompt tokens left out): else it is all zeros
        self.total = total  # Σ counts, where the analysis found it on the way (else summed when asked)

    @classmethod
    def from_mask(cls, keep: np.ndarray) -> Spans:
        """Analyse a host boolean B×L mask in O(B×L)."""
        rows, length = keep.shape
        if length == 0:  # no tokens at all: every row is empty
            return cls(np.zeros(rows, np.int64), np.zeros(rows, np.int64), {}, keep)
        flat = np.ascontiguousarray(keep).reshape(-1)
        first = np.argmax(keep, axis=1)
        # the last True of each row, from argmax over a reversed copy (a strided reversed argmax costs ~10x more)
        last = length - 1 - np.argmax(flat[::-1].copy().reshape(rows, length), axis=1)[::-1]
        nonempty = flat[np.arange(rows) * length + first]
        spans = np.where(nonempty, last - first + 1, 0)
        if int(spans.sum()) == np.count_nonzero(flat):  # no row has a hole: its span is its count
            return cls(spans, first, {}, keep)
        counts = np.count_nonzero(keep, axis=1)
        holey = np.flatnonzero(nonempty & (spans != counts))
        holes = {int(i): np.flatnonzero(keep[i]) for i in holey}
        return cls(counts, first, holes, keep)

    @classmethod
    def from_offsets(cls, cu_seqlens: np.ndarray, skip: np.ndarray | None, lengths: np.ndarray | None = None) -> Spans:
        """Packed rows ``[cu[i], cu[i+1])`` with the first ``skip[i]`` tokens of each left out (None: none);
        ``lengths``: their differences, where the caller has them."""
        lengths = cu_seqlens[1:] - cu_seqlens[:-1] if lengths is None else lengths
        if skip is None or not skip.any():  # no prompt: the common case, without three more array operations
            return cls(lengths, cu_seqlens[:-1], {}, total=int(cu_seqlens[-1]) - int(cu_seqlens[0]))
        skip = np.minimum(skip, lengths)
        spans = cls(lengths - skip, cu_seqlens[:-1] + skip, {})
        spans.rank_base = skip.astype(np.int64)
        spans.prompted = True
        return spans

    def nonempty(self) -> list[tuple[int, int, int]]:
        """(row, start, stop) of every non-empty row without holes, as Python ints."""
        if not self.holes and np.logical_and.reduce(self.counts):  # every row (two C calls, no wrapper)
            rows = np.arange(len(self.counts), dtype=np.int64)
        else:
            rows = np.flatnonzero(self.counts)
            rows = rows[~np.isin(rows, list(self.holes))] if self.holes else rows
        starts = self.starts[rows]
        return list(zip(rows.tolist(), starts.tolist(), (starts + self.counts[rows]).tolist(), strict=True))

    def last(self) -> np.ndarray:
        """Position of each row's last pooled token (its first for empty rows)."""
        last = self.starts + np.maximum(self.counts - 1, 0)
        for i, positions in self.holes.items():
            last[i] = positions[-1]
        return last

    def flat_positions(self, bases: np.ndarray) -> np.ndarray:
        """Positions of all pooled tokens, row after row, in the flat table (row i's table starts at bases[i])."""
        if self.keep is not None:
            return np.flatnonzero(self.keep)  # bases are i·L for a padded batch
        return self._runs(bases + self.starts)

    def ranks(self) -> np.ndarray:
        """Each pooled token's weightedmean weight (rank_base + 1 … rank_base + n), row after row."""
        return self._runs(self.rank_base + 1)

    def _runs(self, firsts: np.ndarray) -> np.ndarray:
        """firsts[i], firsts[i] + 1, … (counts[i] values) for every row i, row after row."""
        offsets = np.cumsum(self.counts) - self.counts
        return np.arange(int(self.counts.sum())) + np.repeat(firsts - offsets, self.counts)

    def rank_sums(self) -> np.ndarray:
        """Σ of each row's weightedmean weights (float64)."""
        if not self.prompted:  # 1 + … + n, exact in int64 then float64 (the same values, three calls fewer)
            return rank_total(0, self.counts)
        return rank_total(self.rank_base.astype(np.float64), self.counts.astype(np.float64))


class RowPlan:
    """Per-call analysis of the mask, shared by all strategies of one `pool` call: pools rows given as spans
    of 2-D tables (``table(i)`` is row i's table, ``flat`` all of them at once)."""

    def __init__(
        self, ops: Any, spans: Spans, table: Any, flat: Any, bases: np.ndarray, work_dtype: Any, wrap: Any,
        bag: Any, source: Any = None,
    ):
        self.ops, self.spans, self.table, self.flat, self.bases = ops, spans, table, flat, bases
        self.work, self.wrap = work_dtype, wrap
        self.rows = len(spans.counts)
        self._threads: int | None = None
        self.source = source  # packed tokens as given (a torch tensor may take one scatter kernel for max)
        self.bag = bag  # () -> (torch kernels, flat torch table) for the sums, or None (`_bag_table`)
        sample = table(0) if self.rows else None
        self.dtype = None if sample is None else sample.dtype
        self.width = 0 if sample is None else sample.shape[-1]

    def threads(self) -> int:
        """`get_num_threads`, asked once per plan (one pool call): torch's count is a call into torch."""
        if self._threads is None:
            self._threads = get_num_threads()
        return self._threads

    def tokens(self) -> int:
        """How many tokens are pooled, all rows together."""
        if self.spans.total is None:
            self.spans.total = int(np.add.reduce(self.spans.counts))
        return self.spans.total

    def pool(self, strategy: Pooling, reduction: str) -> Any | None:
        if self.rows == 0:
            return None
        result = self._pool(strategy, reduction)
        return result if self.wrap is None or result is None else self.wrap(result)

    def _pool(self, strategy: Pooling, reduction: str) -> Any | None:
        """The strategy's `Running` rule (core/strategies.py) on this plan's rows."""
        rule = SPECS[strategy].running.under(reduction)
        activate = rule.activation == "log1p_relu"
        if rule.activation not in ("identity", "log1p_relu"):  # pragma: no cover - a rule without a kernel
            return None
        if rule.statistic in ("first", "last"):
            picked = self._pick(self.spans.starts if rule.statistic == "first" else self.spans.last())
            return self.ops.log1p_relu(picked, own=True) if activate else picked
        if rule.statistic == "max":
            # non-decreasing activations commute with max: the activation of the max is the max of activations
            return self._max(activate)
        if rule.statistic == "sum" and activate:
            ops = self.ops
            summed = self._per_row(lambda _r, _k, chunk: ops.sum0(ops.log1p_relu(ops.cast(chunk, self.work))),
                                   ops.add, convert=True)  # fmt: skip
            return summed if rule.divisor == "one" else ops.scale_rows(summed, self._divisor(rule.divisor))
        if rule.statistic in ("sum", "ranked_sum"):
            return self._weighted_sum(rule.statistic == "ranked_sum", self._divisor(rule.divisor))
        return None  # pragma: no cover - a statistic without a kernel takes the generic path

    def _divisor(self, divisor: str) -> np.ndarray:
        """1 / each row's divisor (float64); empty rows divide by 1."""
        if divisor == "count":  # (int64 counts promote to float64 exactly: no astype call)
            return 1.0 / np.maximum(self.spans.counts, 1)
        if divisor == "sqrt_count":
            return 1.0 / np.sqrt(np.maximum(self.spans.counts, 1))
        if divisor == "rank_total":
            return 1.0 / np.maximum(self.spans.rank_sums(), 1.0)
        return np.ones(self.rows)

    # -- strategies -------------------------------------------------------------------------------------
    def _pick(self, positions: np.ndarray) -> Any:
        """One token per row (CLS / last token); empty rows give zeros."""
        ops = self.ops
        full = bool(np.logical_and.reduce(self.spans.counts))  # the common case: no row to zero
        nonempty = None if full else self.spans.counts > 0
        if not full and not nonempty.any():
            return ops.finish(ops.rows_out(self.rows, self.width, self.work, self.table(0)))
        if not full:
            positions = np.where(nonempty, positions, 0)  # any valid index: empty rows are zeroed below
        if self.flat is not None:
            picked = ops.take(self.flat, self.bases + positions)
        else:
            picked = ops.stack([self.table(i)[int(p)] for i, p in enumerate(positions.tolist())])
        picked = ops.cast(picked, self.work)
        return picked if full else ops.where_rows(nonempty, picked)

    def _weighted_sum(self, weighted: bool, scale: np.ndarray) -> Any:
        """Σ w·h per row times ``scale`` (w = the ranks, or 1): mean, mean/√n and the position-weighted mean."""
        ops = self.ops
        convert = self.dtype != self.work
        kernels = self._compiled(convert)
        bag = None if convert or self._own_threads(kernels) else self.bag()
        if bag is not None:  # one embedding_bag over every row, on torch's threads
            bag_ops, table = bag
            positions = self.spans.flat_positions(self.bases)
            ranks = self.spans.ranks() if weighted else None
            summed = bag_ops.bag_sum(table, positions, self.spans.counts, ranks)
            return ops.scale_rows(summed if bag_ops is ops else summed.numpy(), scale)

        def reduce_chunk(row: int, rank0: int, chunk: Any) -> Any:
            chunk = ops.cast(chunk, self.work)
            if not weighted:
                return ops.sum0(chunk)
            first = int(self.spans.rank_base[row]) + rank0 + 1
            return ops.sum0(chunk, ops.arange(first, first + chunk.shape[0], self.work))

        if kernels is not None and not self.spans.holes:  # every row in one compiled call, scaled there
            factors = np.ascontiguousarray(scale, dtype=self.work)
            if not weighted:
                return self._compiled_rows(kernels, "sum_rows", factors)
            bases = _index_array(self.spans.rank_base)
            return self._compiled_rows(kernels, "weighted_rows", self._rank_table(), bases, factors)
        into = None
        if ops.writes_rows and not convert:  # whole rows straight into the output: one kernel call per row
            ranks, bases = (self._rank_table(), self.spans.rank_base.tolist()) if weighted else (None, None)

            def into(out: Any, row: int, chunk: Any) -> None:
                weights = None if ranks is None else ranks[bases[row] : bases[row] + chunk.shape[0]]
                ops.sum_into(out, row, chunk, weights)

        return ops.scale_rows(self._per_row(reduce_chunk, ops.add, convert=convert, into=into), scale)

    def _rank_table(self) -> Any:
        """1, 2, … up to the largest weightedmean weight of any row, in the work dtype (sliced per row)."""
        ends = self.spans.rank_base + self.spans.counts if self.spans.prompted else self.spans.counts
        top = int(np.maximum.reduce(ends, initial=0))
        return self.ops.arange(1, top + 1, self.work)

    def _max(self, activate: bool) -> Any:
        ops = self.ops
        # the max of exact float32 copies is the copy of the max: convert first where half-precision math is slow
        convert = self.dtype != self.work and not ops.fast_half
        kernels = self._compiled(convert)
        on_torch_threads = ops.wraps_torch and TORCH_CPU_ON_TORCH_THREADS and not self._own_threads(kernels)
        one_thread = not ops.threaded or self.threads() == 1
        wanted = self.source is not None and (on_torch_threads or kernels is None and one_thread)
        segments = _TorchSegments.of(self.source, self.spans) if wanted else None
        if segments is not None:
            # torch's scatter kernel: 1.7x faster than numpy's per-row max at 1 thread (2.7x in bfloat16), not
            # at 2; on a CPU tensor it runs on torch's threads (docs/performance.md, stops 35-36)
            result = segments.max(self.rows, self.width)
            result = ops.cast(result.numpy() if ops.writes_rows else result, self.work)
            return ops.log1p_relu(result, own=True) if activate else result
        if kernels is not None and not self.spans.holes:  # every row in one compiled call
            result = self._compiled_rows(kernels, "max_rows")
        else:
            result = self._per_row(
                lambda _r, _k, chunk: ops.max0(ops.cast(chunk, self.work) if convert else chunk), ops.maximum,
                convert=convert, dtype=self.work if convert else self.dtype,
                into=ops.max_into if ops.writes_rows and not convert else None,
            )  # fmt: skip
        result = ops.cast(result, self.work)
        return ops.log1p_relu(result, own=True) if activate else result

    # -- row iteration ----------------------------------------------------------------------------------
    def _per_row(self, reduce_chunk: Any, combine: Any, *, convert: bool, dtype: Any = None, into: Any = None) -> Any:
        """Reduce every row chunk by chunk; ``convert`` bounds the chunks, as each becomes a float32 copy.
        ``into(out, row, tokens)``, when given, reduces a whole row without holes straight into ``out``."""
        ops = self.ops
        limit = self._chunk_tokens() if convert else None
        rows = self.spans.nonempty()  # (row, start, stop) of the rows without holes
        sizes = np.fromiter((e - s for _, s, e in rows), dtype=np.int64, count=len(rows))
        out = ops.rows_out(self.rows, self.width, self.work if dtype is None else dtype, self.table(0))

        def reduce_rows(rows: list[tuple[int, int, int]]) -> None:
            for i, start, stop in rows:
                table = self.table(i)
                if into is not None:
                    into(out, i, table[start:stop])
                elif limit is None or stop - start <= limit:
                    ops.put(out, i, reduce_chunk(i, 0, table[start:stop]))
                else:
                    ops.put(out, i, self._fold(reduce_chunk, combine, i, table[start:stop], limit))

        parts = self._parts(sizes) if ops.threaded else 1
        self._on_pool([rows[a:b] for a, b in _token_bounds(sizes, parts)] if parts > 1 else [rows], reduce_rows)
        for i, positions in self.spans.holes.items():
            folded = self._fold(reduce_chunk, combine, i, self.table(i), self._chunk_tokens(), positions)
            ops.put(out, i, folded)
        return ops.finish(out)

    def _compiled_rows(self, kernels: Any, name: str, *extra: Any) -> np.ndarray:
        """B×D rows of `core/compiled.py`'s kernel ``name`` (its arguments after the rows: ``extra``) over a plan
        without holes; empty rows come out as zeros. One call, in parts on numba's threads where it has them (the
        cut made there), else the parts on our thread pool."""
        packed = self.source is not None  # (`packed_plan` gives its source; its bases are 0)
        starts = _index_array(self.spans.starts if packed else self.bases + self.spans.starts)
        counts = _index_array(self.spans.counts)  # (each row's first position in the flat table, its tokens)
        rows, out = _all_rows(self.rows), np.empty((self.rows, self.width), dtype=self.dtype)
        parts = self._parts(counts)
        if parts > 1 and not kernels.parallel:
            runs = [rows[a:b] for a, b in _token_bounds(counts, parts)]
            self._on_pool(runs, lambda part: kernels.run(name, 1, self.flat, starts, counts, part, *extra, out))
        else:
            kernels.run(name, parts, self.flat, starts, counts, rows, *extra, out)
        return out

    def _parts(self, sizes: np.ndarray) -> int:
        """Into how many parts of about equal token counts to cut rows of ``sizes`` tokens: one per thread, or 1
        below `_PARALLEL_ELEMENTS` read (starting the other threads would cost more than it saves)."""
        threads = self.threads()
        if threads < 2 or len(sizes) < 2:
            return 1
        tokens = self.tokens() if len(sizes) == self.rows else int(sizes.sum())
        return 1 if tokens * self.width < _PARALLEL_ELEMENTS else min(threads, len(sizes))

    def _on_pool(self, parts: list, work: Any) -> None:
        """``work(part)`` for every part, the first on this thread and the others on the pool. Every row is
        written by one thread into its own slot of the output: no two threads share memory."""
        futures = [_pool_executor(len(parts)).submit(work, part) for part in parts[1:]]
        work(parts[0])
        for future in futures:
            future.result()

    def _own_threads(self, kernels: Any) -> bool:
        """Whether the compiled ``kernels`` run this call without our thread pool (on numba's threads, or on this
        one): then they pool untracked torch CPU tensors too, at 0.9-0.95x the time of torch's kernels, right
        after a torch op as well (stop 36). Our pool's threads wait for torch's spinning ones (`_bag_table`)."""
        return kernels is not None and (kernels.parallel or self.threads() == 1)

    def _compiled(self, convert: bool) -> Any | None:
        """`core/compiled.py`'s kernels when they apply: numpy rows read in their own dtype from a C-contiguous flat
        table, at least `COMPILED_ELEMENTS` of them (else None: the numpy kernels run). Read-only tables
        (``np.load(mmap_mode="r")``, ``np.frombuffer``) take them too: the kernels read a read-only table type."""
        flat = self.flat
        if convert or not self.ops.writes_rows or flat is None or not flat.flags.c_contiguous:
            return None
        if flat.dtype not in compiled.Kernels.DTYPES or self.tokens() * self.width < COMPILED_ELEMENTS:
            return None
        return compiled.kernels()

    def _fold(
        self, reduce_chunk: Any, combine: Any, row: int, tokens: Any, limit: int, positions: Any = None
    ) -> Any:
        """``reduce_chunk`` over chunks of at most ``limit`` of ``tokens`` (or of those at ``positions``),
        combined in order."""
        total = None
        for begin in range(0, len(tokens) if positions is None else len(positions), limit):
            end = begin + limit
            chunk = tokens[begin:end] if positions is None else self.ops.take(tokens, positions[begin:end])
            part = reduce_chunk(row, begin, chunk)
            total = part if total is None else combine(total, part)
        return total

    def _chunk_tokens(self) -> int:
        budget = max(_CHUNK_BYTES, self.rows * self.width * 4)
        return max(1, budget // max(1, self.width * 8))


# -- backends ---------------------------------------------------------------------------------------------
# float32/float64 torch CPU tensors that autograd does not track are pooled by the numpy kernels on a zero-copy
# view: single threaded, they read memory as fast as torch's two threads here and never wait on an OpenMP
# barrier. (Half precision stays with torch, whose float16 conversions are ~15x faster than numpy's.)
TORCH_CPU_VIA_NUMPY = True
# ... except, where the compiled kernels would run on our thread pool (`RowPlan._own_threads`: no numba, a
# forked child, small inputs), their sums (mean, mean/√n, weightedmean: ``embedding_bag``, `_bag_table`) and the
# max of packed tokens (one ``scatter_reduce_``), which then run on torch's own threads: see `_bag_table`.
TORCH_CPU_ON_TORCH_THREADS = True


def _backend(array: Any) -> tuple[Any, Any, Any] | None:
    """(kernels, the array they work on, a function turning their results back into the caller's library)."""
    if isinstance(array, np.ndarray):  # (a subclass, np.memmap, as a plain view: its picked rows are no memmap)
        plain = array if type(array) is np.ndarray else array.view(np.ndarray)
        return (_NumpyOps(), plain, None) if array.dtype in (np.float16, np.float32, np.float64) else None
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(array, torch.Tensor) or array.layout != torch.strided:
        return None
    if torch.compiler.is_compiling() or in_torch_transform():  # the host-side mask analysis is data-dependent
        return None  # (and torch.func's wrapped tensors have no memory to view): the generic path traces
    if array.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return None
    tracked = array.requires_grad and torch.is_grad_enabled()
    # (is_cpu / is_cuda make no device object: every tensor call counts in a pool call that follows a 50 MB read)
    viewable = array.dtype in (torch.float32, torch.float64) and not array.is_neg()  # (``z.conj().imag``: no view)
    if array.is_cpu and TORCH_CPU_VIA_NUMPY and not tracked and viewable:
        view = array.detach().numpy() if array.requires_grad else array.numpy()  # (numpy's float16 math is slow)
        return _NumpyOps(wraps_torch=True), view, torch.from_numpy
    if not (array.is_cpu or array.is_cuda):
        return None
    return _TorchOps(torch, array.device), array, None


class _TorchSegments:
    """Packed torch tokens as segments: max over every row with one ``scatter_reduce_`` (reads each token once;
    left-out prompt tokens go to a spare row). Only where autograd does not record, and only for the spans of
    `Spans.from_offsets` (rows back to back, each one's prompt first)."""

    def __init__(self, torch: Any, tokens: Any, spans: Spans) -> None:
        self.torch, self.tokens, self.spans = torch, tokens, spans

    @classmethod
    def of(cls, tokens: Any, spans: Spans) -> _TorchSegments | None:
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(tokens, torch.Tensor) or tokens.ndim != 2:
            return None
        return None if torch.is_grad_enabled() and tokens.requires_grad else cls(torch, tokens, spans)

    def max(self, rows: int, width: int) -> Any:
        """B×D row maxima in the tokens' dtype (zeros for empty rows), on the tokens' device."""
        torch, tokens, spans = self.torch, self.tokens, self.spans
        # packed rows lie back to back, each as its left-out prompt (rank_base tokens, to the spare row) then its
        # pooled tokens: one T-long owner array, built in one np.repeat
        owners = np.stack([np.full(rows, rows), np.arange(rows)], axis=1).reshape(-1)
        owner = np.repeat(owners, np.stack([spans.rank_base, spans.counts], axis=1).reshape(-1))
        index = torch.from_numpy(owner).to(tokens.device)[:, None].expand(-1, width)
        out = torch.zeros((rows + 1, width), dtype=tokens.dtype, device=tokens.device)
        return out.scatter_reduce_(0, index, tokens, "amax", include_self=False)[:rows]


@functools.lru_cache(maxsize=16)
def _numpy_dtype_of(torch_dtype: Any) -> np.dtype:
    return np.dtype(str(torch_dtype).removeprefix("torch."))


class _NumpyOps:
    has_bag = False
    threaded = True  # row groups on the thread pool (numpy releases the GIL in its reductions)
    writes_rows = True  # whole rows are reduced straight into the output (`sum_into`, `max_into`)
    fast_half = False  # numpy's float16 maximum is ~3x slower than converting chunks to float32 first

    def __init__(self, *, wraps_torch: bool = False) -> None:
        self.wraps_torch = wraps_torch  # the arrays are views of a CPU torch tensor's memory

    def dtype(self, dtype: Any) -> np.dtype:
        if isinstance(dtype, np.dtype):
            return dtype
        if type(dtype).__module__.startswith("torch"):  # torch.float32 → numpy's float32
            return _numpy_dtype_of(dtype)  # (one hash lookup once seen)
        return np.dtype(dtype)

    def flat_view(self, hidden: np.ndarray) -> np.ndarray | None:
        """``hidden`` as (B·L)×D without copying, or None when that needs a copy."""
        shape = (hidden.shape[0] * hidden.shape[1], hidden.shape[2])
        try:
            return hidden.reshape(shape, copy=False)  # numpy >= 2.1: raises instead of copying
        except ValueError:
            return None
        except TypeError:  # numpy < 2.1 has no copy= (and setting .shape is deprecated from 2.5 on)
            flat = hidden.view()
            try:
                flat.shape = shape
            except AttributeError:
                return None
            return flat

    def is_flat(self, table: np.ndarray) -> bool:
        return True

    def take(self, table: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return table.take(positions, axis=0)

    def cast(self, array: np.ndarray, dtype: Any) -> np.ndarray:
        return array if array.dtype == dtype else array.astype(dtype)

    def where_rows(self, nonempty: np.ndarray, values: np.ndarray) -> np.ndarray:
        values[~nonempty] = 0  # ``values`` is a fresh copy: selecting, not multiplying, keeps NaN out
        return values

    def sum0(self, chunk: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return self._block_sums(chunk, weights, np.empty(chunk.shape[1:], chunk.dtype))

    def max0(self, chunk: np.ndarray) -> np.ndarray:
        return np.maximum.reduce(chunk, axis=0)

    def sum_into(self, out: np.ndarray, row: int, tokens: np.ndarray, weights: np.ndarray | None) -> None:
        """out[row] = Σ (weights ·) tokens."""
        self._block_sums(tokens, weights, out[row])

    @staticmethod
    def _block_sums(tokens: np.ndarray, weights: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        """Σ (weights ·) tokens into ``out``: one einsum per `TOKEN_BLOCK` tokens, added in order (the compiled
        kernels' bits). einsum's sum-of-products loop reads a k×D block faster than ``np.add.reduce(axis=0)``
        (one vector add and store per token) and BLAS gemv (issue 19's measurements)."""
        def block_sum(first: int, into: np.ndarray | None = None) -> np.ndarray:
            block = tokens[first : first + TOKEN_BLOCK]
            if weights is None:
                return np.einsum("ij->j", block, out=into)
            return np.einsum("i,ij->j", weights[first : first + TOKEN_BLOCK], block, out=into)

        block_sum(0, out)
        for first in range(TOKEN_BLOCK, len(tokens), TOKEN_BLOCK):
            np.add(out, block_sum(first), out=out)
        return out

    def max_into(self, out: np.ndarray, row: int, tokens: np.ndarray) -> None:
        np.maximum.reduce(tokens, axis=0, out=out[row], initial=-np.inf)  # (initial: a faster loop here)

    add = staticmethod(np.add)
    maximum = staticmethod(np.maximum)
    stack = staticmethod(np.stack)

    def arange(self, start: int, stop: int, dtype: Any) -> np.ndarray:
        return np.arange(start, stop, dtype=dtype)

    def log1p_relu(self, values: np.ndarray, own: bool = False) -> np.ndarray:
        """log(1 + relu(values)), in place where ``own`` (a fresh result of ours, not the caller's array)."""
        out = np.maximum(values, 0, out=values if own else None)  # propagates NaN
        return np.log1p(out, out=out)

    def rows_out(self, rows: int, width: int, dtype: Any, like: np.ndarray) -> np.ndarray:
        """B×D zeros (the rows nobody writes stay zero)."""
        return np.zeros((rows, width), dtype=dtype)

    def put(self, out: np.ndarray, row: int, value: np.ndarray) -> None:
        out[row] = value

    def finish(self, out: np.ndarray) -> np.ndarray:
        return out

    def scale_rows(self, values: np.ndarray, scale: np.ndarray) -> np.ndarray:
        values *= scale.astype(values.dtype)[:, None]
        return values


@functools.lru_cache(maxsize=1)
def _bag_sum_function(torch: Any) -> Any:
    """``embedding_bag``'s row sums as an autograd Function whose gradient is itself differentiable: embedding_bag's
    own backward has no derivative, so a second-order gradient (``create_graph=True``: gradient penalties,
    Hessian-vector products) raised NotImplementedError. The forward is the same one ``embedding_bag`` call,
    recorded on a detached view; a first-order backward runs embedding_bag's own (fused, fast) backward on that
    record, and one that is itself recorded uses differentiable ops instead: each pooled token occurs once, so
    its gradient row is its row's output gradient (times its weight), copied to its position."""
    from torch.nn.functional import embedding_bag

    class BagSum(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, flat: Any, positions: Any, offsets: Any, owners: Any, weights: Any) -> Any:
            with torch.enable_grad():
                ctx.leaf = flat.detach().requires_grad_()
                ctx.summed = embedding_bag(positions, ctx.leaf, offsets, mode="sum", per_sample_weights=weights,
                                           include_last_offset=True)  # fmt: skip
            ctx.save_for_backward(positions, owners, weights)
            return ctx.summed.detach()

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None, None]:
            positions, owners, weights = ctx.saved_tensors
            if not torch.is_grad_enabled():  # first order: embedding_bag's own backward
                (table,) = torch.autograd.grad(ctx.summed, ctx.leaf, grad, retain_graph=True)  # (backward may run again)
                return table, None, None, None, None
            per_token = grad.index_select(0, owners)
            if weights is not None:
                per_token = per_token * weights[:, None]
            table = grad.new_zeros(ctx.leaf.shape).index_copy(0, positions, per_token)
            return table, None, None, None, None

    return BagSum


class _TorchOps:
    has_bag = True
    wraps_torch = False
    threaded = False  # torch parallelises inside each kernel with its intra-op threads
    writes_rows = False  # rows are collected (autograd needs them as values), see `rows_out`
    fast_half = True

    def __init__(self, torch: Any, device: Any):
        self.torch, self.device = torch, device

    def dtype(self, dtype: Any) -> Any:
        return dtype

    def flat_view(self, hidden: Any) -> Any:
        rows, length, width = hidden.shape
        if hidden.stride(-1) != 1 or hidden.stride(1) != width or hidden.stride(0) != length * width:
            return None  # embedding_bag would copy a non-contiguous table
        return hidden.view(rows * length, width)

    def is_flat(self, table: Any) -> bool:
        return table.stride(-1) == 1 and table.stride(0) == table.shape[-1]

    def index(self, positions: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(positions, dtype=np.int64)).to(self.device)

    def take(self, table: Any, positions: np.ndarray) -> Any:
        return table[self.index(positions)]

    def stack(self, parts: list) -> Any:
        with self.torch.autocast(self.device.type, enabled=False):  # (which refuses float16 rows under bfloat16)
            return self.torch.stack(parts)

    def cast(self, tensor: Any, dtype: Any) -> Any:
        return tensor if tensor.dtype == dtype else tensor.to(dtype)

    def where_rows(self, nonempty: np.ndarray, values: Any) -> Any:
        keep = self.torch.from_numpy(nonempty).to(self.device)[:, None]
        return self.torch.where(keep, values, self.torch.zeros((), dtype=values.dtype, device=self.device))

    def bag_sum(self, flat: Any, positions: np.ndarray, counts: np.ndarray, ranks: np.ndarray | None) -> Any:
        """Σ (rank·) h over each row's tokens by ``embedding_bag``, which reads each token once and sums token
        after token: rows longer than `TOKEN_BLOCK` as the sums of their blocks' sums (a second, small bag)."""
        weights = None if ranks is None else self.torch.from_numpy(ranks).to(self.device, flat.dtype)
        if int(np.maximum.reduce(counts, initial=0)) <= TOKEN_BLOCK:
            return self._bag(flat, positions, counts, weights)
        blocks = -(-counts // TOKEN_BLOCK)
        first = np.repeat(np.cumsum(blocks) - blocks, blocks)  # each block's row's first block
        sizes = np.minimum(TOKEN_BLOCK, np.repeat(counts, blocks) - TOKEN_BLOCK * (np.arange(len(first)) - first))
        sums = self._bag(flat, positions, sizes, weights)
        return self._bag(sums, np.arange(len(sizes)), blocks, None)

    def _bag(self, flat: Any, positions: np.ndarray, counts: np.ndarray, weights: Any) -> Any:
        from torch.nn.functional import embedding_bag

        offsets = np.concatenate(([0], np.cumsum(counts)))
        if self.torch.is_grad_enabled() and flat.requires_grad:  # a backward that is itself differentiable
            owners = self.index(np.repeat(np.arange(len(counts)), counts))
            return _bag_sum_function(self.torch).apply(flat, self.index(positions), self.index(offsets), owners, weights)
        return embedding_bag(
            self.index(positions), flat, self.index(offsets), mode="sum", per_sample_weights=weights,
            include_last_offset=True,
        )  # fmt: skip

    def sum0(self, chunk: Any, weights: Any = None) -> Any:
        if weights is None:
            return chunk.sum(0)
        with self.torch.autocast(self.device.type, enabled=False):  # (which would run it in float16: Σ rank·h overflows)
            return weights @ chunk

    def max0(self, chunk: Any) -> Any:
        return chunk.amax(0)

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def maximum(self, a: Any, b: Any) -> Any:
        return self.torch.maximum(a, b)  # propagates NaN

    def arange(self, start: int, stop: int, dtype: Any) -> Any:
        return self.torch.arange(start, stop, dtype=dtype, device=self.device)

    def log1p_relu(self, values: Any, own: bool = False) -> Any:
        return self.torch.log1p(self.torch.clamp(values, min=0))  # clamp propagates NaN

    def rows_out(self, rows: int, width: int, dtype: Any, like: Any) -> Any:
        # Rows are collected and stacked when autograd is recording, else written into one buffer. Empty rows
        # get a zero row that is a (constant) function of the tokens, a sum over none of them: the result stays
        # in the graph with a zero gradient even when every row is empty.
        if self.torch.is_grad_enabled() and like.requires_grad:
            return [None] * rows, like[:0].sum(0, dtype=dtype)
        return self.torch.zeros((rows, width), dtype=dtype, device=self.device)

    def put(self, out: Any, row: int, value: Any) -> None:
        if isinstance(out, tuple):
            out[0][row] = value
        else:
            out[row] = value

    def finish(self, out: Any) -> Any:
        if not isinstance(out, tuple):
            return out
        parts, zero = out
        return self.stack([zero if part is None else part for part in parts])

    def scale_rows(self, values: Any, scale: np.ndarray) -> Any:
        factor = self.torch.from_numpy(scale).to(self.device, values.dtype)[:, None]
        return values * factor if values.requires_grad else values.mul_(factor)
