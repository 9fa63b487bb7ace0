"""Stop 55 (lead): float64 → float16 codes rounded once; ..."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.core.quantize import quantize


def test_float16_codes_of_float64_round_once() -> None:
    # 1 + 2**-11 + 2**-40 lies just above the midpoint of float16's 1 and 1 + 2**-10: rounded once it goes up;
    # through float32 it first becomes the midpoint itself, which ties to even (1.0)
    x = np.array([[1 + 2.0**-11 + 2.0**-40, -(1 + 2.0**-11 + 2.0**-40), 3.0]], dtype=np.float64)
    codes = quantize(x, "float16")
    assert codes.dtype == np.float16
    assert codes[0, 0] == np.float16(1 + 2.0**-10) and codes[0, 1] == -np.float16(1 + 2.0**-10)
    np.testing.assert_array_equal(codes, x.astype(np.float16))


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_float_codes_of_float64_are_numpys_single_cast_inside_the_range(precision: str) -> None:
    rng = np.random.default_rng(55)
    x = rng.standard_normal((64, 33)) * 10.0 ** rng.integers(-6, 4, (64, 33))
    np.testing.assert_array_equal(quantize(x, precision), x.astype(precision))
