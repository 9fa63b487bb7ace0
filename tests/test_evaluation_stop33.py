"""Stop 33 bug hunt of the evaluation layer: corners checked against independent references."""

from __future__ import annotations

import pytest

from tokenpool.evaluation.beir import RetrievalSet


@pytest.mark.parametrize(
    ("doc_ids", "query_ids", "qrels"),
    [([1, 2], ["q"], {"q": {1: 1}}), (["1", 2], ["q"], {"q": {"1": 1}}), (["a", "b"], [7], {7: {"a": 1}})],
)
def test_retrieval_set_refuses_ids_that_are_not_strings(doc_ids: list, query_ids: list, qrels: dict) -> None:
    """A RetrievalSet built in Python with integer ids was accepted, then failed deep in the search with
    AttributeError ('int' object has no attribute 'encode'); [1, "1"]-like mixes even passed the duplicate check.
    Ids are strings (trec_eval orders ties by their bytes; read_beir turns JSON numbers into strings)."""
    with pytest.raises(ValueError, match="must be a string"):
        RetrievalSet(doc_ids, ["x"] * len(doc_ids), query_ids, ["y"] * len(query_ids), qrels)
