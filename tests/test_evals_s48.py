"""Stop 48 hunt in the evaluation area (`tokenpool evaluate`, `tokenpool.evaluation`): each test failed before
its fix."""

from __future__ import annotations

import re

import numpy as np
import pytest
from clitools import assert_one_error_line
from test_retrieval import write_beir

from tokenpool.errors import CorpusError, OptionError
from tokenpool.evaluation.beir import RetrievalSet, read_beir
from tokenpool.evaluation.retrieval import evaluate_retrieval, metrics_per_query

DOCS = [{"_id": "d1", "text": "cat dog"}, {"_id": "d2", "text": "cat"}, {"_id": "d3", "text": "dog"}]


@pytest.mark.parametrize("score", ["1" + "0" * 400, "-" + "9" * 5000, str(2**63), str(-(2**63) - 1), "0" * 5000 + "1" + "0" * 30])
def test_a_qrels_grade_past_64_bits_is_refused_naming_file_and_line(tmp_path, run, score):
    """10**400 raised "failed: int too large to convert to float" (no file, no line), 5000 digits int()'s
    digit-limit ValueError; 10**308 grades summed to inf and nDCG read 0 without a word. trec_eval reads a grade
    as a C long: the 64-bit integers."""
    folder = write_beir(tmp_path / "f", DOCS, [{"_id": "q1", "text": "cat"}], [("q1", "d1", 1), ("q1", "d2", score)])
    with pytest.raises(CorpusError, match=r"qrels.tsv, line 3: score -?[0-9][0-9.e+]*, outside the 64-bit integers"):
        read_beir(folder)
    code, _, err = run("evaluate", str(folder), "--modes", "bm25")
    assert_one_error_line(code, err, "qrels.tsv, line 3", "outside the 64-bit integers")


def test_64_bit_grades_are_read_and_score_as_trec_eval():
    top = 2**63 - 1
    data = RetrievalSet(["d1", "d2"], ["cat", "dog"], ["q1"], ["cat"], {"q1": {"d1": top, "d2": -(2**63)}})
    assert data.relevance()[2].tolist() == [float(top)]
    assert metrics_per_query(np.array([[0, 1]]), data.relevance(), 2)["nDCG@10"] == 1.0  # (2**63 - 1 is 2.0**63)
    for grade in (10**308, 2**63, np.uint64(2**64 - 1)):
        with pytest.raises(ValueError, match="grade document 'd1' .* outside the 64-bit integers"):
            RetrievalSet(["d1", "d2"], ["cat", "dog"], ["q1"], ["cat"], {"q1": {"d1": grade}})


@pytest.mark.parametrize("grade", [np.inf, 1e308, np.nan, 0.0, -1.0])
def test_metrics_refuse_a_grade_that_is_no_finite_64_bit_gain(grade):
    """An infinite grade gave nDCG NaN, grades of 1e308 an ideal DCG of inf (nDCG 0 or NaN)."""
    relevance = (np.array([0, 0]), np.array([0, 1]), np.array([grade, 1.0]))
    with pytest.raises(ValueError, match=re.escape(f"grade {grade!r} ") + ".*query row 0, document row 0"):
        metrics_per_query(np.array([[0, 1]]), relevance, 2)


@pytest.mark.parametrize("options", [["--modes", "bm25"], ["--split", "dev"], ["--bm25", "k1=1.2"], ["--precision", "int8", "--rescore", "10"]])
def test_a_mistyped_folder_is_named_missing_not_taken_for_a_pairs_file(tmp_path, run, options):
    """``evaluate ./scifcat --modes bm25`` said "--modes is not supported with a pairs file": the path is
    neither."""
    code, _, err = run("evaluate", str(tmp_path / "scifcat"), *options)
    assert_one_error_line(code, err, f"{tmp_path / 'scifcat'}: no such file")


@pytest.mark.parametrize(
    "field, what",
    [("doc_ids", "document id"), ("query_ids", "query id"), ("doc_texts", "document text"), ("query_texts", "query text")],
)
@pytest.mark.parametrize("bad", [None, 5])
def test_a_retrieval_set_refuses_an_id_or_text_that_is_no_string(field, what, bad):
    """A None id passed the string check (None was its "nothing found") and BM25 failed on tie ranks
    ('NoneType' object has no attribute 'encode') or scored a query id None; a None or int text failed inside
    bm25s ('NoneType' object has no attribute 'lower')."""
    values = {"doc_ids": ["a", "b"], "doc_texts": ["cat", "dog"], "query_ids": ["q", "r"], "query_texts": ["cat", "dog"]}
    values[field][1] = bad
    qrels = {q: {"a": 1} for q in values["query_ids"]}
    with pytest.raises(ValueError, match=f"every {what} must be a string, got {bad!r} .* at position 1"):
        RetrievalSet(values["doc_ids"], values["doc_texts"], values["query_ids"], values["query_texts"], qrels)


@pytest.mark.parametrize("file", ["corpus.jsonl", "queries.jsonl"])
def test_an_id_with_a_lone_surrogate_is_refused_naming_file_and_line(tmp_path, run, file):
    """``"_id": "d\\ud800"`` was read; the search's tie order then failed with "'utf-8' codec can't encode
    character '\\ud800'", naming no file (the text fields were already checked)."""
    queries = [{"_id": "q1", "text": "cat"}, {"_id": "q2", "text": "dog"}, {"_id": "q3", "text": "fish"}]
    folder = write_beir(tmp_path / "f", DOCS, queries, [("q1", "d1", 1)])
    with open(folder / file, "a", encoding="utf-8") as fh:
        fh.write('{"_id": "x\\ud800", "text": "fish"}\n')
    with pytest.raises(CorpusError, match=f"{file}, line 4: field '_id' holds a lone surrogate"):
        read_beir(folder)
    code, _, err = run("evaluate", str(folder), "--modes", "bm25")
    assert_one_error_line(code, err, f"{file}, line 4: field '_id' holds a lone surrogate")


@pytest.mark.parametrize("options", [{"rrf_k": 10}, {"hybrid_weight": 0.3}])
def test_fusion_options_without_a_hybrid_mode_are_refused(options):
    """``evaluate_retrieval(..., modes="bm25", rrf_k=10)`` ignored the constant without a word (the CLI refuses
    ``--rrf-k`` there, and the library already refused ``bm25=`` settings that no mode reads)."""
    pytest.importorskip("bm25s")
    data = RetrievalSet(["d1", "d2"], ["cat", "dog"], ["q1"], ["cat"], {"q1": {"d1": 1}})
    with pytest.raises(OptionError, match=f"{next(iter(options))}=.* are for hybrid:MODE modes"):
        evaluate_retrieval(data, modes="bm25", **options)
    assert evaluate_retrieval(data, modes="bm25", rrf_k=60, hybrid_weight=0.5).scores().ndcg_at_10 == 1.0
