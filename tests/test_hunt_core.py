"""Bug hunt in the core pooling layer: each test failed before its fix (see the commit that added it)."""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_pool

from tokenpool import pool, pool_packed

DENSE = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
ALL = [*DENSE, "splade"]


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize(
    "case",
    ["all-masked", "prompt-covers-all", "packed-prompt-covers-all", "no-positions", "non-contiguous", "half"],
)
def test_batches_where_every_row_is_empty_stay_in_the_autograd_graph(strategy, case):
    """Every row empty (all padding, a prompt as long as every row, L = 0): the zero rows must still be a
    function of the hidden states, with a zero gradient, as they are when only some rows are empty — not a
    constant that makes ``loss.backward()`` raise "does not require grad" on that one batch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, 0 if case == "no-positions" else 5, 4))
    mask = np.ones(values.shape[:2], dtype=np.int64) if "prompt" in case else np.zeros(values.shape[:2], np.int64)
    dtype = torch.float16 if case == "half" else torch.float64
    hidden = torch.tensor(values, dtype=dtype, requires_grad=True)
    if case == "packed-prompt-covers-all":
        out = pool_packed(hidden.reshape(-1, 4), [0, 5, 10, 15], strategy, prompt_length=5)
    else:
        source = hidden.transpose(0, 1).contiguous().transpose(0, 1) if case == "non-contiguous" else hidden
        out = pool(source, torch.tensor(mask), strategy, prompt_length=5 if "prompt" in case else None)
    want = reference_pool(values, mask, strategy, prompt_length=5 if "prompt" in case else None)
    np.testing.assert_array_equal(out.detach().double().numpy(), want)
    assert out.requires_grad, "the pooled rows left the autograd graph"
    (gradient,) = torch.autograd.grad(out.sum(), hidden)
    assert torch.equal(gradient, torch.zeros_like(hidden))
