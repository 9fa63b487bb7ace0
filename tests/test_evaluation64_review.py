"""Review of stop 64's evaluation fixes: the neighbouring inputs each fix left out, checked against the rule the
fix states (its own reference case, or what the other list options do with the same input)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line

from tokenpool.errors import OptionError
from tokenpool.evaluation.precision import parse_precisions
from tokenpool.evaluation.retrieval import metrics_per_query
from tokenpool.evaluation.search import exact_search
from tokenpool.evaluation.sts import label_list

SAMPLE = Path(__file__).parents[1] / "examples" / "sts-sample.tsv"


@pytest.mark.parametrize("dtype", [bool, str])
def test_no_grades_of_a_type_that_is_no_number_are_refused_as_one_grade_is(dtype):
    """An empty relevance whose grades are bool (a mask of nothing) was still "OverflowError: Python int too large
    to convert to C long": the dtype check skipped empty grades. Reference: one grade of that type is refused."""
    one, none = (np.array(v, dtype=dtype) for v in ([1], []))
    rows = (np.array([0]), np.array([1]), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    for grades, q_rows, d_rows in ((one, rows[0], rows[1]), (none, rows[2], rows[3])):
        with pytest.raises(ValueError, match=f"the grades numbers; got .* {re.escape(f'{grades.dtype} {grades.shape}')}"):
            metrics_per_query(np.array([[0, 1]]), (q_rows, d_rows, grades), 2)
    metrics_per_query(np.array([[0, 1]]), ([], [], []), 2)  # three empty lists (float64): no judgement, read


@pytest.mark.parametrize("names", [["int8", ""], ["int8", " "], ["", "binary"]])
def test_an_empty_precision_in_a_list_is_refused_as_in_a_string(names):
    """``precisions=["int8", ""]`` dropped the empty name and ran int8, where ``"int8,,"`` is refused since stop
    64 and a pooling list ``["mean", ""]`` is refused (the reference)."""
    with pytest.raises(ValueError):
        label_list(["mean", ""], None)
    with pytest.raises(OptionError, match="empty precision name"):
        parse_precisions(",".join(names))
    with pytest.raises(ValueError, match="unknown precision ''"):
        parse_precisions(names)


def test_the_precision_list_message_names_all_among_the_valid_names():
    """"int8,," listed the precisions but not ``all``, which `parse_precisions` reads (the reference)."""
    assert parse_precisions("all") == parse_precisions("float32,float16,int8,uint8,binary,ubinary")
    with pytest.raises(OptionError, match="valid names: .*ubinary, all$"):
        parse_precisions("int8,,")


@pytest.mark.parametrize(
    "flags", [["--precision", "int8"], ["--onnx-file", "a.onnx", "--onnx-file", "b.onnx"], []]
)  # fmt: skip
@pytest.mark.parametrize("folder", [True, False])
def test_modes_truncate_in_any_case_is_the_default_as_in_lower_case(run, tmp_path, flags, folder):
    """Mode names are read in any case since stop 64, but `--modes Truncate` with --precision, with several
    --onnx-file or with a pairs file was refused as "--modes is not supported" where `--modes truncate` (the
    reference, the default) went on. Both now give the same line: the (missing) model's."""
    data = tmp_path / "set"
    if folder:
        data.mkdir()
        (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "apple pie"}\n')
        (data / "queries.jsonl").write_text('{"_id": "q1", "text": "apple"}\n')
        (data / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    else:
        data.write_bytes(SAMPLE.read_bytes())
    runtime = ["--runtime", "onnx"] if "--onnx-file" in flags else []
    lines = []
    for modes in ("truncate", "Truncate", " TRUNCATE "):
        code, _, err = run("evaluate", data, "--model", tmp_path / "no-model", *runtime, *flags, "--modes", modes)
        assert_one_error_line(code, err, "no-model")
        lines.append(err)
    assert lines[1] == lines[2] == lines[0]


def test_a_run_refuses_a_query_id_given_twice_and_too_few_document_ids():
    """`Ranking.run` with a query id given twice kept one of the two lists (the other dropped without a word), and
    with fewer document ids than the ranked rows raised a bare IndexError. Reference: a run built here, one
    entry per ranked query."""
    ranking = exact_search(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), k=2)
    docs, queries = ["d0", "d1", "d2"], ["q0", "q1", "q2"]
    want = {
        q: {docs[d]: float(s) for d, s in zip(ranking.indices[i], ranking.scores[i], strict=True) if d >= 0}
        for i, q in enumerate(queries)
    }
    assert ranking.run(queries, docs) == want
    with pytest.raises(ValueError, match="3 queries, got 3 query ids, 2 distinct"):
        ranking.run(["q0", "q1", "q0"], docs)
    with pytest.raises(ValueError, match="document row 2, got 2 document ids"):
        ranking.run(queries, docs[:2])
