"""Sparse rows and compact precisions (stop 55's hunt): each case checks tokenpool against an independent
reference (pytrec_eval on scores computed here in numpy, sentence-transformers) or its documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.core.quantize import quantize
from tokenpool.evaluation.beir import RetrievalSet
from tokenpool.evaluation.precision import evaluate_retrieval_precisions


class _FixedVectors:
    """An encoder stand-in that hands out fixed float32 query and document vectors."""

    long_documents = "truncate"

    def __init__(self, queries: np.ndarray, documents: np.ndarray) -> None:
        self.queries, self.documents = queries, documents

    def encode_queries(self, texts, **_options):
        return self.queries[: len(texts)]

    def encode_documents(self, texts, **_options):
        return self.documents[: len(texts)]


def _trec_ndcg10(qrels: dict, scores: np.ndarray, doc_ids: list[str], query_ids: list[str], candidates) -> float:
    """Mean nDCG@10 by pytrec_eval (trec_eval's tie order: equal scores by document id, descending) of the
    runs holding each query's candidate documents with their scores."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run = {query_id: {doc_ids[d]: float(scores[q, d]) for d in candidates[q]} for q, query_id in enumerate(query_ids)}
    found = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([found[query_id]["ndcg_cut_10"] for query_id in query_ids]))


def test_rescoring_breaks_ties_between_equal_codes_by_document_id():
    """ubinary + float32 rescoring: documents whose sign codes are equal get the same rescored score (the
    cosine of the query and the same ±1 vector), so trec_eval's tie order (document id) decides between them,
    as docs/precision.md says. The rescored cosines were one matrix-vector product, whose last bit depends on
    a row's place in the candidate list: equal codes were ranked by where they sat, silently."""
    rng = np.random.default_rng(7)
    dimension, n_docs, n_queries, depths = 24, 61, 12, [5, 7, 41, 61]
    patterns = np.where(rng.random((6, dimension)) < 0.5, -1.0, 1.0)  # 6 sign patterns shared by the documents
    documents = (patterns[rng.integers(0, 6, n_docs)] * rng.uniform(0.1, 1.0, (n_docs, dimension))).astype(np.float32)
    queries = rng.normal(size=(n_queries, dimension)).astype(np.float32)
    doc_ids = [f"d{i:02d}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels = {q: {doc_ids[d]: int(rng.integers(1, 3)) for d in rng.choice(n_docs, 8, replace=False)} for q in query_ids}
    data = RetrievalSet(doc_ids, doc_ids, query_ids, query_ids, qrels)
    rows, _ = evaluate_retrieval_precisions(data, _FixedVectors(queries, documents), ["ubinary"], rescore=depths)
    signs = np.where(documents > 0, 1.0, -1.0)
    assert (quantize(documents, "ubinary") == np.packbits(signs > 0, axis=-1)).all()
    agreement = np.where(queries > 0, 1.0, -1.0) @ signs.T  # D − 2·Hamming, exact
    cosines = np.round((queries.astype(np.float64) @ signs.T) / np.sqrt(dimension), 12)  # equal codes: equal
    for depth in depths:
        (rescored,) = [row for row in rows if row.name.endswith(f"rescoring of the top {depth}")]
        shortlists = [sorted(range(n_docs), key=lambda d: (-agreement[q, d], -d))[:depth] for q in range(n_queries)]
        expected = _trec_ndcg10(qrels, cosines, doc_ids, query_ids, shortlists)
        assert rescored.scores.ndcg_at_10 == pytest.approx(expected), depth


def test_a_failed_calibration_names_how_many_texts_it_had(run, tiny_bert_folder, tmp_path):
    """`evaluate --precision int8` on pairs of one distinct sentence said "cannot calibrate pooling 'mean' on
    the first 1000 sentences: a calibration needs at least 2 texts, got 1" — the --calibration-size, not the
    sentences there were (the table's heading names those since stop 53); retrieval said "the first 1000
    documents" of a one-document corpus. Both now name the texts the ranges were taken from."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sentence1,sentence2,score\na cat,a cat,1\na cat,a cat,2\na cat,a cat,3\n", encoding="utf-8")
    code, _, err = run("evaluate", pairs, "--model", tiny_bert_folder, "--precision", "int8", "--pooling", "mean")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "on the first 1 sentences: a calibration needs at least 2 texts, got 1" in err, err
    assert "1000" not in err

    from tokenpool.errors import OptionError

    data = RetrievalSet(["d0"], ["a cat"], ["q0"], ["cat"], {"q0": {"d0": 1}})
    vectors = np.ones((1, 8), dtype=np.float32)
    with pytest.raises(OptionError, match=r"on the first 1 documents: a calibration needs at least 2") as caught:
        evaluate_retrieval_precisions(data, _Labelled(vectors, vectors), ["int8"])
    assert "1000" not in str(caught.value)


class _Labelled(_FixedVectors):
    """`_FixedVectors` with what a calibration records of the model."""

    model_path, model_id, strategies, normalize, max_length = "m/folder", None, ("mean",), True, 8


def test_serving_a_sparse_model_with_a_calibration_names_the_calibration(run, capsys, tmp_path):
    """`tokenpool serve --model SPLADE --calibration FILE` (and `EncoderRunner(splade, calibration=...)`) was
    refused with "precision='int8' is for dense models; ...": a Python spelling of an option the command has
    not got and nobody gave. The refusal names what was given: the calibration."""
    pytest.importorskip("sentence_transformers")
    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.core.quantize import Calibration
    from tokenpool.errors import OptionError
    from tokenpool.serve.runner import EncoderRunner

    folder = bert_folder(tmp_path / "splade", mlm=True)
    file = Calibration.from_vectors(np.random.default_rng(0).normal(size=(4, 8))).save(tmp_path / "c.json")
    capsys.readouterr()  # (the folder's progress bars)
    code, out, err = run("serve", "--model", folder, "--calibration", file, "--port", "0")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1, err
    assert "precision" not in err and "calibration" in err and "sparse (SPLADE)" in err, err
    with pytest.raises(OptionError, match="calibration") as caught:
        EncoderRunner(Encoder(folder, device="cpu"), calibration=Calibration.load(file))
    assert "precision" not in str(caught.value)
