"""Compiled row kernels for the numpy fast paths, when numba is installed (`pip install tokenpool[fast]`).

numpy has no segment reduction: `core/fast.py` reduces each row with one numpy call, whose loop loads, adds and
stores a D-wide accumulator per token and runs one row per call. These kernels reduce a whole group of rows in
one call that releases the GIL (so the thread pool's groups run in parallel) with vectorised loops that fold
eight tokens per pass over a row's accumulator, reading each real token once. They sum each column token after
token within blocks of `TOKEN_BLOCK` tokens and add the blocks' sums in order, as the numpy kernels do with one
einsum per block (the same bits for D ≥ 2; weighted sums as fused multiply-adds, within one rounding of einsum's);
max is exact (on x86-64 it learns of a NaN from the CPU's invalid-operation flag: `_max_token_loop`). numba is
imported on first use (`core/fast.py` asks only for inputs of `COMPILED_ELEMENTS` or more), never by
``import tokenpool``; without it, or with `ENABLED` False, the numpy kernels run. The first use on a
machine compiles both dtypes (seconds); numba caches the machine code on disk for later processes.

Threads: `Kernels.run` reduces consecutive parts of the rows in one call on numba's threads (``parallel=True``,
one part per thread) where numba's threading layer is safe to enter from several Python threads (OpenMP or TBB)
and this is the process that started it (GNU OpenMP kills a forked child that enters it); elsewhere the caller
runs the parts on its own thread pool, whose threads wake later and wait for torch's still-spinning ones
right after a torch op (docs/performance.md, stops 35–36). Each row is still reduced by one thread, in the
same order: the same bits for every thread count."""

from __future__ import annotations

import importlib.util
import os
import platform
import threading
from typing import Any

import numpy as np

# Sums over tokens add blocks of this many tokens one after another, then the blocks' sums: float32 sums of long
# rows lose far less (relative error 2.8e-7 against 3.5e-6 token after token at 8,192 tokens, 4.5e-7 against
# 1.1e-5 at 100,000; torch's cascaded sums 1.5-2e-7), and rows up to 512 tokens, most models' limit, stay one
# block (one einsum per block in the numpy kernels: per-call cost). Every path (generic, numpy, compiled,
# embedding_bag, streaming) folds at the same counts, so the numpy and compiled kernels keep identical bits.
# Defined here, in the file numba's cache follows: a change elsewhere would leave cached kernels on the old value.
TOKEN_BLOCK = 512

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


def built() -> Any | None:
    """The kernels if `kernels` has already built them in this process, else None (never imports numba)."""
    return _kernels if ENABLED and _tried else None


def _build() -> Any | None:
    try:
        import numba
    except Exception:  # a numba that does not match this numpy: the numpy kernels still work
        return None
    # (caching needs a writable folder: numba's own, or the user's cache; a flag-read NaN check that the built max
    # kernel does not honour falls back to the compare loop, compiled afresh: a cached kernel holds the old loop)
    for cache, flag in ((True, True), (False, True), (False, False)):
        try:
            return Kernels(numba, cache, flag=flag)
        except Exception:  # pragma: no cover - a numba or LLVM that cannot compile here
            continue
    return None  # pragma: no cover


INVALID = 1  # MXCSR's invalid-operation flag (bit 0): set by x86-64's max and ordered compares on a NaN


def _max_token_loop(numba: Any, cache: bool, flag: bool = True) -> tuple[Any, str]:
    """The token loop the max kernels run, and how it sees a NaN: `_max_tokens_flagged` ("flag") on x86-64, unless
    ``flag`` is off, else `_max_tokens` ("compare"). Whether the built kernel honours the flag (a code generator
    that compared quietly would raise none) is checked end to end (`max_sees_nan`), and `_build` falls back."""
    if not flag or platform.machine().lower() not in ("x86_64", "amd64"):
        return numba.njit(nogil=True, cache=cache, boundscheck=False)(_max_tokens), "compare"
    global _status, _set_status
    _status, _set_status = _status_intrinsics(numba)
    return numba.njit(nogil=True, cache=cache, boundscheck=False)(_max_tokens_flagged), "flag"


def max_sees_nan(max_rows: Any) -> bool:
    """Whether a built ``max_rows`` kernel gives numpy's maximum (NaN where one sits) over read-only tables off a
    64-byte boundary, NaN-free or with a NaN in a group's lanes, the line two tokens share, or the last token: the
    machine code production runs, checked end to end."""
    for dtype in Kernels.DTYPES:
        for width in (37, 2 * 64 // np.dtype(dtype).itemsize):
            raw = np.zeros(17 * width * np.dtype(dtype).itemsize + 128, np.uint8)
            begin = (-raw.ctypes.data) % 64 + 16
            clean = raw[begin : begin + 17 * width * np.dtype(dtype).itemsize].view(dtype).reshape(17, width)
            values = np.arange(clean.size, dtype=dtype).reshape(17, width) % 23
            for position in (None, *range(0, clean.size, 11), clean.size - 1):
                clean[:] = values
                if position is not None:
                    clean.reshape(-1)[position] = np.nan
                table = clean.view()  # (read-only, in place: off the boundary, as the kernels are typed)
                table.setflags(write=False)
                one, out = np.zeros(1, np.int64), np.empty((1, width), dtype)
                max_rows(table, one, np.array([17], np.int64), one, out)
                if not np.array_equal(out[0], np.maximum.reduce(table, axis=0), equal_nan=True):
                    return False
    return True


def _status_intrinsics(numba: Any) -> tuple[Any, Any]:
    """(read, write) of this thread's MXCSR, as numba intrinsics (``stmxcsr`` / ``ldmxcsr``)."""
    from llvmlite import ir
    from numba.extending import intrinsic

    word, pointer = ir.IntType(32), ir.IntType(8).as_pointer()
    kind = ir.FunctionType(ir.VoidType(), [pointer])

    @intrinsic
    def read(typingctx: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            slot = builder.alloca(word)
            store = builder.module.declare_intrinsic("llvm.x86.sse.stmxcsr", fnty=kind)
            builder.call(store, [builder.bitcast(slot, pointer)])
            return builder.load(slot)

        return numba.types.uint32(), codegen

    @intrinsic
    def write(typingctx: Any, value: Any) -> Any:  # (any integer type: the masked word is an int64)
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            slot = builder.alloca(word)
            value = args[0] if args[0].type.width == 32 else builder.trunc(args[0], word)  # (the low 32 bits)
            builder.store(value, slot)
            load = builder.module.declare_intrinsic("llvm.x86.sse.ldmxcsr", fnty=kind)
            builder.call(load, [builder.bitcast(slot, pointer)])
            return context.get_dummy_value()

        return numba.types.void(value), codegen

    return read, write


class Kernels:
    """Row-group reductions of a flat T×D table: row r is ``table[starts[r] : starts[r] + counts[r]]``; each
    kernel writes ``out[r]`` for every r in ``rows`` (zeros for an empty row) and no other row. Compiled for
    C-contiguous float32 and float64 tables and int64 index arrays when built (so a failure shows here, once).
    The input table is typed read-only, so read-only arrays (``np.load(mmap_mode="r")``, ``np.frombuffer``) and
    writable ones (which numba passes as read-only) run the same machine code; the output stays writable."""

    DTYPES = (np.float32, np.float64)
    MASK_DTYPES = (np.bool_, np.int32, np.int64)  # what `mask_spans` reads (a tokenizer's masks are int64)

    def __init__(self, numba: Any, cache: bool, *, flag: bool = True) -> None:
        types, index = numba.types, numba.types.int64[::1]
        maxima, sums, weighted = [], [], []
        for dtype in (types.float32, types.float64):
            table, out = types.Array(dtype, 2, "C", readonly=True), dtype[:, ::1]  # (out: the table's dtype)
            maxima.append(types.void(table, index, index, index, out))
            sums.append(types.void(table, index, index, index, dtype[::1], out))
            weighted.append(types.void(table, index, index, index, dtype[::1], index, dtype[::1], out))

        def jit(signatures: list, function: Any, parallel: bool = False, contract: bool = False) -> Any:
            fastmath = {"contract"} if contract else False  # (contract: a * b + c as one fused multiply-add)
            return numba.njit(signatures, nogil=True, cache=cache, boundscheck=False, parallel=parallel,
                              fastmath=fastmath)(function)  # fmt: skip

        global _split, _put, _fold, _group, _nan_max, _add, _max_of, _max_row, _max8, _max_rest
        global _add_weighted, _sums
        # (globals the row kernels call, compiled with them: set before they compile, callees before their callers)
        inline = numba.njit(nogil=True, cache=cache, inline="always")
        _split, _put, _fold, _group, _nan_max, _max8 = (
            inline(f) for f in (_layout, _write, _fold_in, _eight, _nan_first_max, _max_of_eight))
        # (the token loops compiled once each, not inlined at every call: inlined, first use took 37 s, not 24)
        loop = numba.njit(nogil=True, cache=cache, boundscheck=False)
        _add, _max_row, _max_rest = loop(_add_tokens), loop(_max_one_row), loop(_max_tokens_after)
        _max_of, self.nan_check = _max_token_loop(numba, cache, flag)
        contracted = numba.njit(nogil=True, cache=cache, boundscheck=False, fastmath={"contract"})
        _add_weighted, _sums = contracted(_add_weighted_tokens), contracted(_weighted_rows)
        self.sum_rows = jit(sums, _sum_rows)
        self.max_rows = jit(maxima, _max_rows)
        if not max_sees_nan(self.max_rows):  # (`_build` then builds the compare loop)
            raise RuntimeError(f"the compiled max kernel ({self.nan_check} loop) missed a NaN")
        self.weighted_rows = jit(weighted, _weighted_rows, contract=True)
        spans = [types.int64(types.Array(numba.from_dtype(np.dtype(d)), 2, "C", readonly=True), index, index)
                 for d in self.MASK_DTYPES]  # fmt: skip
        self.mask_spans = jit(spans, _mask_spans)
        self.token_bounds = jit([index(index, types.int64)], token_bounds)
        self._numba = numba
        try:
            self._parallel: dict[str, Any] = self._parallel_kernels(numba, jit, (maxima, sums, weighted))
        except Exception:  # pragma: no cover - a numba without a usable parallel backend: the thread pool runs
            self._parallel = {}
        self._parallel_here = bool(self._parallel)  # False in a forked child (os.fork runs `_forked` there)
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._parallel_here = False

    def _parallel_kernels(self, numba: Any, jit: Any, signatures: tuple[list, list, list]) -> dict[str, Any]:
        """The parts drivers (each part's rows by the serial kernel, on numba's threads), or none when numba's
        threading layer is its workqueue, which aborts when two Python threads enter it at once."""
        global prange, _row_sum, _row_max, _row_weighted, _bounds
        prange, _row_sum, _row_max, _row_weighted = numba.prange, self.sum_rows, self.max_rows, self.weighted_rows
        _bounds = self.token_bounds
        parts = numba.types.int64
        maxima, sums, weighted = ([numba.types.void(*sig.args[:4], parts, *sig.args[4:]) for sig in group]
                                  for group in signatures)  # fmt: skip
        kernels: dict[str, Any] = {}
        table, one = np.zeros((1, 1), np.float32), np.zeros(1, np.int64)
        # compiling (or loading from numba's cache) a parallel function and its first launch start numba's
        # threading layer, which sets the OpenMP thread count of the calling thread (torch's intra-op count when
        # they share one OpenMP: torch.set_num_threads(1) read 2 after it, once torch had run an op); done on a
        # thread of its own, they leave the caller's settings alone
        failed: list[BaseException] = []

        def build() -> None:
            try:
                kernels["sum_rows"] = jit(sums, _sum_parts, parallel=True)
                kernels["max_rows"] = jit(maxima, _max_parts, parallel=True)
                kernels["weighted_rows"] = jit(weighted, _weighted_parts, parallel=True)
                kernels["max_rows"](table, one, one + 1, one, 1, np.zeros((1, 1), np.float32))
            except Exception as err:  # no threading layer loads here: the thread pool runs the parts
                failed.append(err)

        first = threading.Thread(target=build, name="tokenpool-numba-start")
        first.start()
        first.join()
        complete = not failed and len(kernels) == 3  # (a BaseException ends the thread without a record)
        return kernels if complete and numba.threading_layer() in ("omp", "tbb") else {}

    @property
    def parallel(self) -> bool:
        """Whether `run` may spread parts over numba's threads in this process (not when numba has one thread:
        ``NUMBA_NUM_THREADS=1`` leaves the parts to the caller's thread pool)."""
        return self._parallel_here and self._numba.config.NUMBA_NUM_THREADS > 1

    def run(self, name: str, parts: int, table: np.ndarray, starts: np.ndarray, counts: np.ndarray,
            rows: np.ndarray, *rest: Any) -> None:  # fmt: skip
        """Kernel ``name`` ("sum_rows", "max_rows", "weighted_rows") over ``rows``, cut by `token_bounds` into at
        most ``parts`` consecutive parts of about equal token counts, one per thread of numba's (`parallel`; the
        cut is made inside the compiled call: no second call into numba); with one part, or without `parallel`,
        the serial kernel over every row on the calling thread. ``rest``: the kernel's other arguments, ``out``
        last."""
        if parts < 2 or not self.parallel:
            getattr(self, name)(table, starts, counts, rows, *rest)
            return
        numba = self._numba
        saved = None
        if parts < numba.config.NUMBA_NUM_THREADS:  # no more threads woken than there are parts (per calling thread)
            saved = numba.get_num_threads()
            numba.set_num_threads(parts)
        try:
            self._parallel[name](table, starts, counts, rows, parts, *rest)
        finally:
            if saved is not None:
                numba.set_num_threads(saved)


def token_bounds(sizes, parts):
    """[0, cut, …, len(sizes)]: at most ``parts`` groups of consecutive rows (token counts ``sizes``) with about the
    same tokens each, each cut before or after the row that crosses its share, whichever leaves the nearer count.
    The thread pool's parts (`core/fast.py`); compiled, the parts drivers' (one call into numba, not two)."""
    n = len(sizes)
    bounds = np.zeros(parts + 1, np.int64)
    if n == 0:
        return bounds[:1]
    cumulative = np.cumsum(sizes)
    total, m = cumulative[-1], 1
    for k in range(1, parts):
        share = total * k / parts
        crossing = np.searchsorted(cumulative, share)  # the first row whose running count reaches the share
        before = cumulative[crossing - 1] if crossing else 0
        cut = min(crossing if share - before < cumulative[crossing] - share else crossing + 1, n)
        if bounds[m - 1] < cut < n:
            bounds[m] = cut
            m += 1
    bounds[m] = n
    return bounds[: m + 1]


# The kernels below are compiled by numba (plain Python loops, run as machine code); in pure Python they would
# be far slower than numpy, so they are never called uncompiled.

prange = range  # numba.prange, and the compiled row kernels the parts drivers call, once built (`Kernels`)
_row_sum = _row_max = _row_weighted = _split = _put = _fold = _bounds = None
_add = _add_weighted = _sums = _max_of = _max_row = _group = _nan_max = _max8 = _max_rest = None
_status = _set_status = None  # the MXCSR reads and writes `_max_tokens_flagged` calls (`_max_token_loop`)


def _mask_spans(mask, starts, counts):  # pragma: no cover - runs compiled
    """Each row's first real position and real-token count of a C-contiguous B×L mask, in one pass; returns the
    real tokens of all rows, or -1 when a row has a hole (a padding position between real ones), or -2 at a
    value other than 0 and 1 (``starts``/``counts`` then incomplete)."""
    rows, length = mask.shape
    status = total = 0
    for i in range(rows):
        n = odd = 0
        for j in range(length):  # with 0/1 values the count is the sum and v & -2 is 0
            v = mask[i, j]
            n += v
            odd |= v & -2
        if odd:
            return -2
        first = 0
        if n:
            while mask[i, first] == 0:
                first += 1
            last = length - 1
            while mask[i, last] == 0:
                last -= 1
            if last - first + 1 != n:
                status = -1
        starts[i], counts[i] = first, n
        total += n
    return status if status else total


# Each row is reduced in a private accumulator and copied to ``out`` once: two threads summing into adjacent
# rows of ``out`` token after token shared a cache line at their boundary (16-byte aligned arrays; stop 36).
#
# Aligned loads (docs/performance.md, stop 42): in a table 16 bytes off a 64-byte boundary every 64-byte load
# spans two cache lines. Where a row's width is whole 64-byte lines, each token is folded from its first
# 64-byte boundary on (``body``), and the line that holds one token's last ``tail`` columns and the next
# token's first ``head`` ones is folded as one vector into ``wrap`` (lanes [0, tail) the former, [tail, lanes)
# the latter); only the row's first head and last tail go one by one. Every column is still folded token after
# token from the identity (0, or -inf for max, which the first token replaces bit for bit): the same bits.
# Other widths (and aligned tables: head 0) fold whole tokens.


def _layout(table, spare):  # pragma: no cover - runs compiled
    """(head, tail, wrap, body) of `table` (see above), ``wrap`` and ``body`` 64-byte-aligned views of ``spare``
    (``width + 2 * lanes`` long); head and tail 0 when not used."""
    width, size = table.shape[1], table.itemsize
    lanes = 64 // size
    head = (-table.ctypes.data) % 64 // size if width % lanes == 0 and width else 0
    tail = lanes - head if head else 0
    shift = (-spare.ctypes.data) % 64 // size
    return head, tail, spare[shift : shift + lanes], spare[shift + lanes : shift + lanes + width - head - tail]


def _sum_rows(table, starts, counts, rows, scale, out):  # pragma: no cover - runs compiled
    _sums(table, starts, counts, rows, None, None, scale, out)


def _weighted_rows(table, starts, counts, rows, ranks, rank_base, scale, out):  # pragma: no cover - runs compiled
    # ``ranks`` None: plain sums (`_sum_rows`; numba compiles that case apart, cutting the branches on it)
    width = table.shape[1]
    flat = table.reshape(-1)
    head, tail, wrap, body = _split(table, np.empty(width + 128 // table.itemsize, out.dtype))
    wrap_total, body_total = np.empty(len(wrap), out.dtype), np.empty(len(body), out.dtype)
    weights = scale  # (a row's weights; plain sums read none)
    for r in rows:
        start, stop = starts[r], starts[r] + counts[r]
        if stop == start:  # an empty row reads nothing and is zeros
            out[r] = 0
            continue
        if ranks is not None:
            weights = ranks[rank_base[r] :]
        wrap[:] = 0
        body[:] = 0
        wrap_total[:] = 0
        body_total[:] = 0
        for j in range(head):
            x = flat[start * width + j]
            wrap[tail + j] += x if ranks is None else weights[0] * x
        for first in range(start, stop, TOKEN_BLOCK):
            end = min(first + TOKEN_BLOCK, stop)
            if ranks is None:
                _add(body, flat, first * width + head, width, end - first)
                if head:  # the lines shared by two of the block's tokens
                    _add(wrap, flat, (first + 1) * width - tail, width, end - first - 1)
            else:
                block = weights[first - start :]
                _add_weighted(body, flat, first * width + head, width, end - first, block)
                if head:  # a shared line's first tail lanes: one token's weight; the rest: the next token's
                    shared = end - first - 1
                    _add_weighted(wrap[:tail], flat, (first + 1) * width - tail, width, shared, block)
                    _add_weighted(wrap[tail:], flat, (first + 1) * width, width, shared, block[1:])
            _fold(body_total, body, 0, len(body))
            _fold(wrap_total, wrap, tail, len(wrap))  # the block's heads; then its last token's tail
            last = flat[end * width - tail : end * width]
            for j in range(tail):  # (spelt out: `+=` here let LLVM swap the operands, and a NaN + NaN the other NaN)
                wrap[j] = wrap[j] + (last[j] if ranks is None else weights[end - 1 - start] * last[j])
            _fold(wrap_total, wrap, 0, tail)
            if end < stop:
                for j in range(head):
                    x = flat[end * width + j]
                    wrap[tail + j] += x if ranks is None else weights[end - start] * x
        _put(out[r], wrap_total, body_total, head, tail, scale[r])


def _max_rows(table, starts, counts, rows, out):  # pragma: no cover - runs compiled
    # numpy's maximum, token after token: a NaN wins (the first one); of equal values (±0) the first, where numpy
    # keeps the last (a maximum of +0 and -0 may have the other sign than numpy's). A row runs GROUP tokens per
    # pass with a maximum that skips NaN, which with no NaN gives the same bits (`_max_tokens`), and again one
    # token per pass, NaN-aware, where it met a NaN
    width = table.shape[1]
    flat = table.reshape(-1)
    head, tail, wrap, body = _split(table, np.empty(width + 128 // table.itemsize, out.dtype))
    for r in rows:
        start, stop = starts[r], starts[r] + counts[r]
        if stop == start:  # an empty row reads nothing and is zeros
            out[r] = 0
            continue
        if _max_row(flat, width, start, stop, head, tail, wrap, body, False):
            _max_row(flat, width, start, stop, head, tail, wrap, body, True)
        _put(out[r], wrap, body, head, tail, 1)


def _max_one_row(flat, width, start, stop, head, tail, wrap, body, exact):  # pragma: no cover - runs compiled
    """The maximum of tokens [start, stop) into `_layout`'s ``wrap`` and ``body``; whether `_max_tokens` skipped a
    NaN."""
    wrap[:] = -np.inf
    body[:] = -np.inf
    for j in range(head):
        a, x = wrap[tail + j], flat[start * width + j]
        wrap[tail + j] = _nan_max(a, x)
    skipped = _max_of(body, flat, start * width + head, width, stop - start, exact)
    if head:
        skipped |= _max_of(wrap, flat, (start + 1) * width - tail, width, stop - start - 1, exact)
    for j in range(tail):
        a, x = wrap[j], flat[stop * width - tail + j]
        wrap[j] = _nan_max(a, x)
    return skipped


def _write(row, wrap, body, head, tail, scale):  # pragma: no cover - runs compiled
    """The pooled row from `_layout`'s pieces, times ``scale`` (the row's divisor, while it is in cache)."""
    width = len(row)
    for j in range(head):
        row[j] = wrap[tail + j] * scale
    for j in range(len(body)):
        row[head + j] = body[j] * scale
    for j in range(tail):
        row[width - tail + j] = wrap[j] * scale


def _fold_in(total, block, begin, end):  # pragma: no cover - runs compiled
    """total[j] += block[j] for j in [begin, end), then block[j] = 0: one block's sums folded into the row's."""
    for j in range(begin, end):
        total[j] = total[j] + block[j]
        block[j] = 0


# Tokens are folded GROUP per pass over a row's accumulator, which stays in a register across them (the same
# operations in the same order as one token per pass). One token per pass loaded and stored the accumulator per
# token (max's select as a masked store): 1.3-1.8x a plain read on an Intel Xeon, one long row, one thread
# (stop 50); eight per pass: sum 1.02x, max 1.09x (1.17x with a sum beside it to see NaN, not this compare). The
# eight tokens are eight slices (indexing one flat array at computed offsets made LLVM gather).
GROUP = 8


def _eight(flat, b, stride, n):  # pragma: no cover - runs compiled
    """The GROUP (eight) tokens at ``flat[b]``, ``flat[b + stride]``, … as slices (the first ``n`` long)."""
    return (flat[b : b + n], flat[b + stride :], flat[b + 2 * stride :], flat[b + 3 * stride :],
            flat[b + 4 * stride :], flat[b + 5 * stride :], flat[b + 6 * stride :], flat[b + 7 * stride :])  # fmt: skip


def _nan_first_max(a, x):  # pragma: no cover - runs compiled
    """numpy's maximum of the kept ``a`` and the next value ``x``: a NaN wins (the first one); of equal values
    (±0) ``a``, the first, where numpy's maximum keeps the last."""
    return a if (a >= x or a != a) else x


def _add_tokens(acc, flat, offset, stride, count):  # pragma: no cover - runs compiled
    """acc[j] += flat[offset + i * stride + j] for j < len(acc) and i in [0, count), i in order."""
    n, whole = len(acc), count - count % GROUP
    for i in range(0, whole, GROUP):
        b = offset + i * stride
        t0, t1, t2, t3, t4, t5, t6, t7 = _group(flat, b, stride, n)
        for j in range(n):
            acc[j] = (((((((acc[j] + t0[j]) + t1[j]) + t2[j]) + t3[j]) + t4[j]) + t5[j]) + t6[j]) + t7[j]
    for i in range(whole, count):
        token = flat[offset + i * stride :]
        for j in range(n):
            acc[j] = acc[j] + token[j]


def _add_weighted_tokens(acc, flat, offset, stride, count, weights):  # pragma: no cover - runs compiled
    """`_add_tokens` with token i's values times ``weights[i]``."""
    n, whole = len(acc), count - count % GROUP
    for i in range(0, whole, GROUP):
        b, w = offset + i * stride, weights[i : i + GROUP]
        t0, t1, t2, t3, t4, t5, t6, t7 = _group(flat, b, stride, n)
        w0, w1, w2, w3, w4, w5, w6, w7 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]
        for j in range(n):
            a = ((acc[j] + w0 * t0[j]) + w1 * t1[j]) + w2 * t2[j]
            a = (((a + w3 * t3[j]) + w4 * t4[j]) + w5 * t5[j]) + w6 * t6[j]
            acc[j] = a + w7 * t7[j]
    for i in range(whole, count):
        token, w0 = flat[offset + i * stride :], weights[i]
        for j in range(n):
            acc[j] = acc[j] + w0 * token[j]


def _max_tokens(acc, flat, offset, stride, count, exact):  # pragma: no cover - runs compiled
    """acc[j] = max(acc[j], flat[offset + i * stride + j]) for i in [0, count), i in order, NaN-aware: with
    ``exact``, one token per pass; else GROUP per pass with a maximum that skips NaN (LLVM's one max instruction),
    returning whether a NaN was skipped (then the caller runs again with ``exact``), and the last tokens one by one."""
    n, whole, skipped = len(acc), 0 if exact else count - count % GROUP, False
    for i in range(0, whole, GROUP):
        t0, t1, t2, t3, t4, t5, t6, t7 = _group(flat, offset + i * stride, stride, n)
        for j in range(n):
            x0, x1, x2, x3, x4, x5, x6, x7 = t0[j], t1[j], t2[j], t3[j], t4[j], t5[j], t6[j], t7[j]
            acc[j] = _max8(acc[j], x0, x1, x2, x3, x4, x5, x6, x7)
            nan = (x0 != x0) | (x1 != x1) | (x2 != x2) | (x3 != x3)  # (one unordered compare per two values)
            skipped |= nan | (x4 != x4) | (x5 != x5) | (x6 != x6) | (x7 != x7)
    _max_rest(acc, flat, offset, stride, whole, count)
    return skipped


def _max_tokens_flagged(acc, flat, offset, stride, count, exact):  # pragma: no cover - runs compiled
    """`_max_tokens`, learning of a skipped NaN from the CPU's invalid-operation flag (x86-64's max and ordered
    compares raise it when they meet a NaN) instead of a compare per value: 1.07x numpy's read at one thread, not
    1.13x (stop 54). The flag is cleared before the loop and the caller's flags put back after it."""
    n, whole = len(acc), 0 if exact else count - count % GROUP
    saved = _status()
    _set_status(saved & ~INVALID)
    for i in range(0, whole, GROUP):
        t0, t1, t2, t3, t4, t5, t6, t7 = _group(flat, offset + i * stride, stride, n)
        for j in range(n):
            acc[j] = _max8(acc[j], t0[j], t1[j], t2[j], t3[j], t4[j], t5[j], t6[j], t7[j])
    skipped = (_status() & INVALID) != 0
    _set_status(saved)
    _max_rest(acc, flat, offset, stride, whole, count)
    return skipped


def _max_of_eight(a, x0, x1, x2, x3, x4, x5, x6, x7):  # pragma: no cover - runs compiled
    """The maximum of ``a`` and eight next values in order, skipping NaN (LLVM's one max instruction each)."""
    a = x0 if x0 > a else a
    a = x1 if x1 > a else a
    a = x2 if x2 > a else a
    a = x3 if x3 > a else a
    a = x4 if x4 > a else a
    a = x5 if x5 > a else a
    a = x6 if x6 > a else a
    return x7 if x7 > a else a


def _max_tokens_after(acc, flat, offset, stride, first, count):  # pragma: no cover - runs compiled
    """Tokens [first, count) one per pass, NaN-aware (numpy's maximum)."""
    n = len(acc)
    for i in range(first, count):
        token = flat[offset + i * stride :]
        for j in range(n):
            a, x = acc[j], token[j]
            acc[j] = _nan_max(a, x)


def _sum_parts(table, starts, counts, rows, parts, scale, out):  # pragma: no cover - runs compiled
    bounds = _bounds(counts[rows], parts)
    for p in prange(len(bounds) - 1):
        _row_sum(table, starts, counts, rows[bounds[p] : bounds[p + 1]], scale, out)


def _max_parts(table, starts, counts, rows, parts, out):  # pragma: no cover - runs compiled
    bounds = _bounds(counts[rows], parts)
    for p in prange(len(bounds) - 1):
        _row_max(table, starts, counts, rows[bounds[p] : bounds[p + 1]], out)


def _weighted_parts(table, starts, counts, rows, parts, ranks, rank_base, scale, out):  # pragma: no cover
    bounds = _bounds(counts[rows], parts)
    for p in prange(len(bounds) - 1):
        _row_weighted(table, starts, counts, rows[bounds[p] : bounds[p + 1]], ranks, rank_base, scale, out)
