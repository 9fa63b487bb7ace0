"""Retrieval quality and speed: `tokenpool.evaluate_retrieval` on a BEIR folder, every pooling strategy from one
forward pass, each ranking cross-checked against pytrec_eval (when installed).

    python benchmarks/bench_retrieval.py ../shared/data/ir/scifact [--pooling all] [--threads 2] [--json out.json]
        [--modes truncate,bm25,hybrid:truncate] [--bm25 k1=1.2,stemmer=english] [--max-doc-tokens 1024]
        [--search-peak]

Prints the table (nDCG@10, recall@100, MRR@10 ×100, texts/s) and, per row, the largest difference between our
per-query figures and pytrec_eval's on the same top-100 run. ``--max-doc-tokens N`` cuts every document after
its first N tokens of the model's tokenizer (for every mode, BM25 included): a smaller variant of a long-document
set, reported as such. ``--search-peak`` traces the memory each exact search allocates (tracemalloc, searches
only) and prints the largest peak next to ``max_bytes``; the process's peak RSS is printed at the end.
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


def cut_documents(data, encoder, limit: int):
    """The set with each document cut after its ``limit``-th token (of ``encoder``'s tokenizer)."""
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.model.longdocs import tokenize_document

    texts = []
    for text in data.doc_texts:
        tokens = tokenize_document(encoder.tokenization, text)
        texts.append(text if len(tokens) <= limit else text[: int(tokens.ends[limit - 1])])
    return RetrievalSet(data.doc_ids, texts, data.query_ids, data.query_texts, data.qrels, name=data.name)


def trace_searches(peaks: list[int]) -> None:
    """Record the tracemalloc peak of every exact search `evaluate_retrieval` runs."""
    import tracemalloc

    from tokenpool.evaluation import retrieval

    search = retrieval.exact_search

    def traced(*args, **kwargs):
        tracemalloc.start()
        try:
            return search(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    retrieval.exact_search = traced


def main(argv: list[str] | None = None) -> int:
    from tokenpool.evaluation.search import DEFAULT_MAX_BYTES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--pooling", default="all")
    parser.add_argument("--model")
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--modes", default="truncate")
    parser.add_argument("--bm25", default=None, help="BM25 settings, as tokenpool evaluate --bm25")
    parser.add_argument("--max-doc-tokens", type=int, default=None)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--search-peak", action="store_true")
    args = parser.parse_args(argv)

    import resource

    import torch

    torch.set_num_threads(args.threads)
    from tokenpool import Encoder, evaluate_retrieval
    from tokenpool.evaluation.beir import read_beir

    encoder = Encoder(args.model, max_length=args.max_length)
    pooling = None if args.pooling == "auto" else args.pooling
    data = read_beir(args.folder)
    if args.max_doc_tokens:
        data = cut_documents(data, encoder, args.max_doc_tokens)
        print(f"documents cut after {args.max_doc_tokens} tokens")
    peaks: list[int] = []
    if args.search_peak:
        trace_searches(peaks)
    # --modes goes as one string: the library splits it as `tokenpool evaluate --modes` does (spaces stripped)
    result = evaluate_retrieval(
        data, encoder, pooling=pooling, batch_size=args.batch_size, progress=True, modes=args.modes,
        bm25=args.bm25, max_bytes=args.max_bytes,
    )
    print(
        f"{encoder!r}\n{result.data.name}: {len(result.data.doc_ids)} documents, {len(result.data.query_ids)} queries"
    )
    print(result.table())
    if result.query_seconds:
        print(f"queries: {len(result.data.query_ids) / result.query_seconds:.1f} texts/s")
    if peaks:
        print(f"exact search: largest traced peak {max(peaks) / 2**20:.1f} MiB (max_bytes {args.max_bytes / 2**20:.1f} MiB)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:.0f} MiB")
    differences = pytrec_differences(result)
    for name, worst in differences.items():
        print(f"pytrec_eval check {name}: max |difference| over queries and metrics = {worst:.2e}")
    if args.json:
        summary = result.to_dict()
        summary["pytrec_eval_max_difference"] = differences
        summary["torch_threads"] = args.threads
        summary["max_doc_tokens"] = args.max_doc_tokens
        summary["search_peak_bytes"] = max(peaks) if peaks else None
        summary["peak_rss_mib"] = rss
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
