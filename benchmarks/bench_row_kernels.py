"""Compiled row kernels (`core/compiled.py`, numba) against numpy's own, side by side in one process.

Interleaved rounds on the pooling benchmark's batch (B=64, L=512, D=768 float32, rows of 17–511 tokens): the
floor (the faster of torch's ``sum()`` / ``amax()`` over the packed real tokens), then every candidate with the
compiled kernels on and off, alternating which goes first. Prints medians as × floor and the speed-up.

    python benchmarks/bench_row_kernels.py --threads 2 --rounds 60
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tokenpool import pool, pool_packed
from tokenpool.cli.common import positive_int
from tokenpool.core import compiled, fast


def candidates(rng: np.random.Generator) -> tuple[dict, torch.Tensor]:
    """Name → call, and the packed tokens the floor reads."""
    rows, length, dim = 64, 512, 768
    lengths = rng.integers(17, length, rows)
    hidden = rng.standard_normal((rows, length, dim), dtype=np.float32)
    mask = np.arange(length)[None] < lengths[:, None]
    tokens, offsets = np.ascontiguousarray(hidden[mask]), np.concatenate([[0], np.cumsum(lengths)])
    tensors = [torch.from_numpy(a) for a in (hidden, mask, tokens, offsets)]
    calls = {}
    for strategy in ("mean", "max", "weightedmean"):
        calls[f"numpy padded {strategy}"] = lambda s=strategy: pool(hidden, mask, s)
        calls[f"numpy packed {strategy}"] = lambda s=strategy: pool_packed(tokens, offsets, s)
        calls[f"torch padded {strategy}"] = lambda s=strategy: pool(tensors[0], tensors[1], s)
        calls[f"torch packed {strategy}"] = lambda s=strategy: pool_packed(tensors[2], tensors[3], s)
    return calls, tensors[2]


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fast.set_num_threads(args.threads)
    if compiled.kernels() is None:
        raise SystemExit("numba is not installed: pip install 'tokenpool[fast]'")
    calls, packed = candidates(np.random.default_rng(0))
    for call in calls.values():
        call()
    floor, times = [], {(name, on): [] for name in calls for on in (True, False)}
    for round_ in range(args.rounds):
        floor.append(min(timed(packed.amax), timed(packed.sum)))
        for name, call in calls.items():
            for on in (True, False) if round_ % 2 else (False, True):
                compiled.ENABLED = on
                times[name, on].append(timed(call))
    compiled.ENABLED = True
    base = float(np.median(floor))
    print(f"{args.threads} threads: floor {base * 1e3:.3f} ms ({packed.numpy().nbytes / base / 1e9:.1f} GB/s)")
    for name in calls:
        on, off = (float(np.median(times[name, flag])) for flag in (True, False))
        print(f"  {name:28s} compiled {on / base:.2f}x   numpy {off / base:.2f}x   numpy/compiled {off / on:.2f}")


if __name__ == "__main__":
    main()
