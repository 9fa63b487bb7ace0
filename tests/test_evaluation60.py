"""Stop 60, evaluation: rankings and judgements read as the trec_eval run they stand for (float rows are
refused, not truncated; a document after a -1 is refused, not scored a rank lower), ..."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.retrieval import metrics_per_query

RELEVANT_DOC_1 = (np.array([0]), np.array([1]), np.array([1]))


def _reference_ndcg10(ranked: list[int], grades: dict[int, int]) -> float:
    """trec_eval's ndcg_cut.10 written out: linear gains, log2(rank + 1) discounts, ideal from the grades."""
    dcg = sum(grades.get(d, 0) / np.log2(r + 2) for r, d in enumerate(ranked[:10]))
    ideal = sum(g / np.log2(r + 2) for r, g in enumerate(sorted(grades.values(), reverse=True)[:10]))
    return dcg / ideal


@pytest.mark.parametrize("indices", [[[0.6, 1.2]], [[1.0, 0.0]], [[np.nan, 1]]])
def test_metrics_refuse_float_document_rows(indices):
    """[[0.6, 1.2]] was truncated to rows [0, 1]: nDCG@10 0.63 for a run that names no document row."""
    with pytest.raises(ValueError, match="integer"):
        metrics_per_query(np.array(indices), RELEVANT_DOC_1, 2)


def test_metrics_refuse_float_judgement_rows():
    """A relevance document row 1.7 was read as row 1 (the relevant document found: nDCG 1.0)."""
    with pytest.raises(ValueError, match="integer"):
        metrics_per_query(np.array([[1, 0]]), (np.array([0]), np.array([1.7]), np.array([1])), 3)


def test_metrics_refuse_a_document_ranked_after_a_hole():
    """-1 means "past the end"; [-1, 1] was scored as document 1 at rank 2 (nDCG 0.63), where the run it
    stands for, {doc 1}, ranks it first (trec_eval: 1.0)."""
    with pytest.raises(ValueError, match="-1"):
        metrics_per_query(np.array([[-1, 1]]), RELEVANT_DOC_1, 2)
    got = metrics_per_query(np.array([[1, -1]]), RELEVANT_DOC_1, 2)["nDCG@10"]
    assert got[0] == pytest.approx(_reference_ndcg10([1], {1: 1}))


def test_exact_search_refuses_a_float_row_to_exclude():
    """exclude=[0.7] excluded document row 0 (the best match, silently gone from the ranking)."""
    from tokenpool.evaluation.search import exact_search

    vectors = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match="integers"):
        exact_search(vectors[:1], vectors, k=2, exclude=np.array([0.7]))
    assert exact_search(vectors[:1], vectors, k=2, exclude=np.array([1])).indices.tolist() == [[0, -1]]
