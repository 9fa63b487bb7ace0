"""Throughput of whole-text encoding: tokenpool's torch runner and ONNX runner (fp32, fp32 optimised, int8)
against sentence-transformers (torch, and its ``backend="onnx"`` when it loads offline), on STS-B sentences and
SciFact documents, with issue 20's targets checked.

Same model folder, batch size, CPU and thread count, one process; runs alternate between the candidates so
that machine noise hits all alike. Prints texts/s (median of the runs), the ratio to sentence-transformers'
torch ``encode``, the smallest cosine to its vectors, the int8 file's cosines against the fp32 one, STS-B
Spearman and SciFact nDCG@10 (whole corpus) of the fp32 and int8 files, every issue-20 target as met / NOT
met, a profile of where tokenpool's time goes, install sizes and cold starts.

The optimised and int8 files are made once (``tokenpool export-onnx --optimize [--quantize int8]``, calibrated
on SciFact documents the timing does not use) and kept in the export cache; their records say how.

    python benchmarks/bench_encode.py --threads 2 [--model FOLDER] [--batch-size 32] [--repeats 3]
        [--stsb 2758] [--scifact 600] [--no-ndcg]
"""

from __future__ import annotations

import argparse
import functools
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
ONNX_STACK = ("onnxruntime", "onnx", "tokenizers", "numpy")


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
model = sys.argv[4] or None
if sys.argv[2] == "onnx":
    encoder = Encoder(model, runtime="onnx", onnx_file=sys.argv[3])
else:
    encoder = Encoder(model, device="cpu")
encoder.encode("the first vector")
print(time.time() - start)
"""


def cold_start(runtime: str, onnx_file: str, repeats: int, model: str = "") -> float:
    times = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", _COLD, repr(time.time()), runtime, onnx_file, model],
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
    for ids in tokenization.id_batches(encoder.tokenize(texts, prompt="").ids, batch_size):
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


# -- issue 20 --------------------------------------------------------------------------------------------
ST_TORCH, FP32, OPTIMISED, INT8 = (
    "sentence-transformers torch",
    "tokenpool onnx fp32",
    "tokenpool onnx fp32 optimised",
    "tokenpool onnx int8",
)
# (label, data set, candidate, minimum ratio to sentence-transformers torch)
SPEED_TARGETS = (
    ("int8 >= 3.0x sentence-transformers on SciFact documents", "scifact", INT8, 3.0),
    ("int8 >= 5.0x sentence-transformers on STS-B", "stsb", INT8, 5.0),
    ("fp32 optimised >= 1.4x sentence-transformers on SciFact documents", "scifact", OPTIMISED, 1.4),
)


def _int8_recipe() -> Any:
    """int8 as measured best here that keeps every quality target: dynamic activations on the unfused graph,
    layer 0's FFN products kept fp32 (all-MiniLM-L6-v2: STS-B Spearman 99.70% of fp32, cosine p1 0.982).
    Measured and not taken: everything int8 (p1 0.978, 4.22x on STS-B), embeddings + layer 0's FFN output fp32
    (p1 0.981, Spearman 99.49%: 4.65x / 2.85x), the fused QAttention graph (7-14% slower), fused
    SkipLayerNorm/BiasGelu or MultiHeadAttention around int8 products, int8 attention products (no faster)."""
    from tokenpool.model.onnx_export import Recipe

    return Recipe(quantize="int8", keep_fp32=("*layer.0/intermediate/dense/*", "*layer.0/output/dense/*"))


def onnx_variants(root: Path, fp32: Path) -> dict[str, Path]:
    """The fp32-optimised and int8 files of ``fp32``, made once into the export cache (int8: `_int8_recipe`)."""
    from dataclasses import asdict

    from tokenpool.model.folders import transformer_dir
    from tokenpool.model.onnx import cached_export_path
    from tokenpool.model.onnx_export import Recipe, make_variant, read_record

    int8_recipe = _int8_recipe()
    folder = root / transformer_dir(root)
    texts = read_scifact(SCIFACT, 4100)[4000:]  # calibration / guard texts, not among the timed documents
    made = {}
    for label, recipe in ((OPTIMISED, Recipe(optimize=True)), (INT8, int8_recipe)):
        target = cached_export_path(folder).with_name(recipe.file_name())
        if not target.is_file():
            make_variant(root, fp32, target, recipe, texts=texts, texts_name="SciFact documents 4000-4099")
        made_by = (read_record(target) or {}).get("recipe")
        if made_by != asdict(recipe) | {"keep_fp32": list(recipe.keep_fp32)}:
            raise SystemExit(f"{target} was made by another recipe ({made_by}); move it away to remake it")
        made[label] = target
    return made


def onnx_encoder(root: Path, path: Path, threads: int | None) -> Any:
    """The Encoder on an ONNX file, its onnxruntime session on ``threads`` intra-op threads."""
    from tokenpool import Encoder
    from tokenpool.model.folders import transformer_dir
    from tokenpool.model.onnx import OnnxRunner

    encoder = Encoder(root, runtime="onnx", onnx_file=path)
    if threads is not None:
        folder = root / transformer_dir(root)
        encoder.runner = OnnxRunner(
            folder, sparse=False, device=None, dtype=None, onnx_file=path, threads=threads
        )
    return encoder


def quality(encoders: dict[str, Any], batch_size: int, stsb_texts: list[str], ndcg: bool) -> dict[str, Any]:
    """int8 vs fp32 cosines over the STS-B sentences; STS-B Spearman and SciFact nDCG@10 of fp32 and int8."""
    from tokenpool.evaluation.retrieval import evaluate_retrieval
    from tokenpool.evaluation.sts import evaluate_pairs, read_pairs
    from tokenpool.model.onnx_export import cosine_summary

    fp32, int8 = encoders[FP32], encoders[INT8]
    out: dict[str, Any] = {
        "cosine": cosine_summary(fp32.encode(stsb_texts, batch_size=batch_size), int8.encode(stsb_texts, batch_size=batch_size))
    }  # fmt: skip
    pairs = read_pairs(str(STSB))
    for name in (FP32, OPTIMISED, INT8):
        out[f"stsb {name}"] = evaluate_pairs(encoders[name], pairs, [None], batch_size=batch_size)[None]
        if ndcg and name != OPTIMISED:
            result = evaluate_retrieval(SCIFACT.parent, encoders[name], batch_size=batch_size)
            out[f"ndcg {name}"] = 100 * result.rows[0].scores.ndcg_at_10
    return out


def report_targets(
    ratios: dict[tuple[str, str], float], cosines: dict[tuple[str, str], float], q: dict
) -> None:
    """Every issue-20 target with the measured value and met / NOT met."""
    rows = [
        (label, ratios[(data, name)], goal, f"{ratios[(data, name)]:.2f}x")
        for label, data, name, goal in SPEED_TARGETS
    ]
    rows.append(("fp32 optimised min cosine vs torch on SciFact >= 0.99999", cosines[("scifact", OPTIMISED)], 0.99999,
                 f"{cosines[('scifact', OPTIMISED)]:.7f}"))  # fmt: skip
    stsb = q[f"stsb {INT8}"] / q[f"stsb {FP32}"]
    rows.append(
        (
            "int8 STS-B Spearman >= 99.5% of fp32",
            stsb,
            0.995,
            f"{q[f'stsb {INT8}']:.2f} / {q[f'stsb {FP32}']:.2f} = {100 * stsb:.2f}%",
        )
    )
    if f"ndcg {INT8}" in q:
        ndcg = q[f"ndcg {INT8}"] / q[f"ndcg {FP32}"]
        rows.append(
            (
                "int8 SciFact nDCG@10 >= 99.0% of fp32",
                ndcg,
                0.99,
                f"{q[f'ndcg {INT8}']:.2f} / {q[f'ndcg {FP32}']:.2f} = {100 * ndcg:.2f}%",
            )
        )
    p1 = q["cosine"]["p1"]
    rows.append(("int8 1st-percentile cosine vs fp32 over the STS-B sentences >= 0.98", p1, 0.98,
                 f"{p1:.5f} (min {q['cosine']['min']:.5f}, median {q['cosine']['median']:.5f})"))  # fmt: skip
    print("\nissue 20 targets:")
    for label, value, goal, shown in rows:
        print(f"  [{'met' if value >= goal else 'NOT met'}] {label}: {shown}")


def main(argv: list[str] | None = None) -> int:
    from tokenpool.cli.common import positive_int  # (torch.set_num_threads(0) raises)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch and ONNX Runtime threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each candidate per data set")
    parser.add_argument("--stsb", type=int, default=2758, help="STS-B sentences (both sides of the pairs)")
    parser.add_argument("--scifact", type=int, default=600, help="first SciFact documents (title + abstract)")
    parser.add_argument(
        "--no-ndcg", action="store_true", help="skip SciFact nDCG@10 (encodes the whole corpus)"
    )
    parser.add_argument("--cold-repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder
    from tokenpool.model.folders import transformer_dir
    from tokenpool.model.onnx import export_to_cache, find_onnx_file

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch_encoder = Encoder(args.model, device="cpu")
    root = torch_encoder.model_path
    onnx_path = find_onnx_file(root / transformer_dir(root), None) or export_to_cache(
        root / transformer_dir(root)
    )
    files = {FP32: onnx_path, **onnx_variants(root, onnx_path)}
    encoders = {name: onnx_encoder(root, path, args.threads) for name, path in files.items()}
    st_torch = SentenceTransformer(str(root), device="cpu")
    candidates: dict[str, Any] = {
        ST_TORCH: lambda texts: st_torch.encode(texts, batch_size=args.batch_size),
        "tokenpool torch": lambda texts: torch_encoder.encode(texts, batch_size=args.batch_size),
        **{name: functools.partial(e.encode, batch_size=args.batch_size) for name, e in encoders.items()},
    }
    try:
        st_onnx = SentenceTransformer(
            str(root), device="cpu", backend="onnx", model_kwargs={"file_name": str(onnx_path)}
        )
        candidates["sentence-transformers onnx"] = lambda texts: st_onnx.encode(
            texts, batch_size=args.batch_size
        )
    except Exception as err:  # needs optimum[onnxruntime]
        print(f"sentence-transformers backend='onnx' not run: {type(err).__name__}: {str(err)[:160]}")

    uptime = os.getloadavg()
    print(
        f"{root}: batch {args.batch_size}, {threads} torch threads, onnxruntime "
        f"{__import__('onnxruntime').__version__}, {os.cpu_count()} CPUs, load {uptime[0]:.2f} {uptime[1]:.2f} "
        f"{uptime[2]:.2f}; ONNX files: "
        + ", ".join(f"{name.split()[-1]} {path}" for name, path in files.items())
    )
    data = {
        "stsb": (f"STS-B ({args.stsb} sentences)", read_stsb(STSB, args.stsb)),
        "scifact": (f"SciFact ({args.scifact} documents)", read_scifact(SCIFACT, args.scifact)),
    }
    ratios: dict[tuple[str, str], float] = {}
    cosines: dict[tuple[str, str], float] = {}
    for key, (label, texts) in data.items():
        reference = candidates[ST_TORCH](texts)
        vectors = {name: run(texts) for name, run in candidates.items()}  # also a warm-up
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeats):
            for name, run in candidates.items():
                start = time.perf_counter()
                run(texts)
                times[name].append(time.perf_counter() - start)
        rates = {name: len(texts) / statistics.median(values) for name, values in times.items()}
        base = rates[ST_TORCH]
        print(f"\n{label}  (load now {os.getloadavg()[0]:.2f})")
        print(f"  {'candidate':<32}{'texts/s':>10}{'vs ST torch':>13}{'min cos vs ST':>16}  runs (texts/s)")
        for name, rate in rates.items():
            ratios[(key, name)], cosines[(key, name)] = rate / base, min_cos(vectors[name], reference)
            runs = ", ".join(f"{len(texts) / t:.0f}" for t in times[name])
            print(f"  {name:<32}{rate:>10.1f}{rate / base:>12.2f}x{cosines[(key, name)]:>16.7f}  {runs}")
        for name, encoder in (("torch", torch_encoder), ("onnx int8", encoders[INT8])):
            spent = profile(encoder, texts, args.batch_size)
            total = sum(spent.values())
            shares = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in spent.items())
            print(f"  profile tokenpool {name}: {shares}")

    report_targets(ratios, cosines, quality(encoders, args.batch_size, data["stsb"][1], not args.no_ndcg))
    print("\ninstall size (installed files of the packages and their dependencies, this environment):")
    for label, roots in (("torch stack", TORCH_STACK), ("onnx stack", ONNX_STACK)):
        size, names = install_size(roots)
        print(f"  {label}: {size / 2**20:.0f} MiB ({', '.join(names)})")
    print(f"cold start, process start -> first vector (median of {args.cold_repeats}):")
    for runtime in ("torch", "onnx"):
        print(
            f"  {runtime}: {cold_start(runtime, str(onnx_path), args.cold_repeats, args.model or ''):.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
