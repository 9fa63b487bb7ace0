"""Retrieval quality kept by compact precisions: nDCG@10 on SciFact (BEIR test qrels) with exact search.

The bundled all-MiniLM-L6-v2 embeds the 5,183 documents (``title + " " + text``, the model's 256-token limit)
and the 300 judged queries once, in float32. Each precision then scores every query against every document
the way a vector store compares its codes, and pytrec_eval computes nDCG@10 from the top 100:

- float32 / float16: dot products of the (unit-length) vectors;
- int8 / uint8: the cosine of the codes (integer dot products over the code norms; uint8 centred by −128),
  and the raw integer dot products; queries are quantized with the corpus calibration — the ranges of the
  first ``--calibration-size`` documents, as ``tokenpool embed`` takes them; also int8 with the top
  ``--rescore`` re-ranked by the cosine of the float32 query and the dequantized documents (the float32 row's
  similarity), and that score over all documents;
- binary / ubinary: D − 2·Hamming distance (the dot product of the ±1 sign vectors);
- ubinary + rescore: the ``--rescore`` best documents by Hamming distance, re-ranked by the float32 query
  against each document's ±1 code (the standard "rescore" recipe: only the packed bits are stored).

    python benchmarks/bench_precision.py [--data ../shared/data/ir/scifact] [--cache vectors.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ir" / "scifact"


def read_scifact(
    folder: Path,
) -> tuple[list[str], list[str], list[str], list[str], dict[str, dict[str, int]]]:
    """(doc ids, doc texts, query ids, query texts, qrels) of a BEIR folder; only judged queries are kept."""
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            query, doc, score = line.rstrip("\n").split("\t")
            qrels.setdefault(query, {})[doc] = int(score)
    doc_ids, docs = [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            doc_ids.append(str(record["_id"]))
            docs.append((record.get("title", "") + " " + record["text"]).strip())
    query_ids, queries = [], []
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if str(record["_id"]) in qrels:
                query_ids.append(str(record["_id"]))
                queries.append(record["text"])
    return doc_ids, docs, query_ids, queries, qrels


def top_run(scores, query_ids, doc_ids, k=100):
    """{query: {doc: score}} of the k best documents per query (pytrec_eval breaks ties by doc id)."""
    import numpy as np

    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {q: {doc_ids[d]: float(scores[i, d]) for d in top[i].tolist()} for i, q in enumerate(query_ids)}


def ndcg10(run, qrels) -> float:
    import numpy as np
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    return float(np.mean([v["ndcg_cut_10"] for v in evaluator.evaluate(run).values()]))


def main(argv: list[str] | None = None) -> int:
    from tokenpool.cli.common import positive_int  # (torch.set_num_threads(0) raises)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, help="float32 vectors: read if present, else written")
    parser.add_argument("--calibration-size", type=int, default=1000)
    parser.add_argument("--rescore", type=int, nargs="+", default=[40, 100], help="candidates re-ranked")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from tokenpool import Encoder
    from tokenpool.core.quantize import Calibration, bytes_per_vector, dequantize, quantize, unpack_signs
    from tokenpool.evaluation.precision import similarity_matrix

    torch.set_num_threads(args.threads)
    doc_ids, docs, query_ids, queries, qrels = read_scifact(args.data)
    encoder = Encoder()
    if args.cache is not None and args.cache.exists():
        cached = np.load(args.cache)
        doc_vectors, query_vectors = cached["docs"], cached["queries"]
    else:
        started = time.perf_counter()
        doc_vectors = encoder.encode_documents(docs, batch_size=args.batch_size, show_progress_bar=True)
        query_vectors = encoder.encode_queries(queries, batch_size=args.batch_size)
        print(
            f"encoded {len(docs)} documents and {len(queries)} queries in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        if args.cache is not None:
            np.savez(args.cache, docs=doc_vectors, queries=query_vectors)
    dim = doc_vectors.shape[1]
    calibration = Calibration.for_encoder(encoder, doc_vectors[: args.calibration_size])

    rows: list[tuple[str, int, float]] = []
    base = ndcg10(
        top_run(query_vectors.astype(np.float64) @ doc_vectors.T.astype(np.float64), query_ids, doc_ids),
        qrels,
    )
    rows.append(("float32", bytes_per_vector("float32", dim), base))

    def add(name: str, precision: str, scores: np.ndarray) -> None:
        rows.append(
            (name, bytes_per_vector(precision, dim), ndcg10(top_run(scores, query_ids, doc_ids), qrels))
        )

    def rescored(
        name: str, precision: str, shortlist_scores: np.ndarray, stored: np.ndarray, candidates: int
    ) -> None:
        """The best ``candidates`` by ``shortlist_scores``, re-ranked by the float32 query · ``stored``."""
        shortlist = np.argpartition(-shortlist_scores, candidates - 1, axis=1)[:, :candidates]
        run = {}
        for i, q in enumerate(query_ids):
            scores = stored[shortlist[i]].astype(np.float64) @ query_vectors[i].astype(np.float64)
            run[q] = {
                doc_ids[d]: float(v) for d, v in zip(shortlist[i].tolist(), scores.tolist(), strict=True)
            }
        rows.append((name, bytes_per_vector(precision, dim), ndcg10(run, qrels)))

    codes = {p: (quantize(query_vectors, p, calibration), quantize(doc_vectors, p, calibration)) for p in
             ("float16", "int8", "uint8", "binary", "ubinary")}  # fmt: skip
    add("float16", "float16", similarity_matrix(*codes["float16"], "float16", dim))
    for precision in ("int8", "uint8"):
        add(
            f"{precision} (cosine of the codes)",
            precision,
            similarity_matrix(*codes[precision], precision, dim),
        )
    int8_dots = similarity_matrix(*codes["int8"], "int8", dim, cosine=False)
    add("int8 (dot products of the codes)", "int8", int8_dots)
    dequantized = dequantize(codes["int8"][1], "int8", calibration).astype(np.float64)
    dequantized /= np.linalg.norm(dequantized, axis=1, keepdims=True)  # cosine, as the float32 row
    int8_cosine = similarity_matrix(*codes["int8"], "int8", dim)
    for candidates in args.rescore:
        rescored(f"int8 + rescore top {candidates}", "int8", int8_cosine, dequantized, candidates)
    add(
        "int8 docs, float32 query (all docs)",
        "int8",
        query_vectors.astype(np.float64) @ dequantized.T.astype(np.float64),
    )
    for precision in ("binary", "ubinary"):
        add(f"{precision} (Hamming)", precision, similarity_matrix(*codes[precision], precision, dim))
    signs = unpack_signs(codes["ubinary"][1], dimension=dim)  # ±1 per dimension: what the stored bits say
    hamming = similarity_matrix(*codes["ubinary"], "ubinary", dim)
    for candidates in args.rescore:
        rescored(f"ubinary + rescore top {candidates}", "ubinary", hamming, signs, candidates)

    print(
        f"SciFact test: {len(query_ids)} queries, {len(doc_ids)} documents, all-MiniLM-L6-v2 (D={dim}); "
        f"int8/uint8 ranges from the first {args.calibration_size} documents"
    )
    print(f"{'precision':<36} {'bytes/vector':>12} {'nDCG@10':>8} {'kept':>8}")
    for name, size, value in rows:
        print(f"{name:<36} {size:>12} {100 * value:>8.2f} {100 * value / base:>7.2f}%")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [{"precision": n, "bytes": b, "ndcg_at_10": v, "kept": v / base} for n, b, v in rows],
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
