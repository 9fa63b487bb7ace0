"""Runtime comparison corners found in hunt 34-3; each failed before its fix."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402
from tokenpool.evaluation.beir import read_beir  # noqa: E402
from tokenpool.evaluation.runtimes import compare_retrieval  # noqa: E402


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
