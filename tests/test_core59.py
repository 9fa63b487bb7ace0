"""Stop 59's bug hunt of the core: each test failed before its fix and compares with the float64 loop reference
(`reference.py`) or the documented text."""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_pool
from strategies_hyp import ALL_STRATEGIES

import tokenpool

HIDDEN = np.random.default_rng(59).standard_normal((3, 5, 4)).astype(np.float32)
MASK = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=np.int32)  # right, left, empty


@pytest.mark.parametrize("dtype", ["int64", "float64", "int32", "bool"])
@pytest.mark.parametrize("one_row", [False, True])
def test_a_mask_on_another_array_api_strict_device_pools_on_no_x64(dtype, one_row):
    """The README: a mask "from any library ... is converted to the hidden states' library and device". An
    array-api-strict int64 (or float64) mask on the CPU device, with states on "no_x64", was moved there as it
    was ("does not support dtype=int64"); now its values are checked where it lies and it is moved as booleans:
    the float64 reference's rows, on the states' device."""
    xp = pytest.importorskip("array_api_strict")
    where, cpu = xp.Device("no_x64"), xp.Device("CPU_DEVICE")
    rows = slice(1, 2) if one_row else slice(None)
    mask = xp.asarray(MASK[rows].astype(dtype), device=cpu)
    hidden = xp.asarray(HIDDEN[rows], device=where)
    if one_row:
        hidden, mask = hidden[0, ...], mask[0, ...]
    for strategy in ALL_STRATEGIES:
        expected = reference_pool(HIDDEN[rows], MASK[rows], strategy)
        for pooled in (tokenpool.pool(hidden, mask, strategy), tokenpool.pool_packed(*tokenpool.pack(hidden, mask),
                                                                                      strategy)):
            assert pooled.device == where
            got = np.asarray(pooled.to_device(cpu))
            np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"found \[2(\.0)?\]"):
        tokenpool.pool(hidden, mask * 2 if dtype != "bool" else xp.astype(mask, xp.int64) * 2)
