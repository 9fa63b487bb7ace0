"""Long-document modes on BEIR-layout sets: nDCG@10 and recall@100 (pytrec_eval) per mode, with texts/s.

Modes: ``truncate`` (the model's first max_length tokens), ``windows`` (one vector over every token, from
overlapping windows), ``late-N`` (chunks of N tokens pooled from the document's windows) and ``naive-N`` (each
chunk's text encoded alone). A document scores as its best chunk. ``windows`` and every ``late-N`` come from
one pass over the model (the same windows), so they share one texts/s figure. Queries are encoded whole.

Vectors are cached under ``--cache`` (one .npy per set, mode and option set): a rerun only scores.

    python benchmarks/bench_longdocs.py ../shared/data/ir/qmsum [--max-doc-tokens N] [--window-stride S]
        [--sizes 128,256] [--modes truncate,windows,late,naive] [--threads 2] [--chunk-specs boundaries:256]
        [--model FOLDER] [--device cuda] [--json OUT.json]

``--max-doc-tokens N`` cuts every document after its first N tokens (for every mode alike): a cheaper,
smaller variant of the task, reported as such.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402


def read_set(folder: Path) -> tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """(doc ids, doc texts = title + " " + text as BEIR, judged query ids, their texts, qrels)."""
    doc_ids, docs = [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                doc_ids.append(str(obj["_id"]))
                docs.append((obj.get("title", "") + " " + obj["text"]).strip())
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, score = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(score)
    query_ids, queries = [], []
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                if str(obj["_id"]) in qrels:
                    query_ids.append(str(obj["_id"]))
                    queries.append(obj["text"])
    return doc_ids, docs, query_ids, queries, qrels


def cut_documents(encoder, docs: list[str], limit: int) -> list[str]:
    """Each document up to the end of its ``limit``-th token."""
    from tokenpool.model.longdocs import tokenize_document

    out = []
    for text in docs:
        tokens = tokenize_document(encoder.tokenization, text)
        out.append(text if len(tokens) <= limit else text[: int(tokens.ends[limit - 1])])
    return out


def windows_and_late(encoder, docs: list[str], sizes: list[int], stride: int | None, batch_size: int):
    """One pass: {"windows": (doc_index, vectors), "late-N": (doc_index, vectors)}."""
    from tokenpool.model.longdocs import TokenChunks, WindowEngine, token_chunks, tokenize_document

    engine = WindowEngine(encoder, prompt=None, stride=stride)
    plans = {}

    def documents():
        for i, text in enumerate(docs):
            tokens = tokenize_document(encoder.tokenization, text)
            groups, ranges = [1], []  # the whole document first, then each size's chunks, from the same windows
            for size in sizes:
                these = token_chunks(len(tokens), TokenChunks(size, 0)) or [(0, 0)]
                ranges.extend(these)
                groups.append(len(these))
            plans[i] = groups
            yield engine.plan(i, tokens, ranges, False, whole=True)

    results: dict[int, np.ndarray] = {}
    for done in engine.run(documents(), batch_size):
        results[done.index] = engine.vectors(done)
    out = {}
    for k, name in enumerate(["windows", *[f"late-{s}" for s in sizes]]):
        index, vectors = [], []
        for i in range(len(docs)):
            groups = plans[i]
            first = sum(groups[:k])
            block = results[i][first : first + groups[k]]
            index.extend([i] * len(block))
            vectors.append(block)
        out[name] = (np.array(index, dtype=np.int64), np.concatenate(vectors))
    return out


def naive(encoder, docs: list[str], size: int, batch_size: int):
    return chunk_mode(encoder, docs, f"tokens:{size}:0", "naive", batch_size)


def chunk_mode(encoder, docs: list[str], spec: str, chunking: str, batch_size: int):
    """(document of each chunk, chunk vectors) from `Encoder.encode_chunks`; vectors must be finite."""
    chunks = encoder.encode_chunks(docs, chunks=spec, chunking=chunking, batch_size=batch_size)
    if not np.isfinite(chunks.vectors).all():
        raise SystemExit(f"non-finite chunk vectors for {spec} {chunking}")
    return chunks.doc, chunks.vectors


def score(doc_index, vectors, n_docs, query_vectors, query_ids, doc_ids, qrels) -> dict[str, float]:
    """nDCG@10 and recall@100 (pytrec_eval) of exact cosine search; a document scores as its best unit."""
    import pytrec_eval

    if not (np.isfinite(vectors).all() and np.isfinite(query_vectors).all()):
        raise SystemExit("non-finite vectors: refusing to score")

    run = {}
    order = np.argsort(doc_index, kind="stable")
    doc_index, vectors = doc_index[order], vectors[order]
    bounds = np.searchsorted(doc_index, np.arange(n_docs))
    for q0 in range(0, len(query_ids), 256):
        sims = query_vectors[q0 : q0 + 256] @ vectors.T
        best = np.maximum.reduceat(sims, bounds, axis=1)
        top = np.argsort(-best, axis=1, kind="stable")[:, :100]
        for r, qid in enumerate(query_ids[q0 : q0 + 256]):
            run[qid] = {doc_ids[d]: float(best[r, d]) for d in top[r]}
    evaluator = pytrec_eval.RelevanceEvaluator(
        {q: qrels[q] for q in query_ids}, {"ndcg_cut.10", "recall.100"}
    )
    per = evaluator.evaluate(run)
    return {
        "nDCG@10": 100 * float(np.mean([v["ndcg_cut_10"] for v in per.values()])),
        "recall@100": 100 * float(np.mean([v["recall_100"] for v in per.values()])),
    }


def main(argv: list[str] | None = None) -> int:
    from tokenpool.cli.common import positive_int  # (torch.set_num_threads(0) raises)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--max-doc-tokens", type=int, default=None)
    parser.add_argument("--window-stride", type=int, default=None)
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--modes", default="truncate,windows,late,naive")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tokenpool-longdocs"))
    parser.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--chunk-specs",
        default="",
        help="more chunk modes, comma-separated chunk specs (e.g. boundaries:256), each run late and naive",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from tokenpool import Encoder

    encoder = Encoder(args.model, device=args.device)
    device = torch.cuda.get_device_name() if encoder.device.startswith("cuda") else f"cpu ({args.threads} threads)"
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    doc_ids, docs, query_ids, queries, qrels = read_set(args.folder)
    if args.max_doc_tokens:
        docs = cut_documents(encoder, docs, args.max_doc_tokens)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = set(args.modes.split(","))
    args.cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(
        json.dumps([args.folder.name, args.max_doc_tokens, args.window_stride, sizes, args.device]).encode()
    ).hexdigest()[:12]

    def cached(name, compute):
        path = args.cache / f"{args.folder.name}-{key}-{name}.npz"
        if path.exists():
            data = np.load(path)
            return (data["doc_index"], data["vectors"]), float(data["seconds"])
        started = time.perf_counter()
        result = compute()
        seconds = time.perf_counter() - started
        np.savez(path, doc_index=result[0], vectors=result[1], seconds=seconds)
        return result, seconds

    (_, query_vectors), _ = cached(
        "queries", lambda: (np.arange(len(queries)), encoder.encode(queries, batch_size=args.batch_size))
    )
    rows = []

    def report(name, result, seconds, note=""):
        figures = score(result[0], result[1], len(docs), query_vectors, query_ids, doc_ids, qrels)
        rows.append((name, figures, len(result[0]), len(docs) / seconds, note))
        print(
            f"{name:<12} nDCG@10 {figures['nDCG@10']:6.2f}  recall@100 {figures['recall@100']:6.2f}  "
            f"units {len(result[0]):6d}  texts/s {len(docs) / seconds:7.2f} {note}",
            flush=True,
        )

    if "truncate" in modes:
        result, seconds = cached(
            "truncate", lambda: (np.arange(len(docs)), encoder.encode(docs, batch_size=args.batch_size))
        )
        report("truncate", result, seconds)
    if "windows" in modes or "late" in modes:
        names = ["windows", *[f"late-{s}" for s in sizes]]
        paths = [args.cache / f"{args.folder.name}-{key}-{n}.npz" for n in names]
        if all(p.exists() for p in paths):
            loaded = {n: cached(n, None) for n in names}
        else:
            started = time.perf_counter()
            both = windows_and_late(encoder, docs, sizes, args.window_stride, args.batch_size)
            seconds = time.perf_counter() - started
            for n, p in zip(names, paths, strict=True):
                np.savez(p, doc_index=both[n][0], vectors=both[n][1], seconds=seconds)
            loaded = {n: (both[n], seconds) for n in names}
        for n in names:
            report(n, *loaded[n], note="(one pass for windows + late)")
    if "naive" in modes:
        from tokenpool.model.longdocs import Layout

        capacity = Layout.of(encoder.tokenization, None).capacity  # a naive chunk must fit one window
        for size in sorted({min(size, capacity) for size in sizes}):
            result, seconds = cached(f"naive-{size}", lambda s=size: naive(encoder, docs, s, args.batch_size))
            report(f"naive-{size}", result, seconds)
    for spec in [s for s in args.chunk_specs.split(",") if s]:
        for chunking in ("late", "naive"):
            result, seconds = cached(
                f"{chunking}-{spec.replace(':', '_')}",
                lambda spec=spec, chunking=chunking: chunk_mode(encoder, docs, spec, chunking, args.batch_size),
            )
            report(f"{chunking} {spec}", result, seconds)
    summary = {"set": args.folder.name, "max_doc_tokens": args.max_doc_tokens, "device": device, "rows": rows}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
