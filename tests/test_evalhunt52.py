"""Defects found in the evaluation layer (stop 52): a list of pooling labels read as evaluate_retrieval reads
it, and a plot written whole or not at all."""

from __future__ import annotations

import os
import resource

import numpy as np
import pytest

from tokenpool.errors import CorpusError
from tokenpool.evaluation.sts import Pairs, evaluate_pairs

SENTENCES = [
    ("A man is playing a guitar.", "A person plays a guitar.", 4.6),
    ("A cat sleeps on the sofa.", "Stock markets fell sharply today.", 0.2),
    ("Two dogs run in a field.", "Dogs are running on the grass.", 3.8),
    ("The train left the station late.", "A woman is slicing an onion.", 0.0),
    ("Children are swimming in a pool.", "Kids swim in the water.", 4.1),
    ("He repaired the old bicycle.", "The president gave a speech.", 0.5),
]


@pytest.fixture(scope="module")
def pairs() -> Pairs:
    first, second, scores = zip(*SENTENCES, strict=True)
    return Pairs(list(first), list(second), np.asarray(scores, dtype=np.float64))


def test_a_list_of_labels_is_read_as_the_string_and_evaluate_retrieval_read_it(small, pairs):
    """``["mean,cls"]`` was one row, the concatenation, labelled 'mean,cls' (evaluate_retrieval's
    ``pooling=["mean,cls"]`` gives the rows mean and cls); ``["MEAN"]`` / ``["avg"]`` were rows named as typed
    (never starred as the configured pooling, which is named 'mean')."""
    from tokenpool.evaluation.precision import evaluate_precisions

    reference = evaluate_pairs(small, pairs, "mean,cls")
    assert list(reference) == ["mean", "cls"]
    assert evaluate_pairs(small, pairs, ["mean,cls"]) == reference
    assert evaluate_pairs(small, pairs, ["MEAN", "avg", "cls"]) == reference
    floats = evaluate_precisions(small, pairs, ["mean,cls"], ["float32"])[0]
    assert floats == pytest.approx(reference)


@pytest.mark.parametrize("labels", [[], [""], [" , "]])
def test_no_label_is_refused_as_the_string_is_not_an_empty_table(small, pairs, labels):
    """An empty list ran the model and returned {} (``""`` and evaluate_retrieval's ``pooling=[]`` are refused)."""
    with pytest.raises(ValueError, match="no pooling strategy"):
        evaluate_pairs(small, pairs, labels)


def test_a_label_that_is_no_string_is_a_type_error_naming_it(small, pairs):
    """``[5]`` was "argument of type 'int' is not iterable", from inside the pooling code."""
    with pytest.raises(TypeError, match="5"):
        evaluate_pairs(small, pairs, ["mean", 5])


def test_the_encoders_own_pooling_stays_a_label(small, pairs):
    """None (the encoder's own pooling; the runtime comparison and the ONNX guard score it) is kept as it is."""
    own = evaluate_pairs(small, pairs, [None])
    assert list(own) == [None]
    assert own[None] == pytest.approx(evaluate_pairs(small, pairs, "mean")["mean"])


def test_a_plot_that_cannot_be_written_whole_leaves_the_old_file(tmp_path):
    """A write that failed part-way (disk full, a file size limit) left a truncated image under the final name,
    and the user's earlier chart was lost; now the old file stays and no temporary file is left behind."""
    from tokenpool.evaluation.common import pyplot
    from tokenpool.evaluation.sts import plot_scores

    pyplot()  # matplotlib's imports and font cache, before the limit
    target = tmp_path / "scores.png"
    target.write_bytes(b"the chart of last week")
    scores = {f"pooling {i}": 50.0 + i for i in range(12)}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # a write past 4 KiB fails (EFBIG)
    try:
        with pytest.raises(CorpusError, match="cannot write the plot"):
            plot_scores(scores, str(target), title="x")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert target.read_bytes() == b"the chart of last week"
    assert sorted(os.listdir(tmp_path)) == ["scores.png"]
    plot_scores(scores, str(target), title="x")  # without the limit: the new chart replaces it
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["scores.png"]


STSB_HEADER = "genre\tfile\tyear\tid\tscore\tsentence1\tsentence2\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("main\tMSRvid\t2012\t1\tn/a\tA man sings.\tA man is singing.\n", r"line 2: score 'n/a' is not a number"),
        ("main\tMSRvid\t2012\t1\t4.0\tA man sings.\n", r"line 2: 6 tab-separated fields"),
        ("", r"a header but no sentence pairs"),
    ],
)
def test_an_stsb_header_is_known_by_its_score_column_so_errors_name_the_line_at_fault(tmp_path, body, message):
    """A header naming column 5 ``score`` was taken for a pair when line 2 was bad (a malformed score, a
    missing column) or absent: the error named line 1 and its 'score', the header, not the line at fault (the
    3-column layout names line 2)."""
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text(STSB_HEADER + body, encoding="utf-8")
    with pytest.raises(CorpusError, match=message) as caught:
        read_pairs(str(path))
    assert "'score'" not in str(caught.value)


def test_an_stsb_header_still_reads_and_a_headerless_bad_score_still_names_line_1(tmp_path):
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text(STSB_HEADER + "main\tMSRvid\t2012\t1\t4.0\tA man sings.\tA man is singing.\n", encoding="utf-8")
    pairs = read_pairs(str(path))
    assert (pairs.first, pairs.second, pairs.scores.tolist()) == (["A man sings."], ["A man is singing."], [4.0])
    path.write_text("main\tMSRvid\t2012\t1\tabc\tA man sings.\tA man is singing.\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 1: score 'abc' is not a number"):
        read_pairs(str(path))
