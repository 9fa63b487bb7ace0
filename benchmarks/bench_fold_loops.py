"""How many tokens per pass over the accumulator: the loop shapes behind `core/compiled.py`'s kernels (stop 50).

One long row (17,400 tokens × 768 float32, 52.9 MB), one thread, every call after a 400 MiB read that flushes
the caches; medians of 11 interleaved rounds as × numpy's flat ``max`` (a plain read). Loops: the sum one token
per pass and eight per pass (the kernels' `_add_tokens`), the max with the NaN-aware select one token per pass
(the old kernel) and eight per pass, the NaN-skipping max eight per pass bare, with a running sum beside it, and
with the unordered compare the kernel keeps, and the weighted sum eight per pass, plain and fused.

    python benchmarks/bench_fold_loops.py
"""

from __future__ import annotations

import time

import numba
import numpy as np

TOKENS, WIDTH = 17_400, 768


def _eight(flat, i, width, n):  # the eight tokens at i as slices (computed-offset indexing made LLVM gather)
    b = i * width
    return (flat[b : b + n], flat[b + width :], flat[b + 2 * width :], flat[b + 3 * width :],
            flat[b + 4 * width :], flat[b + 5 * width :], flat[b + 6 * width :], flat[b + 7 * width :])  # fmt: skip


def sum_one(flat, acc, w):
    for t in range(TOKENS):
        token = flat[t * WIDTH :]
        for j in range(WIDTH):
            acc[j] = acc[j] + token[j]


def sum_eight(flat, acc, w):
    for i in range(0, TOKENS - 7, 8):
        t0, t1, t2, t3, t4, t5, t6, t7 = _eight(flat, i, WIDTH, WIDTH)
        for j in range(WIDTH):
            acc[j] = (((((((acc[j] + t0[j]) + t1[j]) + t2[j]) + t3[j]) + t4[j]) + t5[j]) + t6[j]) + t7[j]


def weighted_eight(flat, acc, w):
    for i in range(0, TOKENS - 7, 8):
        t0, t1, t2, t3, t4, t5, t6, t7 = _eight(flat, i, WIDTH, WIDTH)
        for j in range(WIDTH):
            a = (((acc[j] + w[i] * t0[j]) + w[i + 1] * t1[j]) + w[i + 2] * t2[j]) + w[i + 3] * t3[j]
            acc[j] = (((a + w[i + 4] * t4[j]) + w[i + 5] * t5[j]) + w[i + 6] * t6[j]) + w[i + 7] * t7[j]


def max_one_nan_aware(flat, acc, w):
    for t in range(TOKENS):
        token = flat[t * WIDTH :]
        for j in range(WIDTH):
            a, x = acc[j], token[j]
            acc[j] = a if (a >= x or a != a) else x


def max_eight_nan_aware(flat, acc, w):
    for i in range(0, TOKENS - 7, 8):
        t0, t1, t2, t3, t4, t5, t6, t7 = _eight(flat, i, WIDTH, WIDTH)
        for j in range(WIDTH):
            a = acc[j]
            for x in (t0[j], t1[j], t2[j], t3[j], t4[j], t5[j], t6[j], t7[j]):  # (a tuple: unrolled)
                a = a if (a >= x or a != a) else x
            acc[j] = a


def _max_eight(note):
    def run(flat, acc, w):
        seen = False
        for i in range(0, TOKENS - 7, 8):
            t0, t1, t2, t3, t4, t5, t6, t7 = _eight(flat, i, WIDTH, WIDTH)
            for j in range(WIDTH):
                x0, x1, x2, x3, x4, x5, x6, x7 = t0[j], t1[j], t2[j], t3[j], t4[j], t5[j], t6[j], t7[j]
                a = acc[j]
                for x in (x0, x1, x2, x3, x4, x5, x6, x7):  # (a tuple: unrolled)
                    a = x if x > a else a
                acc[j] = a
                if note == 1:  # a running sum: not finite after a NaN
                    w[j] = w[j] + x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7
                elif note == 2:  # the kernel's: unordered compares
                    seen |= (x0 != x0) | (x1 != x1) | (x2 != x2) | (x3 != x3) | (x4 != x4) | (x5 != x5)
                    seen |= (x6 != x6) | (x7 != x7)
        return seen

    return run


def loops() -> dict:
    jit = numba.njit(nogil=True, boundscheck=False)
    fused = numba.njit(nogil=True, boundscheck=False, fastmath={"contract"})
    global _eight
    _eight = numba.njit(inline="always")(_eight)
    return {
        "sum, 1 token per pass": jit(sum_one), "sum, 8 per pass": jit(sum_eight),
        "weighted sum, 8 per pass": jit(weighted_eight), "weighted sum, 8 per pass, fused": fused(weighted_eight),
        "max NaN-aware, 1 per pass": jit(max_one_nan_aware), "max NaN-aware, 8 per pass": jit(max_eight_nan_aware),
        "max skipping NaN, 8 per pass": jit(_max_eight(0)), "  + a running sum": jit(_max_eight(1)),
        "  + unordered compares (kept)": jit(_max_eight(2)),
    }  # fmt: skip


def main() -> None:
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(TOKENS * WIDTH, dtype=np.float32)
    flusher = np.ones(400 << 18, np.float32)
    acc, weights = np.zeros(WIDTH, np.float32), np.arange(1, TOKENS + 1, dtype=np.float32)
    calls = {"numpy max (plain read)": lambda: np.max(flat)}
    calls.update({name: (lambda f=f: f(flat, acc, weights)) for name, f in loops().items()})
    for call in calls.values():
        call()  # (compiles)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(11):
        for name, call in calls.items():
            flusher.sum()
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    floor = float(np.median(times["numpy max (plain read)"]))
    for name, values in times.items():
        median = float(np.median(values))
        print(f"{name:34s} {median * 1e3:7.3f} ms {median / floor:6.2f}x {flat.nbytes / median / 1e9:6.1f} GB/s")


if __name__ == "__main__":
    main()
