"""Retrieval quality and speed: `tokenpool.evaluate_retrieval` on a BEIR folder, every pooling strategy from one
forward pass, each ranking cross-checked against pytrec_eval (when installed).

    python benchmarks/bench_retrieval.py ../shared/data/ir/scifact [--pooling all] [--threads 2] [--json out.json]

Prints the table (nDCG@10, recall@100, MRR@10 ×100, texts/s) and, per row, the largest difference between our
per-query figures and pytrec_eval's on the same top-100 run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytrec_differences(result) -> dict[str, float]:
    """Largest |ours − pytrec_eval| over queries and metrics, per row (empty without pytrec_eval)."""
    try:
        import pytrec_eval
    except ImportError:
        return {}
    data = result.data
    measures = {"ndcg_cut.10", "recall.100"}
    out = {}
    for row in result.rows:
        run = row.ranking.run(data.query_ids, data.doc_ids)
        theirs = pytrec_eval.RelevanceEvaluator(data.qrels, measures).evaluate(run)
        top10 = {q: dict(list(docs.items())[:10]) for q, docs in run.items()}  # the run lists docs by rank
        rr = pytrec_eval.RelevanceEvaluator(data.qrels, {"recip_rank"}).evaluate(top10)
        worst = 0.0
        for i, qid in enumerate(data.query_ids):
            worst = max(
                worst,
                abs(row.per_query["nDCG@10"][i] - theirs[qid]["ndcg_cut_10"]),
                abs(row.per_query["recall@100"][i] - theirs[qid]["recall_100"]),
                abs(row.per_query["MRR@10"][i] - rr[qid]["recip_rank"]),
            )
        out[f"{row.mode}/{row.pooling}"] = worst
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--pooling", default="all")
    parser.add_argument("--model")
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from tokenpool import Encoder, evaluate_retrieval

    encoder = Encoder(args.model, max_length=args.max_length)
    pooling = None if args.pooling == "auto" else args.pooling
    result = evaluate_retrieval(
        args.folder, encoder, pooling=pooling, batch_size=args.batch_size, progress=True
    )
    print(
        f"{encoder!r}\n{result.data.name}: {len(result.data.doc_ids)} documents, {len(result.data.query_ids)} queries"
    )
    print(result.table())
    print(f"queries: {len(result.data.query_ids) / result.query_seconds:.1f} texts/s")
    differences = pytrec_differences(result)
    for name, worst in differences.items():
        print(f"pytrec_eval check {name}: max |difference| over queries and metrics = {worst:.2e}")
    if args.json:
        summary = result.to_dict()
        summary["pytrec_eval_max_difference"] = differences
        summary["torch_threads"] = args.threads
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
