"""Stop 52: option parsers of the evaluation refuse a value of the wrong type, naming it (found by a review)."""

from __future__ import annotations

import pytest

from tokenpool.evaluation.lexical import BM25Settings
from tokenpool.evaluation.precision import parse_precisions


@pytest.mark.parametrize("spec", [["int8", 5], 5, ["int8", None]])
def test_parse_precisions_refuses_a_non_name_naming_it(spec):
    """["int8", 5] raised AttributeError ('int' object has no attribute 'strip'); 5 a bare 'not iterable'."""
    with pytest.raises(TypeError, match="precision.*(int|NoneType)"):
        parse_precisions(spec)


def test_parse_precisions_still_reads_names_and_lists():
    assert parse_precisions(["ubinary", "int8"]) == parse_precisions("int8, ubinary") == ["float32", "int8", "ubinary"]


@pytest.mark.parametrize("spec", [5, 1.5, ["k1=1"]])
def test_bm25_settings_refuse_a_value_of_another_type_naming_it(spec):
    """BM25Settings.parse(5) (evaluate_retrieval(..., bm25=5)) raised "'int' object is not iterable"."""
    with pytest.raises(TypeError, match=f"BM25 settings must be .*{type(spec).__name__}"):
        BM25Settings.parse(spec)


def test_bm25_settings_still_read_text_and_mappings():
    assert BM25Settings.parse("k1=1.2,b=0.5") == BM25Settings.parse({"k1": 1.2, "b": 0.5})
