"""Stop 48, precisions: rescoring compares like with like, exact search refuses scores that overflow float32,
quantize refuses values float32 cannot hold, bfloat16 rows are read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodels import bert_folder

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, dequantize, quantize
from tokenpool.evaluation.beir import read_beir
from tokenpool.evaluation.common import unit_rows
from tokenpool.evaluation.precision import evaluate_retrieval_precisions
from tokenpool.evaluation.search import exact_search

pytrec_eval = pytest.importorskip("pytrec_eval")
WORDS = ["cell", "protein", "gene", "virus", "brain", "heart", "cancer", "drug", "blood", "immune", "bone", "lung"]


def _beir(root):
    root.mkdir()
    rng = np.random.default_rng(5)
    docs = {f"d{i:02d}": " ".join(rng.choice(WORDS, size=3 + i % 10)) for i in range(60)}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{q}", "text": " ".join(docs[f"d{3 * q:02d}"].split()[:3])}) + "\n" for q in range(20))
    )
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{q}\td{3 * q:02d}\t1\n" for q in range(20)))
    return root


def test_int8_rescoring_is_the_cosine_of_the_float32_row(tmp_path):
    """int8 + float32 rescoring ranked by the float32 query · the dequantized document, while the float32 row (and
    the int8 codes' row) are cosines: for a model that does not normalise, rescoring every document did not
    reproduce the float32 ranking even with exact codes. It is the cosine of the query and the dequantized document."""
    encoder = Encoder(bert_folder(tmp_path / "m", normalize=False))
    data = read_beir(_beir(tmp_path / "beir"))
    rows, calibration = evaluate_retrieval_precisions(data, encoder, ["int8"], calibration_size=60, rescore=[60])
    queries, documents = encoder.encode_queries(data.query_texts), encoder.encode_documents(data.doc_texts)
    assert np.linalg.norm(documents, axis=1).std() > 0.01  # not unit length: dot and cosine rank differently
    stored = unit_rows(dequantize(quantize(documents, "int8", calibration), "int8", calibration))
    scores = queries.astype(np.float64) @ stored.T
    run = {q: {data.doc_ids[d]: float(s) for d, s in enumerate(scores[i])} for i, q in enumerate(data.query_ids)}
    qrels = {f"q{q}": {f"d{3 * q:02d}": 1} for q in range(20)}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    expected = float(np.mean([v["ndcg_cut_10"] for v in evaluator.evaluate(run).values()]))
    assert rows[-1].name == "int8 + float32 rescoring of the top 60"
    assert rows[-1].scores.ndcg_at_10 == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("sparse", [False, True])
def test_exact_search_refuses_scores_that_overflow_float32(sparse):
    """Finite vectors near 2e19 have dot products past float32's 3.4e38: the scores became inf or NaN and a NaN
    was ranked first or last by its sign bit (sparse: [0 1 2 3] with NaN scores). Now a ValueError naming them."""
    q = np.array([[2e19, 2e19], [1.0, 1.0]], dtype=np.float32)
    d = np.array([[1.0, 0.0], [2e19, -2e19], [-2e19, 2e19]], dtype=np.float32)
    if sparse:
        import scipy.sparse

        q, d = scipy.sparse.csr_matrix(q), scipy.sparse.csr_matrix(d)
    with pytest.raises(ValueError, match=r"document row 1: .*overflows float32"):
        exact_search(q, d, k=3)


@settings(max_examples=60, deadline=None)
@given(
    scale=st.sampled_from([1.0, 1e18, 1e19, 3e19, 1e30]),
    seed=st.integers(0, 2**16),
    units=st.integers(1, 9),
    per_doc=st.integers(1, 3),
)
def test_exact_search_scores_are_finite_or_refused(scale, seed, units, per_doc):
    """Whatever the scale of finite float32 vectors, a ranking holds only finite scores (−inf past the end)."""
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((3, 4)) * scale).astype(np.float32)
    u = (rng.standard_normal((units, 4)) * scale).astype(np.float32)
    doc_index = np.arange(units) // per_doc
    try:
        ranking = exact_search(q, u, doc_index, k=4)
    except ValueError as err:
        assert "overflows float32" in str(err)
        return
    found = ranking.indices >= 0
    assert np.isfinite(ranking.scores[found]).all() and (ranking.scores[~found] == -np.inf).all()


def test_exact_search_names_a_value_beyond_float32():
    """A float64 1e300 (finite) was refused as "holds NaN or infinite values" without the value, after a numpy
    overflow warning; the message names it, and says it is infinite as float32."""
    with pytest.raises(ValueError, match=r"queries row 1 holds NaN or infinite values as float32: 1e\+300"):
        exact_search(np.array([[1.0], [1e300]]), np.array([[1.0]]))


@pytest.mark.filterwarnings("error")
@given(
    st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e39, -3.5e38, 7e4, -65520.0])),
        min_size=1, max_size=6,
    ),
    st.sampled_from(["float32", "float16"]),
)
@settings(max_examples=200, deadline=None)
def test_float_precisions_clip_finite_values_and_keep_infinities(values, precision):
    """quantize(float64 1e39, "float32") gave inf (with a numpy warning) while float16 clipped 1e6 to 65504, and
    float16 turned a real inf (a model overflow) into a finite 65504. Now both clip finite values to the type's
    largest and keep ±inf and NaN as they are, without a warning."""
    array = np.array([values], dtype=np.float64)
    out = quantize(array, precision)[0]
    largest = float(np.finfo(out.dtype).max)
    for v, got in zip(values, out.tolist(), strict=True):
        if not math.isfinite(v):
            assert got == v or (math.isnan(v) and math.isnan(got))
        else:
            expected = np.float32(min(max(v, -largest), largest)).astype(out.dtype)
            assert math.isfinite(got) and got == float(expected)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8", "ubinary"])
def test_quantize_reads_ml_dtypes_bfloat16_rows(precision):
    """JAX's bfloat16 rows (numpy arrays of ml_dtypes' bfloat16 via ``np.asarray``) were refused: "vectors must be
    real numbers, got dtype bfloat16". They are read as float32 (which holds each value exactly), like torch's."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rows = np.random.default_rng(0).standard_normal((4, 8)).astype(ml_dtypes.bfloat16)
    wide = rows.astype(np.float32)
    calibration = Calibration.from_vectors(rows)
    assert calibration == Calibration.from_vectors(wide)
    np.testing.assert_array_equal(quantize(rows, precision, calibration if precision == "int8" else None),
                                  quantize(wide, precision, calibration if precision == "int8" else None))


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_similarities_refuse_float_vectors_given_as_codes(precision):
    """Float vectors passed as int8/uint8 codes were truncated to integers (unit vectors: all zeros, cosine 0) and
    as binary codes their float32 bytes were read as sign bits: similarity_rows gave 8.0 for [[0.0]], silently."""
    from tokenpool.evaluation.precision import search_vectors, similarity_matrix, similarity_rows

    floats = np.full((2, 8), 0.5, dtype=np.float32)
    for call in (lambda: similarity_rows(floats, floats, precision, 8), lambda: search_vectors(floats, precision, 8),
                 lambda: similarity_matrix(floats, floats, precision, 8)):  # fmt: skip
        with pytest.raises(TypeError, match=r"(codes|sign bits) must (have dtype|be uint8).*float32"):
            call()


def test_sparsify_reads_ml_dtypes_bfloat16_rows():
    """sparsify refused JAX's bfloat16 rows ("sparsify needs real numbers, got dtype bfloat16") after quantize had
    learnt to read them: both now read them through the core's one host conversion (`to_numpy`) as float32."""
    from tokenpool.core.sparse import sparsify

    ml_dtypes = pytest.importorskip("ml_dtypes")
    rows = np.maximum(np.random.default_rng(1).standard_normal((3, 16)), 0).astype(ml_dtypes.bfloat16)
    got, wide = sparsify(rows, top_k=4), sparsify(rows.astype(np.float32), top_k=4)
    np.testing.assert_array_equal(got.indices, wide.indices)
    np.testing.assert_array_equal(got.values, wide.values)
