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


def test_dask_arrays_of_unknown_chunk_sizes_are_refused_with_the_remedy() -> None:
    da = pytest.importorskip("dask.array")
    import tokenpool

    rng = np.random.default_rng(5)
    states = da.from_array(rng.random((6, 5, 4)).astype(np.float32), chunks=(2, 5, 4))
    mask = da.from_array(np.ones((6, 5), dtype=np.int64), chunks=(2, 5))
    kept = states[states[:, 0, 0] > -1]  # (boolean indexing: Dask no longer knows the row count)
    with pytest.raises(ValueError, match=r"hidden states is a Dask array of unknown \(nan\) chunk sizes.*"
                                         r"compute_chunk_sizes"):
        tokenpool.pool(kept, mask, "mean")
    with pytest.raises(ValueError, match=r"attention_mask is a Dask array of unknown.*compute_chunk_sizes"):
        tokenpool.pool(states, mask[mask[:, 0] > 0], "mean")
    # the remedy the message names works, and gives the rows of the known-size arrays
    kept.compute_chunk_sizes()
    np.testing.assert_allclose(np.asarray(tokenpool.pool(kept, mask, "mean")),
                               np.asarray(tokenpool.pool(states, mask, "mean")), rtol=1e-6)
