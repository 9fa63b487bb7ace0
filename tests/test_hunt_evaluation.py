"""Corners of the evaluation found by a bug hunt, each checked against a reference written here (plain Python
computations of the documented behaviour), not against the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.evaluation.beir import read_beir


def _folder(root: Path, qrels_text: str) -> Path:
    """A BEIR folder of documents d1, d2 and query q1, with ``qrels_text`` as its qrels.tsv."""
    root.mkdir(parents=True, exist_ok=True)
    corpus = [{"_id": "d1", "text": "apple"}, {"_id": "d2", "text": "banana"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "apple"}\n', encoding="utf-8")
    (root / "qrels.tsv").write_text(qrels_text, encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------- qrels


@pytest.mark.parametrize("score", ["1.0", "x", "yes"])
def test_a_first_judgement_with_a_bad_score_is_refused_not_skipped_as_a_header(tmp_path, score):
    # no header; the first line judges a known (query, document) pair: it is data, so its score is an error
    # (it was read as the header and dropped, and q1 was scored against d2 alone)
    folder = _folder(tmp_path / "f", f"q1\td1\t{score}\nq1\td2\t1\n")
    with pytest.raises(CorpusError, match=f"qrels.tsv, line 1: score '{score}' is not an integer"):
        read_beir(folder)
    alone = _folder(tmp_path / "g", f"q1\td1\t{score}\n")  # was "no judgements"
    with pytest.raises(CorpusError, match=f"line 1: score '{score}' is not an integer"):
        read_beir(alone)


@pytest.mark.parametrize("header", ["query-id\tcorpus-id\tscore", "qid\tdocid\trel", "q\td\tscore"])
def test_a_header_line_is_still_skipped(tmp_path, header):
    data = read_beir(_folder(tmp_path / "f", f"{header}\nq1\td1\t1\nq1\td2\t0\n"))
    assert data.qrels == {"q1": {"d1": 1, "d2": 0}}


@pytest.mark.parametrize("score", ["1_0", "0_1", "٣"])
def test_a_score_is_ascii_digits_not_whatever_python_int_reads(tmp_path, score):
    # int() reads "1_0" as 10 and "٣" (Arabic-Indic three) as 3: trec_eval's atol reads neither as that grade
    folder = _folder(tmp_path / "f", f"query-id\tcorpus-id\tscore\nq1\td1\t{score}\n")
    with pytest.raises(CorpusError, match=f"line 2: score '{score}' is not an integer"):
        read_beir(folder)


@pytest.mark.parametrize("score, grade", [("2", 2), ("+2", 2), ("-1", -1), ("007", 7)])
def test_plain_integer_scores_are_read(tmp_path, score, grade):
    folder = _folder(tmp_path / "f", f"q1\td2\t1\nq1\td1\t{score}\n")
    assert read_beir(folder).qrels["q1"] == {"d2": 1, "d1": grade}


# ---------------------------------------------------------------------------------------------- STS


def test_constant_similarities_are_an_error_not_a_nan_table(tmp_path, run, encoders):
    """max_length=2 keeps [CLS] [SEP] of every text: one vector for all, one cosine for every pair, so
    Spearman is undefined; it printed "nan" (and NaN, which is not JSON, with --json) and exited 0."""
    path = tmp_path / "pairs.csv"
    path.write_text("score,s1,s2\n1,a cat,a dog\n2,rain falls,it rains\n3,red,blue\n", encoding="utf-8")
    for flag in ("--json", None):
        code, out, err = run("evaluate", path, "--max-length", "2", "--pooling", "mean,cls", *[flag] * bool(flag))
        assert_one_error_line(code, err, "'mean'", "same similarity", "Spearman")
        assert "nan" not in out.lower()
    # the premise, checked independently: every text gets the same vector
    encoder = next(e for options, e in encoders.items() if options.max_length == 2)
    vectors = encoder.encode(["a cat", "a dog", "rain falls", "it rains", "red", "blue"])
    assert (vectors == vectors[0]).all()
