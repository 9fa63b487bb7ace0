"""Stop 61, core defect hunt: each test failed on the code before its fix."""

from __future__ import annotations

import pytest

from tokenpool import pool, pool_packed

torch = pytest.importorskip("torch")

STRATEGIES = ["mean", "max", "cls", "lasttoken", "mean_sqrt_len_tokens", "weightedmean", "splade"]


@pytest.mark.parametrize("shape", [(3, 4, 5), (64, 256, 160)])  # (the second reaches the compiled kernels)
def test_a_lazily_negated_tensor_is_pooled_as_its_values(shape):
    """``z.conj().imag`` is a real float tensor carrying torch's lazy negation bit; `pool` and `pool_packed` raised
    torch's "Can't call numpy() on Tensor that has negative bit set" from the fast path's numpy view. Now the
    rows are those of the same values without the bit (``resolve_neg()``), also for such a mask."""
    z = torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    hidden = z.conj().imag
    assert hidden.is_neg()
    mask = torch.ones(shape[:2], dtype=torch.long)
    mask[0, 2:], mask[1, :1] = 0, 0
    negated_mask = torch.complex(torch.zeros(shape[:2]), -mask.float()).conj().imag
    assert negated_mask.is_neg()
    plain = hidden.resolve_neg()
    for strategy in STRATEGIES:
        for states, given in ((hidden, mask), (hidden, negated_mask), (hidden, None), (plain, negated_mask)):
            expected = pool(plain, None if given is None else mask, strategy, prompt_length=1)
            torch.testing.assert_close(pool(states, given, strategy, prompt_length=1), expected)
            expected = pool(plain, None if given is None else mask, strategy)
            torch.testing.assert_close(pool(states, given, strategy), expected)
        offsets = [0, 2, shape[1]]
        torch.testing.assert_close(pool_packed(hidden[0], offsets, strategy), pool_packed(plain[0], offsets, strategy))
