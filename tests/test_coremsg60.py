"""Core error messages (stop 60): each bad input gets the right exception type and a message naming it."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool import Pooling, pool
from tokenpool.core.packed import pool_packed
from tokenpool.core.quantize import Calibration, dequantize, hamming_distance, quantize

RAGGED = [[1.0, 2.0], [3.0]]


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda: quantize(RAGGED, "ubinary"), "vectors"),
        (lambda: Calibration.from_vectors(RAGGED), "calibration vectors"),
        (lambda: dequantize([[1, 2], [3]], "uint8"), "codes"),
        (lambda: hamming_distance([[1, 2], [3]], np.zeros((1, 2), np.uint8)), "codes"),
    ],
)
def test_ragged_list_is_a_type_error_naming_the_input(call, what):
    """A ragged nested list gave numpy's bare "setting an array element with a sequence" ValueError, which
    named no input; now the same TypeError `pool` gives ("<input> must be an array, got list: ...")."""
    with pytest.raises(TypeError, match=rf"^{what} must be an array, got list: "):
        call()
    with pytest.raises(TypeError, match=r"^hidden states must be an array, got list: "):
        pool([RAGGED], None, "mean")  # (the message it reuses)


@pytest.mark.parametrize("dimension", [10.7, 10.0, "10", True])
def test_calibration_check_refuses_a_dimension_that_is_no_int(dimension):
    """``Calibration.check(dimension=10.7)`` passed a 10-dimension calibration through ``int()``."""
    rows = np.random.default_rng(0).standard_normal((4, 10 if dimension is not True else 1))
    calibration = Calibration.from_vectors(rows)
    with pytest.raises(TypeError, match=rf"dimension must be an int, got {dimension!r}"):
        calibration.check(dimension=dimension)
    calibration.check(dimension=np.int64(rows.shape[1]))  # numpy's integers stay whole numbers


def test_calling_a_member_with_a_strategy_keyword_says_it_is_the_strategy():
    """``Pooling.MEAN(h, strategy="max")`` gave Python's "got multiple values for argument 'strategy'"."""
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    with pytest.raises(TypeError, match=r"Pooling\.MEAN already is the strategy .*'max'"):
        Pooling.MEAN(hidden, strategy="max")
    with pytest.raises(TypeError, match=r"Pooling\.CLS already is the strategy"):
        Pooling.cls_pooling(hidden, strategy="mean")
    # the seed API keeps working: CLS = array[0] / array[:, 0], MEAN = the mean over axis -2
    np.testing.assert_array_equal(Pooling.CLS(hidden), hidden[:, 0])
    np.testing.assert_array_equal(Pooling.CLS(hidden[0]), hidden[0, 0])
    np.testing.assert_allclose(Pooling.MEAN(hidden), hidden.astype(np.float64).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(Pooling.mean_pooling(hidden[1]), hidden[1].astype(np.float64).mean(axis=0),
                               rtol=1e-6)


def test_pool_packed_without_offsets_names_cu_seqlens():
    """``pool_packed(tokens, None)`` said "got shape (): [None]"."""
    tokens = np.ones((5, 4), dtype=np.float32)
    with pytest.raises(TypeError, match=r"cu_seqlens must be .*offsets.*, got None"):
        pool_packed(tokens, None)
    np.testing.assert_allclose(pool_packed(tokens, [0, 2, 5]), np.ones((2, 4)))
