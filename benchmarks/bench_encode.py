"""Throughput: `tokenpool.Encoder.encode` against `SentenceTransformer.encode` on the STS-B test sentences.

Same model folder, batch size, device (CPU) and torch threads, one process, runs alternating between the two
so that machine noise hits both alike. Prints texts/s (median of the runs) for each and the ratio.

    python benchmarks/bench_encode.py [--threads 2] [--batch-size 32] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stsb" / "sts-test.csv"


def read_stsb_sentences(path: Path) -> list[str]:
    """Both sentences of every pair of the STS-B test split (tab-separated; fields 6 and 7)."""
    texts: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            texts.extend(fields[5:7])
    return texts


def padding_report(encoder, texts: list[str], batch_size: int) -> str:
    """Tokens the model processes (real + padding) when batches are sorted by token count (tokenpool) or by
    character count (sentence-transformers), relative to the real tokens."""
    import numpy as np

    lengths = np.array([len(ids) for ids in encoder._tokenize(texts)])

    def padded(order: np.ndarray) -> int:
        return sum(
            int(lengths[order[i : i + batch_size]].max()) * len(order[i : i + batch_size])
            for i in range(0, len(order), batch_size)
        )

    by_tokens = padded(np.argsort(-lengths, kind="stable"))
    by_chars = padded(np.argsort([-len(t) for t in texts], kind="stable"))
    real = int(lengths.sum())
    return (
        f"tokens through the model: {real} real; padded batches sorted by tokens {by_tokens} "
        f"({by_tokens / real:.3f}x), by characters {by_chars} ({by_chars / real:.3f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one line per library plus the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="STS-B sts-test.csv")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each library")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    parser.add_argument("--profile", action="store_true", help="cProfile one tokenpool and one ST run")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    texts = read_stsb_sentences(args.data)[: args.limit]
    encoder = Encoder(args.model, device="cpu")
    st_model = SentenceTransformer(str(encoder.model_path), device="cpu")

    runners = {
        "tokenpool": lambda: encoder.encode(texts, batch_size=args.batch_size),
        "sentence-transformers": lambda: st_model.encode(texts, batch_size=args.batch_size),
    }
    # Warm-up (allocator, oneDNN kernels) and a check that both compute the same vectors.
    ours, theirs = (runners[name]() for name in runners)
    cosine = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(
        f"{len(texts)} texts, batch {args.batch_size}, {torch.get_num_threads()} torch threads, "
        f"model {encoder.model_path.parent.name}/{encoder.model_path.name}; min cosine tokenpool vs sentence-transformers {cosine.min():.7f}"
    )

    print(padding_report(encoder, texts, args.batch_size))

    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    rates = {name: len(texts) / statistics.median(values) for name, values in times.items()}
    cpu_rates = {name: len(texts) / statistics.median(values) for name, values in cpu.items()}
    for name, values in times.items():
        spread = ", ".join(f"{len(texts) / t:.0f}" for t in values)
        print(
            f"{name:>22}: {rates[name]:8.1f} texts/s wall, {cpu_rates[name]:8.1f} texts per CPU-second "
            f"(medians of {len(values)}; wall runs: {spread})"
        )
    ratio = rates["tokenpool"] / rates["sentence-transformers"]
    cpu_ratio = cpu_rates["tokenpool"] / cpu_rates["sentence-transformers"]
    print(f"{'ratio':>22}: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time (tokenpool / sentence-transformers)")

    if args.profile:
        import cProfile
        import pstats

        for name, run in runners.items():
            print(f"\n--- cProfile: {name} ---")
            profiler = cProfile.Profile()
            profiler.runcall(run)
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(14)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
