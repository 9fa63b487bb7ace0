"""Pooling on a GPU: tokenpool against sentence-transformers and the CUDA floor, in float16, bfloat16 and float32.

One short script for a lent GPU machine (issue 19, item 4). For each dtype and shape it runs the pooling
benchmark (`tokenpool.bench.pooling`) on the device: the floor is the fastest plain read of the packed real
tokens there (torch's ``sum()`` or ``amax()``), next to the device's read bandwidth (a 1 GiB read); every
strategy, padded and packed, is timed as a ratio to that floor (and in GB/s), with sentence-transformers'
padded and packed paths when it is installed, and each call's peak device memory. Timings are per call and
synchronised (``pool`` synchronises once anyway, for its mask analysis). The first shape is the CPU benchmark's
reference batch, where a GPU is launch-bound; the second is large enough (0.5 GB of real float16 tokens) to be
bound by memory.

    # on the GPU machine, from the repository root (see benchmarks/device/run_pooling.sh)
    python benchmarks/device/bench_pooling_cuda.py --out "$OUT"
    # anywhere: the same code on the CPU, a check that the script runs (its figures are not GPU figures)
    python benchmarks/device/bench_pooling_cuda.py --device cpu --dtypes float32,bfloat16 --shapes 8x64x32 \\
        --repeats 3

Writes ``pooling_cuda.txt`` (the tables) and ``pooling_cuda.json`` (every report) to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # run from a checkout, no install needed

from tokenpool.bench import pooling as bench  # noqa: E402

DTYPES = "float16,bfloat16,float32"
SHAPES = "64x512x768,128x1024x4096"  # B x L x D


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_pooling_cuda.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu checks the script)")
    parser.add_argument("--dtypes", default=DTYPES, help=f"comma-separated (default {DTYPES})")
    parser.add_argument("--shapes", default=SHAPES, help=f"comma-separated BxLxD (default {SHAPES})")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per candidate (default 20)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds the calls are spread over (default 4)")
    parser.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    parser.add_argument("--out", type=Path, default=None, help="folder for pooling_cuda.txt and .json")
    args = parser.parse_args(argv)
    try:
        args.shape_list = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    except ValueError:
        parser.error(f"--shapes takes BxLxD,BxLxD,...; got {args.shapes!r}")
    if any(len(shape) != 3 or min(shape) < 1 for shape in args.shape_list):
        parser.error(f"--shapes takes BxLxD with positive sizes; got {args.shapes!r}")
    return args


def bench_argv(args: argparse.Namespace, dtype: str, shape: tuple[int, int, int]) -> list[str]:
    """The options of one `tokenpool bench` run."""
    batch, length, dim = shape
    argv = [
        "--device", args.device, "--dtype", dtype, "--batch", str(batch), "--length", str(length),
        "--dim", str(dim), "--repeats", str(args.repeats), "--rounds", str(args.rounds), "--warmup", "3",
        "--libraries", "torch", "--no-scaling",
    ]  # fmt: skip
    return argv + (["--no-st"] if args.no_st else [])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"bench_pooling_cuda: error: --device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    reports, texts = [], []
    for shape in args.shape_list:
        for dtype in args.dtypes.split(","):
            started = time.perf_counter()
            try:
                report = bench.run(bench.parse_args(bench_argv(args, dtype.strip(), shape)))
            except bench.BenchError as exc:
                print(f"bench_pooling_cuda: error: {exc}", file=sys.stderr)
                return 2
            report["seconds"] = round(time.perf_counter() - started, 1)
            reports.append(report)
            texts.append(bench.format_report(report))
            print(texts[-1], f"\n({report['seconds']} s)\n", flush=True)
            if torch.device(args.device).type == "cuda":
                torch.cuda.empty_cache()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "pooling_cuda.txt").write_text("\n\n".join(texts) + "\n")
        (args.out / "pooling_cuda.json").write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
