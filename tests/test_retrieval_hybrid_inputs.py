"""Fusion, BM25 and SPLADE retrieval against float64 loops: numpy numbers as options, refused rankings, settings."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tokenpool.errors import OptionError
from tokenpool.evaluation.fusion import interpolate, reciprocal_rank_fusion
from tokenpool.evaluation.lexical import BM25Settings
from tokenpool.evaluation.retrieval import check_fusion
from tokenpool.evaluation.search import Ranking

# ------------------------------------------------------------------------------------------ numbers


def _rankings() -> list[Ranking]:
    first = Ranking(np.array([[0, 1, 2], [2, -1, -1]]), np.array([[3.0, 2.0, 1.0], [5.0, -np.inf, -np.inf]], np.float32))
    second = Ranking(np.array([[2, 0, -1], [1, 2, 0]]), np.array([[0.9, 0.1, -np.inf], [0.8, 0.7, 0.2]], np.float32))
    return [first, second]


def _loop_rrf(rankings: list[Ranking], k: float) -> list[dict[int, float]]:
    out: list[dict[int, float]] = [{} for _ in range(rankings[0].indices.shape[0])]
    for ranking in rankings:
        for q, row in enumerate(ranking.indices.tolist()):
            for rank, doc in enumerate(row, 1):
                if doc >= 0:
                    out[q][doc] = out[q].get(doc, 0.0) + 1.0 / (k + rank)
    return out


@pytest.mark.parametrize("k", [np.int64(60), np.int32(1), np.float32(0.5), np.float64(2.5), np.uint8(0)])
def test_rrf_takes_a_numpy_k_as_its_value(k):
    fused = reciprocal_rank_fusion(_rankings(), np.arange(3), k=k, depth=3)
    expected = _loop_rrf(_rankings(), float(k))
    for q, want in enumerate(expected):
        got = {d: s for d, s in zip(fused.indices[q].tolist(), fused.scores[q].tolist(), strict=True) if d >= 0}
        assert got.keys() == want.keys()
        assert all(math.isclose(got[d], want[d], rel_tol=1e-6) for d in want)


def test_interpolation_takes_numpy_weights_as_their_values():
    plain = interpolate(_rankings(), [0.5, 0.25], np.arange(3), depth=3)
    numpy = interpolate(_rankings(), [np.float32(0.5), np.float16(0.25)], np.arange(3), depth=3)
    np.testing.assert_array_equal(numpy.indices, plain.indices)
    np.testing.assert_array_equal(numpy.scores, plain.scores)


@pytest.mark.parametrize("bad", [True, np.bool_(True), np.float32("nan"), np.float64("inf"), np.int64(-1), -0.5, "60"])
def test_fusion_refuses_what_is_no_finite_number_at_least_0_naming_it(bad):
    with pytest.raises(ValueError, match="RRF constant k must be .*got " + re.escape(repr(bad))):
        reciprocal_rank_fusion(_rankings(), np.arange(3), k=bad)
    with pytest.raises(ValueError, match="weight 1 must be .*got " + re.escape(repr(bad))):
        interpolate(_rankings(), [0.5, bad], np.arange(3))
    with pytest.raises(OptionError, match="rrf_k must be"):
        check_fusion(bad, 0.5)


def test_check_fusion_and_bm25_settings_take_numpy_numbers_as_plain_floats():
    assert check_fusion(np.int64(60), np.float32(0.5)) == {"rrf_k": 60.0, "weight": 0.5}
    settings = BM25Settings(k1=np.float32(1.5), b=np.int64(1))
    assert settings == BM25Settings(k1=1.5, b=1.0)
    assert type(settings.k1) is float and settings.label().startswith("k1=1.5 b=1 ")
    with pytest.raises(OptionError, match="BM25 b must be a number with 0 <= b <= 1, got np.float64\\(1.5\\)"):
        BM25Settings(b=np.float64(1.5))
    with pytest.raises(OptionError, match="BM25 k1 must be .*got np.float32\\(nan\\)"):
        BM25Settings(k1=np.float32("nan"))


# ------------------------------------------------------------------------------------------ SPLADE


@pytest.fixture(scope="module")
def splade_pair(tmp_path_factory):
    """Two tiny random SPLADE folders (BertForMaskedLM, one tokenizer, different weights)."""
    from tinymodels import bert_folder

    return [bert_folder(tmp_path_factory.mktemp(f"splade{seed}"), mlm=True, seed=seed) for seed in (0, 1)]


_DOCS = ["the cat sat on the mat", "dogs bark loudly at night", "a bird in the hand", "fish swim", "cats and dogs"]


def _splade_set():
    from tokenpool.evaluation.beir import RetrievalSet

    doc_ids = ["d3", "d1", "d0", "d4", "d2"]
    qrels = {"q0": {"d3": 1, "d4": 0}, "q1": {"d1": 2, "d2": 1}, "q2": {"d0": 1}}
    return RetrievalSet(doc_ids, _DOCS, ["q0", "q1", "q2"], ["cat on a mat", "barking dogs", "hand"], qrels)


def _loop_scores(matrix: np.ndarray, data) -> dict[str, float]:
    """nDCG@10, recall@100, MRR@10 ×100 by plain float64 loops over a queries × documents score ``matrix``: the
    documents that share a term (score > 0) by score, ties by document id descending (trec_eval), linear gains."""
    totals = {"nDCG@10": 0.0, "recall@100": 0.0, "MRR@10": 0.0}
    for q, query_id in enumerate(data.query_ids):
        scores = {doc_id: float(np.float32(matrix[q, d])) for d, doc_id in enumerate(data.doc_ids)}
        ranked = sorted((d for d in scores if scores[d] > 0), key=lambda d: (scores[d], d.encode()), reverse=True)
        grades = {d: g for d, g in data.qrels[query_id].items() if g > 0}
        dcg = sum(grades.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranked[:10]))
        ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(grades.values(), reverse=True)[:10]))
        totals["nDCG@10"] += dcg / ideal
        totals["recall@100"] += sum(d in grades for d in ranked[:100]) / len(grades)
        totals["MRR@10"] += next((1 / (r + 1) for r, d in enumerate(ranked[:10]) if d in grades), 0.0)
    return {name: 100 * value / len(data.query_ids) for name, value in totals.items()}


def test_compare_retrieval_with_splade_models_matches_float64_loops(splade_pair):
    from tokenpool import Encoder
    from tokenpool.evaluation.runtimes import compare_retrieval

    data = _splade_set()
    rows = compare_retrieval([(str(i), lambda f=f: Encoder(f)) for i, f in enumerate(splade_pair)], data)
    dense = []
    for row, folder in zip(rows, splade_pair, strict=True):
        encoder = Encoder(folder)
        assert encoder.is_sparse
        queries = encoder.encode(data.query_texts).astype(np.float64)
        docs = encoder.encode(data.doc_texts).astype(np.float64)
        dense.append(docs)
        want = _loop_scores(queries @ docs.T, data)
        assert row.scores.keys() == want.keys()
        assert all(math.isclose(row.scores[n], want[n], rel_tol=1e-5, abs_tol=1e-9) for n in want), (row, want)
    cosines = [float(a @ b / math.sqrt((a @ a) * (b @ b))) for a, b in zip(dense[1], dense[0], strict=True)]
    assert rows[0].cosine == pytest.approx({"min": 1.0, "median": 1.0, "p1": 1.0})
    want = {"min": min(cosines), "median": float(np.median(cosines)), "p1": float(np.percentile(cosines, 1))}
    assert rows[1].cosine == pytest.approx(want, rel=1e-5)
    assert rows[1].cosine["min"] < 0.9999  # two different models: the figure is no constant


def test_cosine_rows_of_sparse_rows_match_the_dense_rows():
    import scipy.sparse

    from tokenpool.core.sparse import SparseRows
    from tokenpool.evaluation.sts import cosine_rows

    rng = np.random.default_rng(0)
    a = rng.random((6, 9)) * (rng.random((6, 9)) < 0.3)
    b = rng.random((6, 9)) * (rng.random((6, 9)) < 0.3)
    a[2] = 0.0  # a zero row: cosine 0, as for dense rows
    m = scipy.sparse.csr_matrix(a.astype(np.float32))
    rows = SparseRows(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data, 9)
    got = cosine_rows(rows, scipy.sparse.csr_matrix(b.astype(np.float32)))
    np.testing.assert_allclose(got, cosine_rows(a.astype(np.float32), b.astype(np.float32)), rtol=1e-6)
    assert got[2] == 0.0


# ------------------------------------------------------------------------------------------ fusion inputs


def _ranking(indices, scores) -> Ranking:
    return Ranking(np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float32))


_GOOD = _ranking([[0, 1, 2], [2, 1, 0]], [[3, 2, 1], [3, 2, 1]])


@pytest.mark.parametrize(
    "rankings, ties, depth, match",
    [
        # a row past the corpus was keyed as the next query's document (query 1 got document 0 twice over)
        ([_ranking([[0, 3, -1], [1, 2, 0]], [[2, 1, -np.inf], [3, 2, 1]])], np.arange(3), 3,
         r"ranking 0: indices\[0, 1\] is 3, not a document row in 0..2"),
        # a document twice in one list was summed twice (1/61 + 1/62 for one document)
        ([_GOOD, _ranking([[0, 0, 1], [2, 1, 0]], [[3, 2, 1], [3, 2, 1]])], np.arange(3), 3,
         "ranking 1: indices row 0 ranks document row 0 twice"),
        ([_ranking([[0, -2, 1], [2, 1, 0]], [[3, 2, 1], [3, 2, 1]])], np.arange(3), 3, r"is -2, not a document row"),
        ([], np.arange(3), 3, "at least one ranking"),
        ([_GOOD], np.arange(3), 0, "depth must be a positive int, got 0"),
        ([_GOOD], np.arange(3), True, "depth must be a positive int, got True"),
        ([_GOOD], np.zeros(3), 3, "tie_rank must give every document a different rank"),
        ([_GOOD, _ranking([[0, 1]], [[2, 1]])], np.arange(3), 3, "of the same queries"),
        ([_ranking([0, 1], [2, 1])], np.arange(3), 3, r"\(queries × rank\) arrays"),
    ],
)
def test_fusion_refuses_rankings_it_would_fuse_wrongly(rankings, ties, depth, match):
    with pytest.raises(ValueError, match=match):
        reciprocal_rank_fusion(rankings, ties, depth=depth)
    with pytest.raises(ValueError, match=match):
        interpolate(rankings, [0.5] * len(rankings), ties, depth=depth)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_interpolation_refuses_a_score_that_is_no_finite_number_naming_where(bad):
    # (NaN made its query's every scaled score NaN: the fused scores were NaN or silently reordered)
    broken = _ranking([[0, 1, 2], [2, 1, 0]], [[3, 2, 1], [3, bad, 1]])
    with pytest.raises(ValueError, match=f"ranking 1: the score at query 1, rank 2 is {bad}, not a finite"):
        interpolate([_GOOD, broken], [0.5, 0.5], np.arange(3))
    fused = reciprocal_rank_fusion([_GOOD, broken], np.arange(3), depth=3)  # RRF reads ranks only
    assert fused.indices.tolist() == [[0, 1, 2], [2, 1, 0]]


def test_fusion_takes_a_numpy_depth_and_lists_of_its_own():
    want = reciprocal_rank_fusion([_GOOD], np.arange(3), depth=2)
    got = reciprocal_rank_fusion([Ranking([[0, 1, 2], [2, 1, 0]], [[3, 2, 1], [3, 2, 1]])], [0, 1, 2], depth=np.int64(2))
    np.testing.assert_array_equal(got.indices, want.indices)
    assert got.indices.tolist() == [[0, 1], [2, 1]]


# ------------------------------------------------------------------------------------------ BM25 settings


def test_bm25_settings_refuse_a_name_given_twice(run, tmp_path):
    # ("k1=1.2,b=0.3,k1=0.9" ran with k1=0.9 and the first value was lost without a word)
    with pytest.raises(OptionError, match="BM25 setting 'k1' is given twice in 'k1=1.2,b=0.3, k1=0.9'"):
        BM25Settings.parse("k1=1.2,b=0.3, k1=0.9")
    assert BM25Settings.parse("k1=1.2,b=0.3") == BM25Settings(k1=1.2, b=0.3)
    from clitools import assert_one_error_line
    from test_retrieval import write_beir

    folder = write_beir(tmp_path / "f", [{"_id": "d1", "text": "cat"}], [{"_id": "q1", "text": "cat"}], [("q1", "d1", 1)])
    code, _, err = run("evaluate", folder, "--modes", "bm25", "--bm25", "b=0.5,b=0.75")
    assert_one_error_line(code, err, "BM25 setting 'b' is given twice")


def test_bm25_rows_of_evaluate_match_the_formula_and_trec_eval_ties_by_loops():
    from test_retrieval_hybrid import STOP, reference_bm25

    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    # repeated terms, an empty document, a stop-word-only one, equal documents (ties), a query with no known term
    docs = ["cat cat cat dog", "", "the and of", "dog bird", "bird dog", "fish fish tree", "cat", "cat"]
    doc_ids = ["b", "a", "h", "d2", "d10", "x", "é", "e"]
    queries = ["cat", "dog bird", "zebra", "fish cat cat"]
    qrels = {"q0": {"é": 1, "b": 2}, "q1": {"d10": 1}, "q2": {"a": 1}, "q3": {"x": 1, "e": 0}}
    data = RetrievalSet(doc_ids, docs, list(qrels), queries, qrels)
    for k1, b in ((1.5, 0.75), (1.2, 0.3)):
        result = evaluate_retrieval(data, modes="bm25", bm25={"k1": k1, "b": b})
        matrix = reference_bm25(docs, queries, k1, b, "lucene", set(STOP)) / (k1 + 1)  # bm25s's scale
        want = _loop_scores(matrix, data)
        got = result.rows[0].scores.as_dict(100.0)
        assert all(math.isclose(got[n], want[n], rel_tol=1e-9, abs_tol=1e-9) for n in want), (got, want)
        ranked = result.rows[0].ranking.run(data.query_ids, doc_ids)
        for query_id, first, second in (("q0", "é", "e"), ("q1", "d2", "d10")):  # equal scores: ids descending
            order = list(ranked[query_id])
            assert ranked[query_id][first] == ranked[query_id][second] and order.index(first) < order.index(second)
        assert ranked["q2"] == {}  # no known term: nothing retrieved (a search engine's answer), the query scores 0


def test_an_integer_past_float_range_is_refused_as_no_finite_number():
    # (math.isfinite(10**400) raised OverflowError, not the option's message)
    with pytest.raises(OptionError, match="rrf_k must be a finite number >= 0, got 1000000000"):
        check_fusion(10**400, 0.5)
    with pytest.raises(ValueError, match="RRF constant k must be a finite number"):
        reciprocal_rank_fusion(_rankings(), np.arange(3), k=10**400)
    assert check_fusion(10**300, 0.5)["rrf_k"] == 1e300
