"""Throughput of whole-text encoding: tokenpool's torch and ONNX runners against sentence-transformers (torch,
and its ``backend="onnx"`` when it loads offline), on STS-B sentences and SciFact documents.

Same model folder, batch size, CPU and thread count, one process; runs alternate between the candidates so
that machine noise hits all alike. Prints texts/s (median of the runs), the ratio to sentence-transformers'
torch ``encode``, the smallest cosine to its vectors, a profile of where tokenpool's time goes (tokenising vs
the forward pass vs pooling), the install size of the torch and ONNX stacks (their packages' files, with
dependencies, as installed here) and the cold start (process start → first vector) of each runtime.

    python benchmarks/bench_encode.py [--threads 2] [--batch-size 32] [--repeats 3] [--stsb 1000] [--scifact 500]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STSB = SHARED / "stsb" / "sts-test.csv"
SCIFACT = SHARED / "ir" / "scifact" / "corpus.jsonl"

TORCH_STACK = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy", "tqdm")
ONNX_STACK = ("onnxruntime", "tokenizers", "numpy")


def read_stsb(path: Path, count: int) -> list[str]:
    texts: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            texts.extend(line.rstrip("\n").split("\t")[5:7])
    return texts[:count]


def read_scifact(path: Path, count: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc.get('text', '')}".strip())
            if len(texts) == count:
                break
    return texts


# -- install size ---------------------------------------------------------------------------------------
def _requirements(dist: Any) -> list[str]:
    names = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement:
            continue
        names.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return names


def install_size(roots: tuple[str, ...]) -> tuple[int, list[str]]:
    """Bytes of the installed files of ``roots`` and their (non-extra) dependencies, and the packages counted."""
    from importlib import metadata

    seen: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        todo.extend(_requirements(dist))
    total = 0
    for dist in seen.values():
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total, sorted(seen)


# -- cold start ------------------------------------------------------------------------------------------
_COLD = """
import sys, time
start = float(sys.argv[1])
if sys.argv[2] == "onnx":  # the ONNX install has no torch or transformers: block them
    import importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "sentence_transformers"):
                raise ImportError(name)
    sys.meta_path.insert(0, Block())
from tokenpool import Encoder
if sys.argv[2] == "onnx":
    encoder = Encoder(runtime="onnx", onnx_file=sys.argv[3])
else:
    encoder = Encoder(device="cpu")
encoder.encode("the first vector")
print(time.time() - start)
"""


def cold_start(runtime: str, onnx_file: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", _COLD, repr(time.time()), runtime, onnx_file],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


# -- profile ---------------------------------------------------------------------------------------------
def profile(encoder: Any, texts: list[str], batch_size: int) -> dict[str, float]:
    """Seconds spent tokenising + collating, in the runner's forward pass, and pooling, for one encode."""
    tokenization, runner = encoder.tokenization, encoder.runner
    spent = {"tokenize": 0.0, "forward": 0.0, "pool": 0.0}
    batches = []
    start = time.perf_counter()
    for ids in tokenization.batches(texts, batch_size, None):
        batches.append(ids)
    spent["tokenize"] = time.perf_counter() - start
    for ids in batches:
        start = time.perf_counter()
        hidden, mask = runner.forward(ids.input_ids, ids.attention_mask)
        middle = time.perf_counter()
        with runner.inference():
            from tokenpool import pool

            runner.to_float32_numpy(pool(hidden, mask, "mean", normalize=True))
        spent["forward"] += middle - start
        spent["pool"] += time.perf_counter() - middle
    return spent


def min_cos(a: Any, b: Any) -> float:
    import numpy as np

    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each candidate per data set")
    parser.add_argument("--stsb", type=int, default=1000, help="STS-B sentences (both sides of the pairs)")
    parser.add_argument("--scifact", type=int, default=500, help="first SciFact documents (title + abstract)")
    parser.add_argument("--cold-repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder
    from tokenpool.model.onnx import cached_export_path, export_onnx, find_onnx_file

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch_encoder = Encoder(device="cpu")
    onnx_path = find_onnx_file(torch_encoder.model_path, None) or export_onnx(
        torch_encoder.model_path, cached_export_path(torch_encoder.model_path)
    )
    onnx_encoder = Encoder(runtime="onnx", onnx_file=onnx_path)
    if args.threads is not None:
        from tokenpool.model.onnx import OnnxRunner

        onnx_encoder.runner = OnnxRunner(
            onnx_encoder.model_path,
            sparse=False,
            device=None,
            dtype=None,
            onnx_file=onnx_path,
            threads=args.threads,
        )
    st_torch = SentenceTransformer(str(torch_encoder.model_path), device="cpu")
    candidates: dict[str, Any] = {
        "tokenpool torch": lambda texts: torch_encoder.encode(texts, batch_size=args.batch_size),
        "tokenpool onnx": lambda texts: onnx_encoder.encode(texts, batch_size=args.batch_size),
        "sentence-transformers torch": lambda texts: st_torch.encode(texts, batch_size=args.batch_size),
    }
    try:
        st_onnx = SentenceTransformer(
            str(torch_encoder.model_path),
            device="cpu",
            backend="onnx",
            model_kwargs={"file_name": str(onnx_path)},
        )
        candidates["sentence-transformers onnx"] = lambda texts: st_onnx.encode(
            texts, batch_size=args.batch_size
        )
    except Exception as err:  # needs optimum[onnxruntime]
        print(f"sentence-transformers backend='onnx' not run: {type(err).__name__}: {str(err)[:160]}")

    uptime = os.getloadavg()
    print(
        f"batch {args.batch_size}, {threads} torch threads, onnxruntime {__import__('onnxruntime').__version__}, "
        f"{os.cpu_count()} CPUs, load {uptime[0]:.2f} {uptime[1]:.2f} {uptime[2]:.2f}; ONNX file {onnx_path}"
    )
    data = {
        f"STS-B ({args.stsb} sentences)": read_stsb(STSB, args.stsb),
        f"SciFact ({args.scifact} documents)": read_scifact(SCIFACT, args.scifact),
    }
    for label, texts in data.items():
        reference = candidates["sentence-transformers torch"](texts)
        cosines = {name: min_cos(run(texts), reference) for name, run in candidates.items()}  # also a warm-up
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeats):
            for name, run in candidates.items():
                start = time.perf_counter()
                run(texts)
                times[name].append(time.perf_counter() - start)
        rates = {name: len(texts) / statistics.median(values) for name, values in times.items()}
        base = rates["sentence-transformers torch"]
        print(f"\n{label}  (load now {os.getloadavg()[0]:.2f})")
        print(f"  {'candidate':<30}{'texts/s':>10}{'vs ST torch':>13}{'min cos vs ST':>16}  runs (texts/s)")
        for name, rate in rates.items():
            runs = ", ".join(f"{len(texts) / t:.0f}" for t in times[name])
            print(f"  {name:<30}{rate:>10.1f}{rate / base:>12.2f}x{cosines[name]:>16.7f}  {runs}")
        for name, encoder in (("torch", torch_encoder), ("onnx", onnx_encoder)):
            spent = profile(encoder, texts, args.batch_size)
            total = sum(spent.values())
            shares = ", ".join(f"{key} {value:.2f} s ({value / total:.0%})" for key, value in spent.items())
            print(f"  profile tokenpool {name}: {shares}")

    print("\ninstall size (installed files of the packages and their dependencies, this environment):")
    for label, roots in (("torch stack", TORCH_STACK), ("onnx stack", ONNX_STACK)):
        size, names = install_size(roots)
        print(f"  {label}: {size / 2**20:.0f} MiB ({', '.join(names)})")
    print(f"cold start, process start -> first vector (median of {args.cold_repeats}):")
    for runtime in ("torch", "onnx"):
        print(f"  {runtime}: {cold_start(runtime, str(onnx_path), args.cold_repeats):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
