"""Stop 49: corners of the pooling core found while reviewing (each test failed before its fix)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.core.sparse import sparsify


def test_sparsify_refuses_float64_values_past_float32_range():
    """SparseRows keeps float32 values: 1e39 in a float64 row came out as inf, silently; it is refused, naming
    where it is. Values that round to float32's largest number, and inf itself, are kept."""
    dense = np.zeros((2, 5))
    dense[1, 3] = -1e39
    with pytest.raises(ValueError, match=r"row 1 column 3 holds -1e\+39, beyond float32's range"):
        sparsify(dense)
    dense[1, 3] = np.finfo(np.float32).max * (1 + 2**-26)  # rounds down to float32's largest
    dense[0, 0] = np.inf
    got = sparsify(dense)
    np.testing.assert_array_equal(got.values, np.array([np.inf, np.finfo(np.float32).max], np.float32))


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_unit_rows_of_huge_finite_values_are_not_zeros(backend):
    """A row whose largest magnitude is past 8.5e37 (1 / float32's smallest normal): JAX divides by multiplying
    with the reciprocal, which flushed to zero, and normalize=True gave a zero row instead of the unit vector."""
    from backends import to_backend

    from tokenpool import pool

    hidden = np.array([[[1e38, -2e38, 3e38, 1.0]], [[3.0, 4.0, 0.0, 0.0]]], np.float32)
    got = pool(to_backend(hidden, backend, "float32"), to_backend(np.ones((2, 1), bool), backend), "cls",
               normalize=True)  # fmt: skip
    expected = hidden[:, 0].astype(np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, rtol=1e-6, atol=1e-30)  # (subnormals)


def test_unpack_of_float16_tokens_under_a_bfloat16_autocast():
    """torch.cat refuses float16 tensors under a bfloat16 autocast ("Unexpected floating ScalarType"): unpack built
    its padding by concatenating a filler row, and raised; it selects the padding instead, same values."""
    torch = pytest.importorskip("torch")
    from tokenpool import pack, unpack

    hidden = torch.randn(3, 5, 4, dtype=torch.float16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    tokens, offsets = pack(hidden, mask)
    for side in ("right", "left"):
        expected, expected_mask = unpack(tokens, offsets, padding_side=side, pad_value=7)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, got_mask = unpack(tokens, offsets, padding_side=side, pad_value=7)
        assert got.dtype == torch.float16
        assert torch.equal(got, expected) and torch.equal(got_mask, expected_mask)
        assert torch.equal(got[got_mask.bool()], hidden[mask.bool()])
        assert bool((got[~got_mask.bool()] == 7).all())
