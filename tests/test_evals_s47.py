"""Stop 47 hunt in the evaluation area (`tokenpool evaluate`, `tokenpool.evaluation`): each test failed before
its fix."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.precision import evaluate_precisions
from tokenpool.evaluation.sts import Pairs, evaluate_pairs


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, pooling="mean", max_length=32, device="cpu")


PAIRS = Pairs(
    ["a cat sits", "dogs run fast", "the sky is blue", "I like tea", "rain falls", "cars are loud"],
    ["a cat sat", "a dog runs", "the sea is green", "tea is nice", "snow falls", "bikes are quiet"],
    np.array([4.5, 3.0, 1.0, 2.5, 2.0, 0.5]),
)


def test_precisions_of_the_encoders_own_pooling_calibrate_it(tiny):
    """``labels=[None]`` (the encoder's own pooling, as `evaluate_pairs` takes it) with int8 raised
    AttributeError: 'NoneType' object has no attribute 'split' while naming the calibration's pooling."""
    floats, table, calibrations = evaluate_precisions(tiny, PAIRS, [None], ["int8", "binary"])
    assert floats[None] == pytest.approx(evaluate_pairs(tiny, PAIRS, [None])[None])
    assert [row.precision for row in table[None]] == ["float32", "int8", "binary"]
    assert calibrations[None].pooling == tuple(tiny.strategies)
    assert calibrations[None].normalize == bool(tiny.normalize)
