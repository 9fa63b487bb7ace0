"""Retrieval evaluation: metrics against pytrec_eval (trec_eval), exact search against a float64 brute force
(chunks, blocks, ties, memory bound), the BEIR reader, and `tokenpool evaluate FOLDER` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line
from hypothesis import given
from hypothesis import strategies as st

from tokenpool.errors import CorpusError
from tokenpool.evaluation.beir import RetrievalSet, document_text, read_beir
from tokenpool.evaluation.modes import truncate_mode
from tokenpool.evaluation.retrieval import evaluate_retrieval, metrics_per_query
from tokenpool.evaluation.search import BYTES_PER_SCORE, exact_search, tie_ranks
from tokenpool.evaluation.units import DocumentUnits

pytrec_eval = pytest.importorskip("pytrec_eval")

ROOT = Path(__file__).resolve().parents[1]
IR = ROOT.parent / "shared" / "data" / "ir"
MEASURES = {"ndcg_cut.10", "recall.100"}


def trec_order(scores: dict[str, float]) -> list[str]:
    """trec_eval's ranking, written independently: score descending, then document id descending by bytes."""
    by_id = sorted(scores, key=lambda d: d.encode("utf-8"), reverse=True)
    return sorted(by_id, key=lambda d: -scores[d])  # stable: equal scores keep the descending-id order


def pytrec_figures(qrels: dict, run: dict) -> dict[str, dict[str, float]]:
    """{query: {"nDCG@10", "recall@100", "MRR@10"}} from pytrec_eval (MRR@10 = recip_rank of the top 10)."""
    main = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    top10 = {q: {d: docs[d] for d in trec_order(docs)[:10]} for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {
        q: {"nDCG@10": m["ndcg_cut_10"], "recall@100": m["recall_100"], "MRR@10": rr[q]["recip_rank"]}
        for q, m in main.items()
    }


# ---------------------------------------------------------------------------------------------- metrics


doc_id_text = st.one_of(
    st.integers(0, 400).map(str), st.text("abAB09-_é", min_size=1, max_size=4)
)  # numeric-looking ids ("9" vs "10"), case, non-ASCII


@st.composite
def judged_runs(draw):
    ids = draw(st.lists(doc_id_text, min_size=1, max_size=130, unique=True))
    n_queries = draw(st.integers(1, 4))
    tied = draw(st.booleans())
    values = st.integers(-3, 3).map(float) if tied else st.floats(-1.0, 1.0, width=32)
    scores = np.asarray(draw(st.lists(values, min_size=n_queries * len(ids), max_size=n_queries * len(ids))))
    scores = scores.reshape(n_queries, len(ids)).astype(np.float32)
    qrels = {}
    for q in range(n_queries):
        judged = draw(st.lists(st.sampled_from(range(len(ids))), min_size=1, max_size=len(ids), unique=True))
        grades = draw(st.lists(st.integers(-1, 3), min_size=len(judged), max_size=len(judged)))
        grades[0] = draw(st.integers(1, 3))  # at least one relevant document
        qrels[f"q{q}"] = {ids[d]: g for d, g in zip(judged, grades, strict=True)}
    return ids, scores, qrels, draw(st.integers(BYTES_PER_SCORE, 4096))


@given(judged_runs())
def test_metrics_and_ranking_equal_pytrec_eval(case):
    ids, scores, qrels, max_bytes = case
    n_queries, n_docs = scores.shape
    query_ids = [f"q{q}" for q in range(n_queries)]
    # queries = basis vectors, units = score columns: the dot products are exactly the drawn scores
    ranking = exact_search(
        np.eye(n_queries, dtype=np.float32), scores.T.copy(), tie_rank=tie_ranks(ids), max_bytes=max_bytes
    )
    data = RetrievalSet(list(ids), ["x"] * n_docs, query_ids, ["q"] * n_queries, qrels)
    ours = metrics_per_query(ranking.indices, data.relevance(), n_docs)
    full_run = {q: {d: float(scores[i, j]) for j, d in enumerate(ids)} for i, q in enumerate(query_ids)}
    theirs = pytrec_figures(qrels, full_run)
    for i, q in enumerate(query_ids):
        assert [ids[d] for d in ranking.indices[i]] == trec_order(full_run[q])[:100]
        for name in ("nDCG@10", "recall@100", "MRR@10"):
            assert ours[name][i] == pytest.approx(theirs[q][name], abs=1e-9), (q, name)


def test_metric_definitions_on_a_hand_case():
    # ranking b, x, a, c; grades a=2, b=1, c=1 (c outside the top 10 would still count for recall@100)
    ids = ["a", "b", "c", "x"]
    ranking = np.array([[1, 3, 0, 2]])
    relevance = (np.array([0, 0, 0]), np.array([0, 1, 2]), np.array([2.0, 1.0, 1.0]))
    got = metrics_per_query(ranking, relevance, len(ids))
    dcg = 1 / np.log2(2) + 2 / np.log2(4) + 1 / np.log2(5)
    ideal = 2 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    assert got["nDCG@10"][0] == pytest.approx(dcg / ideal)
    assert got["recall@100"][0] == 1.0 and got["MRR@10"][0] == 1.0


def test_metrics_reject_bad_relevance():
    with pytest.raises(ValueError, match="positive grades"):
        metrics_per_query(np.zeros((1, 2), int), (np.array([0]), np.array([1]), np.array([0.0])), 2)
    with pytest.raises(ValueError, match="past the ranking"):
        metrics_per_query(np.zeros((1, 2), int), (np.array([1]), np.array([1]), np.array([1.0])), 2)
    with pytest.raises(ValueError, match="twice"):
        metrics_per_query(
            np.zeros((1, 2), int), (np.array([0, 0]), np.array([1, 1]), np.array([1.0, 2.0])), 2
        )


# ---------------------------------------------------------------------------------------------- exact search


def brute_force(queries, units, doc_index, n_docs, tie_rank, k, exclude=None):
    """float64 scores, each document at its best unit, sorted by (score, tie rank) descending."""
    full = queries.astype(np.float64) @ units.astype(np.float64).T
    best = np.full((len(queries), n_docs), -np.inf)
    for u, d in enumerate(doc_index):
        best[:, d] = np.maximum(best[:, d], full[:, u])
    out = []
    for q in range(len(queries)):
        docs = [d for d in range(n_docs) if exclude is None or d != exclude[q]]
        docs.sort(key=lambda d: (-best[q, d], -tie_rank[d]))
        out.append([(d, best[q, d]) for d in docs[:k]])
    return out


@st.composite
def chunked_corpora(draw):
    n_docs = draw(st.integers(1, 40))
    counts = draw(st.lists(st.integers(1, 6), min_size=n_docs, max_size=n_docs))
    dim = draw(st.integers(1, 5))
    n_queries = draw(st.integers(1, 6))
    # small integers: float32 dot products are exact, and repeated vectors give exact ties
    ints = st.integers(-3, 3)
    units = np.array(draw(st.lists(ints, min_size=sum(counts) * dim, max_size=sum(counts) * dim)), np.float32)
    queries = np.array(draw(st.lists(ints, min_size=n_queries * dim, max_size=n_queries * dim)), np.float32)
    doc_index = np.repeat(np.arange(n_docs), counts)
    perm = np.array(draw(st.permutations(range(len(doc_index)))), dtype=np.int64)
    tie_rank = np.array(draw(st.permutations(range(n_docs))), dtype=np.int64)
    exclude = None
    if draw(st.booleans()):
        exclude = np.array(
            draw(st.lists(st.integers(-1, n_docs - 1), min_size=n_queries, max_size=n_queries))
        )
    return (
        queries.reshape(n_queries, dim),
        units.reshape(-1, dim)[perm],
        doc_index[perm],
        n_docs,
        tie_rank,
        draw(st.integers(1, 12)),
        draw(st.integers(BYTES_PER_SCORE, 64 * BYTES_PER_SCORE)),  # blocks of 1..64 scores, documents split
        exclude,
    )


@given(chunked_corpora())
def test_exact_search_equals_brute_force_with_chunks_blocks_and_ties(case):
    queries, units, doc_index, n_docs, tie_rank, k, max_bytes, exclude = case
    got = exact_search(
        queries, units, doc_index, tie_rank=tie_rank, n_docs=n_docs, k=k, max_bytes=max_bytes, exclude=exclude
    )
    want = brute_force(queries, units, doc_index, n_docs, tie_rank, k, exclude)
    assert got.indices.shape == got.scores.shape == (len(queries), min(k, n_docs))
    for q, rows in enumerate(want):
        n = len(rows)
        assert got.indices[q, :n].tolist() == [d for d, _ in rows]
        assert got.scores[q, :n].tolist() == [s for _, s in rows]
        assert (got.indices[q, n:] == -1).all() and np.isneginf(got.scores[q, n:]).all()


def test_default_ties_put_the_lower_row_first():
    ranking = exact_search(np.ones((1, 2), np.float32), np.ones((5, 2), np.float32), k=3)
    assert ranking.indices.tolist() == [[0, 1, 2]]


def test_tie_ranks_follow_bytes():
    ids = ["9", "10", "1", "a", "B", "é", "ab"]
    ranks = tie_ranks(ids)
    assert [ids[i] for i in np.argsort(ranks)] == sorted(ids, key=lambda s: s.encode())


def test_score_blocks_stay_within_the_byte_budget():
    rng = np.random.default_rng(0)  # small integers: float32 products are exact whatever the BLAS blocking
    queries = rng.integers(-8, 9, (200, 16)).astype(np.float32)
    units = rng.integers(-8, 9, (30000, 16)).astype(np.float32)
    doc_index = np.arange(30000) // 3  # 10,000 documents of 3 chunks each
    budget = 1 << 20
    exact_search(
        queries[:2], units[:6], doc_index[:6] % 2
    )  # first-call allocations (code, caches) out of the way
    tracemalloc.start()
    try:
        small = exact_search(queries, units, doc_index, k=100, max_bytes=budget)
        _, peak_small = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        whole = exact_search(queries, units, doc_index, k=100)
        _, peak_whole = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(small.indices, whole.indices)
    np.testing.assert_array_equal(small.scores, whole.scores)
    state = (
        3 * 200 * 100 * 8 + 2 * 10000 * 8
    )  # running top-k keys, merged candidates, outputs; per-document counts
    assert peak_small < budget + state + (128 << 10), peak_small
    assert peak_whole > 200 * 30000 * 4  # the default budget held the whole score matrix at once


def test_exact_search_rejects_bad_input():
    q = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="dimension 3 but units have 4"):
        exact_search(q, np.ones((5, 4)))
    with pytest.raises(ValueError, match="document row 1 has no unit"):
        exact_search(q, np.ones((2, 3)), np.array([0, 2]))
    with pytest.raises(ValueError, match="outside 0..1"):
        exact_search(q, np.ones((2, 3)), np.array([0, 5]), n_docs=2)
    with pytest.raises(ValueError, match="units row 1 holds NaN"):
        exact_search(q, np.array([[1, 1, 1], [np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="max_bytes"):
        exact_search(q, np.ones((2, 3)), max_bytes=8)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        exact_search(q, np.ones((2, 3)), k=0)
    with pytest.raises(TypeError, match="real numbers"):
        exact_search(q, np.ones((2, 3), complex))


# ---------------------------------------------------------------------------------------------- BEIR reader


def write_beir(folder: Path, corpus, queries, qrels, header: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_documents_are_title_space_text_stripped_as_beir():
    assert document_text("A title", "Body.") == "A title Body."
    assert document_text("", "Body.") == "Body."  # BEIR/MTEB: (title + " " + text).strip()
    assert document_text("Only a title", "") == "Only a title"
    data = read_beir(IR / "qmsum")
    first = json.loads((IR / "qmsum" / "corpus.jsonl").open(encoding="utf-8").readline())
    assert first["title"] == "" and data.doc_texts[0] == first["text"].strip()
    scifact = read_beir(IR / "scifact")
    assert (len(scifact.doc_ids), len(scifact.query_ids)) == (5183, 300)
    assert sum(len(g) for g in scifact.qrels.values()) == 339


def test_reader_keeps_judged_queries_in_file_order_and_reads_splits(tmp_path):
    corpus = [{"_id": "d1", "title": "T", "text": "one"}, {"_id": 2, "text": "two"}]
    queries = [{"_id": "q3", "text": "c"}, {"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}]
    folder = write_beir(tmp_path / "set", corpus, queries, [("q1", "d1", 1), ("q3", "2", 2), ("q2", "d1", 0)])
    data = read_beir(folder)
    assert data.doc_ids == ["d1", "2"] and data.doc_texts == ["T one", "two"]
    assert data.query_ids == ["q3", "q1", "q2"]  # q2 has nothing relevant: judged, so scored (0), as in BEIR
    (folder / "qrels").mkdir()
    (folder / "qrels" / "dev.tsv").write_text("q1\td1\t1\n", encoding="utf-8")  # no header
    assert read_beir(folder, split="dev").query_ids == ["q1"]
    with pytest.raises(CorpusError, match="no qrels/test.tsv .splits found: dev"):
        read_beir(folder, split="test")


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda f: (f / "corpus.jsonl").unlink(), "missing corpus.jsonl"),
        (lambda f: (f / "qrels.tsv").unlink(), "no qrels.tsv"),
        (lambda f: _append(f / "qrels.tsv", "q1\tnope\t1\n"), "line 3: unknown corpus id 'nope'"),
        (lambda f: _append(f / "qrels.tsv", "qx\td1\t1\n"), "line 3: unknown query id 'qx'"),
        (lambda f: _append(f / "qrels.tsv", "q1\td1\t2\n"), "judges document 'd1' twice"),
        (lambda f: _append(f / "qrels.tsv", "q1\td1\t0.5\n"), "score '0.5' is not an integer"),
        (lambda f: _append(f / "qrels.tsv", "q1\td1\n"), "2 tab-separated field(s)"),
        (lambda f: (f / "queries.jsonl").write_text(""), "queries.jsonl: no queries"),
        (
            lambda f: (f / "queries.jsonl").write_text('{"_id": "q1", "text": "  "}\n'),
            "query 'q1' has an empty text",
        ),
        (
            lambda f: _append(f / "corpus.jsonl", '{"_id": "d1", "text": "again"}\n'),
            "line 2: duplicate _id 'd1'",
        ),
        (lambda f: _append(f / "corpus.jsonl", "{oops\n"), "corpus.jsonl, line 2: invalid JSON"),
        (lambda f: _append(f / "corpus.jsonl", "[" * 100_000 + "\n"), "corpus.jsonl, line 2: JSON nested too deeply"),
        (lambda f: _append(f / "queries.jsonl", '{"a": ' * 50_000 + "\n"), "queries.jsonl, line 2: JSON nested too"),
        (lambda f: _append(f / "corpus.jsonl", "1" * 5000 + "\n"), "corpus.jsonl, line 2: invalid JSON"),
        (lambda f: _append(f / "corpus.jsonl", '{"_id": "d2", "text": 3}\n'), "'text' must be a string"),
        (lambda f: _append(f / "corpus.jsonl", '{"text": "x"}\n'), "_id must be a string, got missing"),
        (
            lambda f: (f / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n"),
            "no query has a relevant",
        ),
    ],
)
def test_bad_folders_are_refused_with_the_offending_value(tmp_path, change, needle):
    folder = write_beir(
        tmp_path / "bad", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "y"}], [("q1", "d1", 1)]
    )
    change(folder)
    with pytest.raises(CorpusError) as info:
        read_beir(folder)
    assert needle in str(info.value)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def test_options_are_checked_before_the_model_runs(tmp_path):
    folder = write_beir(
        tmp_path / "f", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "y"}], [("q1", "d1", 1)]
    )
    never = object()  # not an encoder: any use of it would fail differently
    with pytest.raises(ValueError, match="max_bytes must be an integer"):
        evaluate_retrieval(folder, never, max_bytes=4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate_retrieval(folder, never, batch_size=0)
    with pytest.raises(ValueError, match="unknown document mode 'sliding'"):
        evaluate_retrieval(folder, never, modes=["sliding"])
    with pytest.raises(ValueError, match="split='dev' applies to a folder"):
        evaluate_retrieval(read_beir(folder), never, split="dev")


def test_retrieval_set_checks_its_fields():
    with pytest.raises(ValueError, match="unknown document 'z'"):
        RetrievalSet(["a"], ["x"], ["q"], ["y"], {"q": {"z": 1}})
    with pytest.raises(ValueError, match="no judgement"):
        RetrievalSet(["a"], ["x"], ["q"], ["y"], {"q": {}})
    with pytest.raises(ValueError, match="duplicate document id 'a'"):
        RetrievalSet(["a", "a"], ["x", "y"], ["q"], ["y"], {"q": {"a": 1}})


# ---------------------------------------------------------------------------------------------- real runs


SLICE_DOCS, SLICE_QUERIES = 100, 10


@pytest.fixture(scope="module")
def cisi_slice(tmp_path_factory) -> Path:
    """A bounded slice of CISI: the first 10 judged queries and 100 documents (up to 5 relevant ones per query,
    then the corpus in order)."""
    source = read_beir(IR / "cisi")
    query_ids = source.query_ids[:SLICE_QUERIES]
    keep: list[str] = []
    for qid in query_ids:
        keep += [d for d in source.qrels[qid] if d not in keep][:5]
    keep += [d for d in source.doc_ids if d not in keep][: SLICE_DOCS - len(keep)]
    docs = {
        json.loads(line)["_id"]: json.loads(line)
        for line in (IR / "cisi" / "corpus.jsonl").open(encoding="utf-8")
    }
    queries = {
        json.loads(line)["_id"]: json.loads(line)
        for line in (IR / "cisi" / "queries.jsonl").open(encoding="utf-8")
    }
    kept = set(keep)
    qrels = [(q, d, g) for q in query_ids for d, g in source.qrels[q].items() if d in kept]
    folder = tmp_path_factory.mktemp("cisi") / "cisi-slice"
    return write_beir(folder, [docs[d] for d in keep], [queries[q] for q in query_ids], qrels)


@pytest.fixture(scope="module")
def short_encoder():
    from tokenpool import Encoder

    return Encoder(max_length=128)  # the bundled model, shorter texts: a real run that stays fast


@pytest.fixture(scope="module")
def slice_result(cisi_slice, short_encoder):
    """One real evaluation of the slice (the model runs once over it), shared by the tests below; the document
    units `truncate_mode` produced are kept in ``result.extra["units"]`` for the chunk test."""
    kept = {}

    def recording_truncate(encoder, texts, labels, **options):
        kept.update(truncate_mode(encoder, texts, labels, **options))
        return kept

    result = evaluate_retrieval(
        cisi_slice, short_encoder, pooling="mean,cls", modes={"truncate": recording_truncate}
    )
    result.extra["units"] = kept
    return result


@pytest.mark.slow
def test_real_run_equals_pytrec_eval_per_query(slice_result, short_encoder):
    result = slice_result
    data = result.data
    assert (len(data.doc_ids), len(data.query_ids)) == (SLICE_DOCS, SLICE_QUERIES)
    assert [row.pooling for row in result.rows] == ["mean", "cls"] and result.configured == "mean"
    for row in result.rows:
        run = row.ranking.run(data.query_ids, data.doc_ids)
        theirs = pytrec_figures(data.qrels, run)
        for i, qid in enumerate(data.query_ids):
            for name in ("nDCG@10", "recall@100", "MRR@10"):
                assert row.per_query[name][i] == pytest.approx(theirs[qid][name], abs=1e-6)
        assert row.scores.ndcg_at_10 == pytest.approx(np.mean([theirs[q]["nDCG@10"] for q in data.query_ids]))
        assert 0 < row.scores.ndcg_at_10 < 1
    # the scores are the cosines of the encoder's own vectors (checked on the first query's top 10)
    mean = result.row("mean")
    top = mean.ranking.indices[0, :10]
    docs = short_encoder.encode([data.doc_texts[i] for i in top])
    query = short_encoder.encode(data.query_texts[0])
    np.testing.assert_allclose(docs @ query, mean.ranking.scores[0, :10], atol=2e-6)


@pytest.mark.slow
def test_chunk_units_score_as_their_best_chunk(slice_result, short_encoder):
    """A document mode with several units per document (scaled copies of each document's vector, scattered) ranks
    exactly as one vector per document: cosine ignores scale and a document scores as its best unit. A mode
    that forgets a document fails, naming it. (The modes reuse the vectors of the shared run: no second pass.)"""
    data = slice_result.data
    plain = slice_result.row("mean")
    base = slice_result.extra.pop("units")
    np.testing.assert_array_equal(base["mean"].doc_index, np.arange(len(data.doc_texts)))
    first = base["mean"].vectors[:5]  # "mean" alone is pooled without the model's Normalize
    first = first / np.linalg.norm(first, axis=1, keepdims=True)
    np.testing.assert_allclose(first, short_encoder.encode(data.doc_texts[:5]), atol=1e-6)

    def scaled_chunks(encoder, texts, labels, **options):
        out = {}
        for label in labels:
            units = base[label]
            rows = np.concatenate([units.doc_index] * 3)
            vectors = np.concatenate([units.vectors * 3.0, units.vectors, units.vectors * 0.5])
            order = np.random.default_rng(0).permutation(len(rows))  # units of a document scattered
            out[label] = DocumentUnits(rows[order], vectors[order])
        return out

    chunked = evaluate_retrieval(
        data, short_encoder, pooling="mean", modes={"chunks": scaled_chunks}, max_bytes=4096
    )
    row = chunked.row("mean", mode="chunks")
    assert row.units == 3 * len(data.doc_ids)
    assert row.scores == plain.scores
    np.testing.assert_array_equal(row.ranking.indices, plain.ranking.indices)

    def forgetful(encoder, texts, labels, **options):
        return {label: DocumentUnits(base[label].doc_index[1:], base[label].vectors[1:]) for label in labels}

    with pytest.raises(ValueError, match=f"no vector for document '{data.doc_ids[0]}'"):
        evaluate_retrieval(data, short_encoder, pooling="mean", modes={"forgetful": forgetful})


@pytest.mark.slow
def test_cli_json_and_plot_equal_the_api(
    cisi_slice, slice_result, short_encoder, monkeypatch, capsys, tmp_path
):
    from tokenpool import cli

    monkeypatch.setattr(cli.common, "build_encoder", lambda options: short_encoder)
    plot = tmp_path / "r.png"
    code = cli.main(["evaluate", str(cisi_slice), "--pooling", "mean,cls", "--json", "--plot", str(plot)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["documents"], summary["queries"]) == (SLICE_DOCS, SLICE_QUERIES)
    assert [r["pooling"] for r in summary["rows"]] == ["mean", "cls"]
    for row, want in zip(summary["rows"], slice_result.rows, strict=True):
        assert row["scores_x100"] == pytest.approx(want.scores.as_dict(100.0), abs=1e-9)
        assert row["mode"] == "truncate" and row["units"] == SLICE_DOCS
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_cli_table(short_encoder, monkeypatch, capsys, tmp_path):
    from tokenpool import cli

    monkeypatch.setattr(cli.common, "build_encoder", lambda options: short_encoder)
    corpus = [
        {"_id": "cat", "title": "Cats", "text": "Cats sleep for most of the day."},
        {"_id": "rust", "title": "", "text": "Rust is a systems programming language."},
        {"_id": "market", "title": "Markets", "text": "Stocks fell sharply on Monday."},
    ]
    queries = [
        {"_id": "q1", "text": "How long do cats sleep?"},
        {"_id": "q2", "text": "share prices dropped"},
    ]
    folder = write_beir(
        tmp_path / "tiny", corpus, queries, [("q1", "cat", 1), ("q2", "market", 1), ("q2", "rust", 0)]
    )
    assert cli.main(["evaluate", str(folder), "--pooling", "mean,cls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"3 documents, 2 queries from {folder} (scores x100)")
    assert out[1].split() == ["mode", "pooling", "nDCG@10", "recall@100", "MRR@10", "texts/s"]
    assert out[3].split()[:6] == ["truncate", "mean", "*", "100.00", "100.00", "100.00"]
    assert float(out[3].split()[6]) > 0  # texts/s
    assert out[4].split()[:2] == ["truncate", "cls"] and out[-1] == "* the model's configured pooling"


@pytest.mark.parametrize(
    "setup, needles",
    [
        (lambda f: (f / "queries.jsonl").unlink(), ["evaluate: error:", "missing queries.jsonl"]),
        (lambda f: _append(f / "qrels.tsv", "q1\tghost\t1\n"), ["unknown corpus id 'ghost'"]),
        (lambda f: (f / "queries.jsonl").write_text("\n"), ["no queries"]),
    ],
)
def test_cli_bad_folder_is_one_line_exit_2(tmp_path, capsys, setup, needles):
    from tokenpool import cli

    folder = write_beir(
        tmp_path / "f", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "y"}], [("q1", "d1", 1)]
    )
    setup(folder)
    code = cli.main(["evaluate", str(folder)])  # fails before any model loads
    assert_one_error_line(code, capsys.readouterr().err, *needles)


def test_cli_unknown_pooling_and_stray_split(tmp_path, capsys):
    from tokenpool import cli

    folder = write_beir(
        tmp_path / "f", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "y"}], [("q1", "d1", 1)]
    )
    assert_one_error_line(
        cli.main(["evaluate", str(folder), "--pooling", "mean,bogus"]), capsys.readouterr().err, "bogus"
    )
    sample = ROOT / "examples" / "sts-sample.tsv"
    assert_one_error_line(
        cli.main(["evaluate", str(sample), "--split", "dev"]), capsys.readouterr().err, "--split"
    )


def test_import_stays_light():
    code = (
        "import sys, tokenpool; f = tokenpool.evaluate_retrieval; import tokenpool.evaluation.retrieval;"
        "print(sorted(m for m in ('torch', 'transformers', 'jax') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(
    not os.environ.get("TOKENPOOL_FULL_RETRIEVAL"),
    reason="full SciFact encode (minutes); set TOKENPOOL_FULL_RETRIEVAL=1",
)
def test_scifact_matches_the_mteb_figure():
    result = evaluate_retrieval(IR / "scifact")
    assert result.scores().ndcg_at_10 * 100 == pytest.approx(64.51, abs=0.05)
