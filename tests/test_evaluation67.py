"""Stop 67's evaluation items: metrics, Spearman, BM25 and fusion against references written here from their
definitions (trec_eval / BEIR, scipy, bm25s, Cormack et al.), on random inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ID_CHARS = st.sampled_from(["a", "b", "B", "1", "é", "z", "ß", "_"])


def trec_order(scores, doc_ids):
    """Document rows by score, descending, ties by document id descending in byte order (trec_eval)."""
    return sorted(range(len(doc_ids)), key=lambda d: (-scores[d], [-b for b in doc_ids[d].encode()] + [1]))


def plain_metrics(ranked, grades):
    """nDCG@10 (linear gains), recall@100 and MRR@10 of one query's ranked doc ids as trec_eval defines them:
    grades ≤ 0 are not relevant, a query with no relevant document scores 0."""
    relevant = {d: g for d, g in grades.items() if g > 0}
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:10]))
    found = sum(1 for d in ranked[:100] if d in relevant)
    first = next((i for i, d in enumerate(ranked[:10]) if d in relevant), None)
    return {"nDCG@10": dcg / ideal if ideal else 0.0, "recall@100": found / len(relevant) if relevant else 0.0,
            "MRR@10": 0.0 if first is None else 1.0 / (first + 1)}  # fmt: skip


@st.composite
def judged_runs(draw):
    n_docs = draw(st.integers(1, 14))
    doc_ids = draw(
        st.lists(st.text(ID_CHARS, min_size=1, max_size=3), min_size=n_docs, max_size=n_docs, unique=True)
    )
    n_queries = draw(st.integers(1, 4))
    # small integer vectors: many exactly equal dot products (ties)
    docs = np.array(draw(st.lists(st.lists(st.integers(-2, 2), min_size=3, max_size=3), min_size=n_docs,
                                  max_size=n_docs)), dtype=np.float32)  # fmt: skip
    queries = np.array(draw(st.lists(st.lists(st.integers(-2, 2), min_size=3, max_size=3), min_size=n_queries,
                                     max_size=n_queries)), dtype=np.float32)  # fmt: skip
    qrels = {}
    for q in range(n_queries):  # grades -2..0: judged non-relevant; some queries have nothing relevant
        judged = draw(st.lists(st.sampled_from(doc_ids), min_size=1, max_size=n_docs, unique=True))
        qrels[f"q{q}"] = {d: draw(st.integers(-2, 3)) for d in judged}
    k = draw(st.integers(1, n_docs + 5))  # k past the corpus: every document, then nothing
    return doc_ids, docs, queries, qrels, k


@settings(max_examples=150, deadline=None)
@given(judged_runs())
def test_metrics_match_trec_eval_definitions(case):
    """`exact_search` + `metrics_per_query` (what `evaluate FOLDER` reports) equal a plain loop over the trec_eval
    definitions on random runs: ties in score, graded and 0 relevance, queries with nothing relevant, k past the
    corpus; and pytrec_eval's figures on the same run where it is installed."""
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.retrieval import metrics_per_query
    from tokenpool.evaluation.search import exact_search, tie_ranks

    doc_ids, docs, queries, qrels, k = case
    data = RetrievalSet(doc_ids, ["text"] * len(doc_ids), list(qrels), ["query"] * len(qrels), qrels)
    ranking = exact_search(queries, docs, tie_rank=tie_ranks(doc_ids), k=k)
    ours = metrics_per_query(ranking.indices, data.relevance(), len(doc_ids))
    scores = queries.astype(np.float64) @ docs.T.astype(np.float64)
    for q, query_id in enumerate(qrels):
        ranked = [doc_ids[d] for d in trec_order(scores[q], doc_ids)][:k]
        assert [doc_ids[d] for d in ranking.indices[q] if d >= 0] == ranked
        for name, value in plain_metrics(ranked, qrels[query_id]).items():
            assert ours[name][q] == pytest.approx(value, abs=1e-12), (name, query_id)
    try:
        import pytrec_eval
    except ImportError:
        return
    run = ranking.run(data.query_ids, data.doc_ids)
    # (negative grades, non-relevant as 0 is, are given as 0: pytrec_eval-terrier 0.5.11 segfaults on some of them)
    judged = {query_id: {d: max(g, 0) for d, g in grades.items()} for query_id, grades in qrels.items()}
    theirs = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    cut = {
        query_id: dict(list(docs.items())[:10]) for query_id, docs in run.items()
    }  # the run lists docs by rank
    top10 = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(cut)
    for q, query_id in enumerate(qrels):
        if any(g > 0 for g in qrels[query_id].values()):  # (trec_eval skips a query with nothing relevant)
            assert ours["nDCG@10"][q] == pytest.approx(theirs[query_id]["ndcg_cut_10"], abs=1e-9)
            assert ours["recall@100"][q] == pytest.approx(theirs[query_id]["recall_100"], abs=1e-9)
            assert ours["MRR@10"][q] == pytest.approx(top10[query_id]["recip_rank"], abs=1e-9)


def test_a_document_twice_in_a_run_is_refused():
    """A run naming a document twice for one query would count its gain twice: refused, naming the place."""
    from tokenpool.evaluation.retrieval import metrics_per_query

    relevance = (np.array([0]), np.array([1]), np.array([1.0]))
    with pytest.raises(ValueError, match="twice|more than once|at most once|repeat"):
        metrics_per_query(np.array([[1, 1, 0]]), relevance, 3)


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=3, max_size=30))
def test_spearman_matches_scipy_with_ties(pairs):
    """STS Spearman on tied values (average ranks) equals scipy.stats.spearmanr; a constant side is NaN in both."""
    stats = pytest.importorskip("scipy.stats")
    from tokenpool.evaluation.sts import spearman

    x, y = (np.array(side, dtype=np.float64) for side in zip(*pairs, strict=True))
    expected = stats.spearmanr(x, y).statistic
    if np.isnan(expected):
        assert np.isnan(spearman(x, y))
    else:
        assert spearman(x, y) == pytest.approx(expected, abs=1e-12)


@st.composite
def partial_runs(draw):
    """Two rankings of the same queries, each a different subset of the documents (a document one side alone
    retrieves), scores with ties."""
    n_docs = draw(st.integers(1, 9))
    n_queries = draw(st.integers(1, 3))
    depth = draw(st.integers(1, n_docs + 2))
    rankings = []
    for _ in range(2):
        width = draw(st.integers(1, n_docs))
        rows, values = [], []
        for _ in range(n_queries):
            found = draw(st.lists(st.integers(0, n_docs - 1), max_size=width, unique=True))
            scores = sorted(draw(st.lists(st.sampled_from([-1.5, 0.0, 0.25, 2.0, 7.0]), min_size=len(found),
                                          max_size=len(found))), reverse=True)  # fmt: skip
            rows.append(found + [-1] * (width - len(found)))
            values.append(scores + [-np.inf] * (width - len(found)))
        rankings.append((np.array(rows, dtype=np.int64), np.array(values, dtype=np.float32)))
    tie_rank = np.array(draw(st.permutations(range(n_docs))), dtype=np.int64)
    return rankings, tie_rank, depth


def fused_plain(rankings, tie_rank, depth, contribution):
    """Per query, Σ contribution over the rankings that return a document (0 where one does not), ranked by
    that sum, then tie rank, both descending; the top ``depth``."""
    out = []
    for q in range(rankings[0][0].shape[0]):
        total = {}
        for i, (indices, scores) in enumerate(rankings):
            for rank, (doc, value) in enumerate(zip(indices[q], scores[q], strict=True)):
                if doc >= 0:
                    total[int(doc)] = total.get(int(doc), 0) + contribution(i, q, rank + 1, value, scores[q])
        out.append(sorted(total.items(), key=lambda item: (-item[1], -tie_rank[item[0]]))[:depth])
    return out


@settings(max_examples=150, deadline=None)
@given(partial_runs(), st.sampled_from([0, 1, 60, 0.5, 2.75, 1e7]))
def test_reciprocal_rank_fusion_matches_a_plain_loop(case, k):
    """RRF: Σ 1 / (k + rank) in exact arithmetic, ties by tie rank, a document one side alone retrieves."""
    from tokenpool.evaluation.fusion import reciprocal_rank_fusion
    from tokenpool.evaluation.search import Ranking

    rankings, tie_rank, depth = case
    fused = reciprocal_rank_fusion([Ranking(*r) for r in rankings], tie_rank, k=k, depth=depth)
    exact_k = Fraction(k)
    expected = fused_plain(rankings, tie_rank, depth, lambda i, q, rank, value, row: 1 / (exact_k + rank))
    for q, top in enumerate(expected):
        assert fused.indices[q].tolist() == [d for d, _ in top] + [-1] * (depth - len(top))
        assert fused.scores[q, : len(top)].tolist() == [float(total) for _, total in top]


@settings(max_examples=150, deadline=None)
@given(partial_runs(), st.sampled_from([(0.5, 0.5), (0.3, 0.7), (1.0, 0.0), (2.0, 1.0)]))
def test_interpolation_matches_a_plain_loop(case, weights):
    """Interpolation: Σ weight · (score − min) / (max − min) over each query's returned documents (1 when they
    all score alike), summed in float64, ranked by the float32 sums, ties by tie rank."""
    from tokenpool.evaluation.fusion import interpolate
    from tokenpool.evaluation.search import Ranking

    rankings, tie_rank, depth = case

    def scaled(i, q, rank, value, row):
        found = [float(v) for v in row if np.isfinite(v)]
        low, high = min(found), max(found)
        return weights[i] * ((float(value) - low) / (high - low) if high > low else 1.0)

    fused = interpolate([Ranking(*r) for r in rankings], list(weights), tie_rank, depth=depth)
    expected = fused_plain(rankings, tie_rank, depth, scaled)
    for q, top in enumerate(expected):
        rounded = sorted(
            ((d, np.float32(total)) for d, total in top), key=lambda item: (-item[1], -tie_rank[item[0]])
        )
        assert fused.indices[q].tolist() == [d for d, _ in rounded] + [-1] * (depth - len(top))
        assert fused.scores[q, : len(top)].tolist() == [float(total) for _, total in rounded]


CORPUS = [
    "The cat sat on the mat",
    "Dogs bark at cats",
    "a cat, a dog and a cat",
    "",
    "the the the",
    "Quantum chromodynamics of gluons",
    "cats and dogs living together",
    "MAT mat Mat",
    "bark bark BARK dog",
]
QUERIES = ["cat mat", "dog dog bark", "gluons", "unknownword", "the", "cats and dogs and cats"]


@pytest.mark.parametrize(
    "spec", ["", "k1=1.2,b=0.3,stopwords=none", "method=robertson", "method=atire,k1=0.9"]
)
def test_bm25_scores_equal_bm25s_own(spec):
    """`bm25_rows`' dot products (what BM25 ranks by) are bm25s's own get_scores on the same tokenisation:
    repeated query terms count once per occurrence, unknown terms add nothing, stop words drop out."""
    bm25s = pytest.importorskip("bm25s")
    from tokenpool.evaluation.lexical import BM25Settings, bm25_rows

    settings_ = BM25Settings.parse(spec or None)
    counts, docs = bm25_rows(CORPUS, QUERIES, settings_)
    ours = (counts @ docs.T).toarray()
    stop = None if settings_.stopwords == "none" else settings_.stopwords
    tokens = bm25s.tokenize(CORPUS, stopwords=stop, show_progress=False, allow_empty=True)
    index = bm25s.BM25(k1=settings_.k1, b=settings_.b, method=settings_.method)
    index.index(tokens, show_progress=False, create_empty_token=False)
    for q, terms in enumerate(bm25s.tokenize(QUERIES, stopwords=stop, return_ids=False, show_progress=False)):
        known = [t for t in terms if t in tokens.vocab]
        expected = index.get_scores(known) if known else np.zeros(len(CORPUS))
        np.testing.assert_allclose(ours[q], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean+splade", "cls,splade+max"])
def test_evaluate_refuses_an_uncombinable_pooling_before_the_model_loads(tmp_path, capsys, pooling):
    """`--pooling mean+splade` can pool no model (SPLADE pools logits, alone): refused as an unknown name is,
    before the model loads (it loaded the model first, and a folder that is no model was named instead)."""
    pytest.importorskip("torch")
    from clitools import assert_one_error_line

    from tokenpool import cli

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1\ta cat\ta dog\n3\tthe sun\tthe sun shines\n", encoding="utf-8")
    (tmp_path / "no-model").mkdir()
    code = cli.main(["evaluate", str(pairs), "--model", str(tmp_path / "no-model"), "--pooling", pooling])
    assert_one_error_line(code, capsys.readouterr().err, "'splade' pools MLM logits and cannot be combined")


def test_hybrid_rows_fuse_bm25_and_dense_rows_as_defined(tmp_path, tiny):
    """`evaluate_retrieval(modes="hybrid:truncate")`: its two hybrid rows are the plain-loop fusions of its BM25
    row (documents sharing a term only) and its dense row — RRF with the given k, interpolation with BM25 weighing
    ``hybrid_weight`` and the dense run 1 − w, ties by document id as trec_eval — scored by the trec_eval loop."""
    pytest.importorskip("torch")
    pytest.importorskip("bm25s")
    from tokenpool.evaluation.retrieval import evaluate_retrieval
    from tokenpool.evaluation.search import tie_ranks

    words = [
        "apple pie",
        "pear tart",
        "apple",
        "plum",
        "apple pear",
        "fig",
        "tart apple pear",
        "pie",
        "zz",
        "pear",
    ]
    doc_ids = ["d3", "d10", "d1", "d2", "x", "d4", "b", "a", "d9", "é"]
    folder = tmp_path / "set"
    folder.mkdir()
    corpus = "".join(f'{{"_id": "{d}", "text": "{w}"}}\n' for d, w in zip(doc_ids, words, strict=True))
    (folder / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    queries = ["apple", "pear tart", "plum fig", "nothing"]
    (folder / "queries.jsonl").write_text(
        "".join(f'{{"_id": "q{i}", "text": "{q}"}}\n' for i, q in enumerate(queries))
    )
    qrels = {
        "q0": {"d3": 2, "x": 1, "d1": 0},
        "q1": {"d10": 1, "é": 3},
        "q2": {"d2": 1, "d4": 1},
        "q3": {"zz": 0},
    }
    lines = [f"{q}\t{d}\t{g}\n" for q, judged in qrels.items() for d, g in judged.items() if d in doc_ids]
    (folder / "qrels.tsv").write_text("".join(lines), encoding="utf-8")
    qrels["q3"] = {}
    result = evaluate_retrieval(
        folder, str(tiny), pooling="mean", modes="hybrid:truncate", rrf_k=2.5, hybrid_weight=0.3
    )
    ties = tie_ranks(doc_ids)
    bm25, dense = result.row(mode="bm25"), result.row("mean", mode="truncate")
    sides = [(r.ranking.indices, r.ranking.scores) for r in (bm25, dense)]
    assert (bm25.ranking.scores[bm25.ranking.indices >= 0] > 0).all()

    def scaled(i, q, rank, value, row):
        found = [float(v) for v in row if np.isfinite(v)]
        low, high = min(found), max(found)
        return (0.3, 0.7)[i] * ((float(value) - low) / (high - low) if high > low else 1.0)

    expected = {
        "mean, rrf k=2.5": fused_plain(
            sides, ties, 100, lambda i, q, rank, value, row: 1 / (Fraction(5, 2) + rank)
        ),
        "mean, bm25 weight 0.3": [
            sorted(((d, np.float32(t)) for d, t in top), key=lambda item: (-item[1], -ties[item[0]]))
            for top in fused_plain(sides, ties, 100, scaled)
        ],
    }
    for name, fused in expected.items():
        row = result.row(name, mode="hybrid:truncate")
        for q, top in enumerate(fused):
            ranked = [doc_ids[d] for d, _ in top]
            assert [doc_ids[d] for d in row.ranking.indices[q] if d >= 0] == ranked
            for metric, value in plain_metrics(ranked, qrels[f"q{q}"]).items():
                assert row.per_query[metric][q] == pytest.approx(value, abs=1e-12), (name, q, metric)


@pytest.mark.parametrize("precision", ["int8", "uint8,binary"])
@pytest.mark.parametrize("folder", [False, True])
def test_evaluate_refuses_a_calibration_size_of_one_before_the_model_loads(
    tmp_path, capsys, precision, folder
):
    """`evaluate --precision int8 --calibration-size 1` ran the model over every sentence or document before it
    said "cannot calibrate ... on the first 1 ...": refused first, as `embed` refuses it (one rule, EncodeRequest's)."""
    from clitools import assert_one_error_line, tiny_beir

    from tokenpool import cli

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1\ta cat\ta dog\n3\tthe sun\tthe sun shines\n", encoding="utf-8")
    data = tiny_beir(tmp_path / "set") if folder else pairs
    (tmp_path / "no-model").mkdir()
    argv = ["evaluate", str(data), "--model", str(tmp_path / "no-model"), "--precision", precision]
    code = cli.main([*argv, "--calibration-size", "1"])
    assert_one_error_line(
        code, capsys.readouterr().err, "--calibration-size must be at least 2 (texts), got 1"
    )
    code = cli.main([*argv, "--calibration-size", "2"])  # (2 passes: the model folder is what is refused)
    assert_one_error_line(code, capsys.readouterr().err, "no-model")
