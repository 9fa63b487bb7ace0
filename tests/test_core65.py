"""Stop 65, core layer: the past items settled with a test that failed before."""

from __future__ import annotations

import numpy as np
import pytest

import tokenpool
from tokenpool.core.quantize import Calibration


@pytest.mark.parametrize("mask", [["mean", "max"], ("cls",), [tokenpool.Pooling.MAX, "mean"], [b"max"]])
def test_a_list_of_strategies_given_as_the_mask_is_named_as_such(mask):
    """``pool(hidden, ["mean", "max"])`` (the strategies where the mask goes) said "attention_mask has shape (2,)
    but hidden states have shape (2, 3, 4)"; a single strategy there already got the TypeError naming it (stop
    64). Now a list of names gets it too, for the batch and the one-sequence form and `pack`."""
    hidden = np.ones((2, 3, 4), dtype=np.float32)
    for call in (lambda: tokenpool.pool(hidden, mask), lambda: tokenpool.pool(hidden[0], mask),
                 lambda: tokenpool.pack(hidden, mask)):  # fmt: skip
        with pytest.raises(TypeError, match=r"attention_mask must be an array of 0/1 or booleans, got the "
                                            r"(list|tuple) .*\(a pooling strategy is no mask"):
            call()


def test_a_list_of_numbers_is_still_a_mask():
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    got = tokenpool.pool(hidden, [[1, 1, 0], [1, 0, 0]])
    assert np.array_equal(got[1], hidden[1, 0])


@pytest.mark.parametrize("dimension", [True, 1.0])
def test_a_calibration_file_whose_dimension_is_no_int_is_refused(dimension):
    """A calibration file of one dimension with ``"dimension": true`` (or 1.0) was read as dimension 1 (True == 1
    == 1.0); its "texts" already had to be a count, not true. Now the dimension must be an int too."""
    data = Calibration.from_vectors(np.array([[0.0], [1.0]])).to_dict()
    assert Calibration.from_dict(data).dimension == 1
    data["dimension"] = dimension
    with pytest.raises(ValueError, match=rf"f\.json: 'dimension' is {dimension!r} but 'minimum' holds 1 values"):
        Calibration.from_dict(data, "f.json")
