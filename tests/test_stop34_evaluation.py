"""Evaluation corners found in hunt 34-3, each failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.beir import RetrievalSet
from tokenpool.evaluation.modes import plan_modes


@pytest.mark.parametrize(
    "given, names",
    [("truncate,bm25", ["truncate", "bm25"]), (" hybrid:truncate , windows", ["hybrid:truncate", "windows"]),
     ("bm25", ["bm25"])],
)  # fmt: skip
def test_modes_string_is_comma_separated_like_pooling(given, names):
    """modes="truncate,bm25" (split like pooling="mean,cls" and the CLI's --modes) was refused as one unknown
    mode named 'truncate,bm25'."""
    assert plan_modes(given).order == plan_modes(names).order


def test_mode_name_not_a_string_is_a_type_error_naming_it():
    """modes=[3] raised AttributeError ('int' object has no attribute 'removeprefix')."""
    with pytest.raises(TypeError, match="3"):
        plan_modes(["truncate", 3])


@pytest.mark.parametrize("grade", ["1", 0.5, float("nan"), True, None])
def test_retrieval_set_refuses_a_grade_that_is_not_an_integer(grade):
    """RetrievalSet(qrels={"q": {"a": 0.5}}) scored a fractional gain, NaN was silently non-relevant, "1" raised
    TypeError('>' not supported) naming neither query nor document — trec_eval grades are integers."""
    with pytest.raises(ValueError, match=r"'q'.*'a'"):
        RetrievalSet(["a", "b"], ["x", "y"], ["q"], ["t"], {"q": {"a": grade}})


def test_retrieval_set_refuses_judgements_that_are_not_a_mapping():
    """qrels={"q": ["a"]} passed the check and failed later with AttributeError ('list' has no 'items')."""
    with pytest.raises(ValueError, match="'q'"):
        RetrievalSet(["a"], ["x"], ["q"], ["t"], {"q": ["a"]})


def test_retrieval_set_integer_grades_of_numpy_count_as_their_value():
    """An integer grade of any integer type is kept: the relevance arrays hold it (a positive one) as given."""
    data = RetrievalSet(["a", "b"], ["x", "y"], ["q"], ["t"], {"q": {"a": np.int64(2), "b": 0}})
    q_rows, d_rows, grades = data.relevance()
    assert (q_rows.tolist(), d_rows.tolist(), grades.tolist()) == ([0], [0], [2.0])
