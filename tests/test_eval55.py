"""Defects found in the evaluation layer (stop 55), each test failing before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.errors import OptionError
from tokenpool.evaluation.beir import RetrievalSet

LONG = " ".join(f"word{i} apple." for i in range(60))  # many windows of the tiny model's 14 text tokens


@pytest.fixture(scope="module")
def tiny_set() -> RetrievalSet:
    docs = ["apple pie", LONG, "banana split", "cherry " * 30]
    return RetrievalSet(["a", "b", "c", "d"], docs, ["q1", "q2"], ["apple", "cherry"],
                        {"q1": {"a": 1, "b": 1}, "q2": {"d": 1}})  # fmt: skip


def test_retrieval_precisions_refuse_a_windows_encoder_as_evaluate_retrieval_does(tiny_bert_folder, tiny_set):
    """`evaluate_retrieval_precisions` promises truncated documents, but with an encoder built with
    ``long_documents="windows"`` its ``encode_documents`` pooled every window of a long document: a table of
    other vectors than the one claimed, where `evaluate_retrieval` (and the STS evaluations) refuse that encoder.
    It is refused the same way now, before the model runs."""
    from tokenpool import Encoder
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    windows = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu", long_documents="windows")
    truncate = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    # the two encoders' document vectors differ on the long document: the mode matters
    assert np.abs(windows.encode_documents([LONG]) - truncate.encode_documents([LONG])).max() > 1e-3
    with pytest.raises(OptionError, match="long_documents='truncate' \\(got 'windows'\\)") as reference:
        evaluate_retrieval(tiny_set, windows)

    calls = []
    windows.encode_documents = lambda *a, **k: calls.append(a) or truncate.encode_documents(*a, **k)
    with pytest.raises(OptionError) as raised:
        evaluate_retrieval_precisions(tiny_set, windows, ["float32", "int8"])
    assert str(raised.value) == str(reference.value) and not calls
    rows, _ = evaluate_retrieval_precisions(tiny_set, truncate, ["float32"])
    assert rows[0].scores == evaluate_retrieval(tiny_set, truncate).scores()
