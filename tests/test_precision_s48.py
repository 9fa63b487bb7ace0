"""Stop 48, precisions: rescoring compares like with like, exact search refuses scores that overflow float32,
quantize refuses values float32 cannot hold, bfloat16 rows are read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tinymodels import bert_folder

from tokenpool import Encoder
from tokenpool.core.quantize import dequantize, quantize
from tokenpool.evaluation.beir import read_beir
from tokenpool.evaluation.common import unit_rows
from tokenpool.evaluation.precision import evaluate_retrieval_precisions

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
