"""Runtime comparison corners found in hunt 34-3; each failed before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402
from tokenpool.evaluation.beir import read_beir  # noqa: E402
from tokenpool.evaluation.precision import evaluate_precisions  # noqa: E402
from tokenpool.evaluation.runtimes import compare_retrieval  # noqa: E402
from tokenpool.evaluation.sts import Pairs, evaluate_pairs  # noqa: E402


def test_compare_retrieval_reads_a_beir_folder(tmp_path):
    """compare_retrieval(loaders, folder) ran every runtime's evaluation, then failed with AttributeError
    ('str' object has no attribute 'doc_ids'); a folder is read once, as the RetrievalSet it holds."""
    docs = {"d1": "cats purr on the sofa", "d2": "stock markets fell today", "d3": "a kitten sleeps"}
    queries = {"q1": "feline pets", "q2": "finance news"}
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t1\n")
    loaders = [("torch", lambda: Encoder(device="cpu"))]
    want = compare_retrieval(loaders, read_beir(tmp_path), batch_size=8)
    got = compare_retrieval(loaders, str(tmp_path), batch_size=8)
    assert [row.scores for row in got] == [row.scores for row in want]


@pytest.mark.parametrize("spec, listed", [("mean", ["mean"]), ("mean, cls", ["mean", "cls"]), ("mean+max", ["mean+max"])])
def test_sts_evaluations_read_one_labels_string_as_pooling_does(spec, listed):
    """evaluate_pairs(encoder, pairs, "mean") pooled the strategies 'm', 'e', 'a', 'n' ("unknown pooling strategy
    'm'"); a string is read as --pooling reads it. Same scores as the list."""
    encoder = Encoder(device="cpu")
    pairs = Pairs(["a cat", "a dog", "stocks rose"], ["a kitten", "a car", "markets up"], np.array([4.0, 1.0, 3.0]))
    assert evaluate_pairs(encoder, pairs, spec) == evaluate_pairs(encoder, pairs, listed)
    got = evaluate_precisions(encoder, pairs, spec, ["float16"], calibration_size=2)[0]
    assert got == evaluate_precisions(encoder, pairs, listed, ["float16"], calibration_size=2)[0]
