"""Stop 59's bug hunt of the core: each test failed before its fix and compares with the float64 loop reference
(`reference.py`) or the documented text."""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_pool
from strategies_hyp import ALL_STRATEGIES

import tokenpool
from tokenpool.core.pooling import finish_vectors
from tokenpool.errors import ModelOutputError

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


def test_arrays_on_another_device_are_read_with_numpy_before_2_1(monkeypatch):
    """pyproject allows numpy 1.24, whose `np.from_dlpack(x, /)` takes no ``device=`` (numpy 2.1 added it): a bad
    mask's message, per-row prompt lengths and a non-finite row on a non-default array-api-strict device raised
    "from_dlpack() got an unexpected keyword argument 'device'". Now the older call is made there."""
    xp = pytest.importorskip("array_api_strict")
    newer = np.from_dlpack

    def from_dlpack(x, /):  # numpy 1.24's signature
        return newer(x)

    monkeypatch.setattr(np, "from_dlpack", from_dlpack)
    where, cpu = xp.Device("device1"), xp.Device("CPU_DEVICE")
    hidden = xp.asarray(HIDDEN, device=where)
    with pytest.raises(ValueError, match=r"found \[2\]"):
        tokenpool.pool(hidden, xp.asarray(MASK * 2, device=where))
    lengths = xp.asarray(np.array([1, 0, 2], dtype=np.int32), device=where)
    pooled = tokenpool.pool(hidden, xp.asarray(MASK, device=where), "mean", prompt_length=lengths)
    expected = reference_pool(HIDDEN, MASK, "mean", prompt_length=[1, 0, 2])
    np.testing.assert_allclose(np.asarray(pooled.to_device(cpu)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelOutputError, match="row 1"):
        finish_vectors(xp.asarray(np.array([[0, 1], [np.inf, 0]], np.float32), device=where), finite=True)


@pytest.mark.parametrize("rows", [[0.5, 1.5], np.array([1.9, 0.2]), [True, False]])
def test_sparse_row_positions_that_are_not_integers_are_refused(rows):
    """`collect_rows` / `CSRBuilder.add` read row positions as int64, truncating 0.5 and 1.5 to rows 0 and 1 (and
    True to row 1): a silent guess of where each row goes. They are refused, naming the dtype; integer positions
    in any order still put each row in its place (the dense rows' own sparsify)."""
    from tokenpool.core.sparse import collect_rows, sparsify

    dense = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, -3.0]], dtype=np.float32)
    with pytest.raises(TypeError, match="row positions must be integers, got dtype"):
        collect_rows([(rows, dense)], 2, 3)
    built = collect_rows([(np.array([1], np.uint8), dense[:1]), ([], dense[:0]), ([0], dense[1:])], 2, 3)
    np.testing.assert_array_equal(built.to_dense(), sparsify(dense[::-1]).to_dense())
