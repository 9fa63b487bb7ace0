"""The Python around the pooling kernels: each `pool` / `pool_packed` call with `core/compiled.py`'s kernel call
stubbed out, timed right after a torch ``sum()`` of the benchmark's packed tokens (as pooling follows a large read:
its code and data come back from memory), right after a numpy read of 128 MiB of other memory (`bench_pooling.py
--mode evicted`: the caches hold nothing of the call's), right after the data's cache lines are flushed (`--mode
flushed`, the benchmark's default: code warm, data from memory) and in a loop of its own. Needs numba (the compiled route)
and torch.

    python benchmarks/bench_pool_overhead.py [--strategies mean,max] [--calls 300]

Medians in microseconds; what `bench_pooling.py` adds to each kernel's read (docs/performance.md, stop 37).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from tokenpool import pool, pool_packed
from tokenpool.bench.flush import flusher
from tokenpool.bench.pooling import evictor, make_data, parse_args
from tokenpool.core import compiled


def _median_us(call, before, calls: int) -> float:
    samples = []
    for _ in range(calls):
        before()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # (not splade: with the kernel stubbed its activation would run on uninitialised rows)
    parser.add_argument("--strategies", default="mean,max,weightedmean,cls")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    kernels = compiled.kernels()
    if kernels is None:
        print("numba is not installed: the compiled route does not run", file=sys.stderr)
        return 2
    data = make_data(parse_args([]))
    read = data["torch"][2].sum
    evict = evictor()
    kernels.run = lambda *args: None  # the kernels' reads out: what is left is the Python around them
    flush = flusher(data["torch"]) or (lambda: None)  # (no flush: not x86-64; the column is then a loop's)
    print(f"{'library':8} {'layout':7} {'strategy':14} {'after a read':>13} {'evicted':>8} {'flushed':>8} "
          f"{'in a loop':>10}")  # fmt: skip
    for library in ("torch", "numpy"):
        hidden, mask, tokens, offsets = data[library]
        for strategy in args.strategies.split(","):
            calls = {"padded": lambda s=strategy, h=hidden, m=mask: pool(h, m, s),
                     "packed": lambda s=strategy, t=tokens, o=offsets: pool_packed(t, o, s)}  # fmt: skip
            for layout, call in calls.items():
                for _ in range(20):
                    call()
                cold = _median_us(call, read, args.calls)
                evicted = _median_us(call, evict, args.calls)
                flushed = _median_us(call, flush, args.calls)
                warm = _median_us(call, lambda: None, args.calls)
                print(f"{library:8} {layout:7} {strategy:14} {cold:13.1f} {evicted:8.1f} {flushed:8.1f} {warm:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
