"""Stop 45's evaluation bug hunt: options nothing reads are refused, figures checked against independent references."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line
from test_retrieval import write_beir

CORPUS = [{"_id": "d1", "text": "cats sit on mats"}, {"_id": "d2", "text": "dogs chase cats"},
          {"_id": "d3", "text": "birds fly high"}]  # fmt: skip
QUERIES = [{"_id": "q1", "text": "cats"}, {"_id": "q2", "text": "birds fly"}]
QRELS = [("q1", "d1", 1), ("q1", "d2", 2), ("q2", "d3", 1)]


@pytest.fixture
def folder(tmp_path):
    return write_beir(tmp_path / "beir", CORPUS, QUERIES, QRELS)


@pytest.mark.parametrize(
    "options",
    [["--model", "no-such-model"], ["--prompt", "query: "], ["--prompt-name", "query"], ["--max-length", "9"],
     ["--dtype", "float16"], ["--batch-size", "3"], ["--max-batch-tokens", "99"], ["--trust-remote-code"]],
)  # fmt: skip
def test_model_options_are_refused_when_only_bm25_runs(run, folder, options):
    """`evaluate FOLDER --modes bm25` loads no model: --model, the prompts and the batching were taken and
    silently ignored (exit 0, a BM25 table for a run that named a model); --pooling was already refused."""
    code, out, err = run("evaluate", folder, "--modes", "bm25", *options)
    assert_one_error_line(code, err, options[0], "only bm25")
    assert out == ""


@pytest.mark.parametrize("modes", [["--modes", "truncate", "--pooling", "mean"], ["--modes", "bm25"]])
def test_window_stride_is_refused_where_no_mode_reads_windows(run, folder, tmp_path, modes):
    """--window-stride sets the stride of the windows and late-N modes only: with truncate, bm25 or a pairs file
    it changed nothing and the run went on, exit 0."""
    code, out, err = run("evaluate", folder, *modes, "--window-stride", "5")
    assert_one_error_line(code, err, "--window-stride", "windows or a late-N mode")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1.0\ta\tb\n2.0\tc\td\n", encoding="utf-8")
    code, out, err = run("evaluate", pairs, "--window-stride", "5")
    assert_one_error_line(code, err, "--window-stride", "pairs file")


def test_bm25_with_its_defaults_and_a_windows_stride_still_run(run, folder):
    code, _, err = run("evaluate", folder, "--modes", "bm25", "--no-trust-remote-code", "--batch-size", "64")
    assert code == 0, err
    code, _, err = run("evaluate", folder, "--modes", "windows", "--pooling", "mean", "--window-stride", "5")
    assert code == 0, err
