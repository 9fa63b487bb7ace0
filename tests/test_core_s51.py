"""Stop 51: corners of the pooling core (each test failed before its fix)."""

from __future__ import annotations

import numpy as np
import pytest
from backends import to_backend, to_numpy64
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference import reference_pool

from tokenpool import pool
from tokenpool.core._backends import namespace
from tokenpool.core.masks import exclude_prompt
from tokenpool.core.reductions import reduce_rows
from tokenpool.core.strategies import Pooling

# -- weightedmean's divisor on the generic path -----------------------------------------------------------


def _generic_weightedmean(backend: str, hidden: np.ndarray, mask: np.ndarray, prompt: int) -> np.ndarray:
    """The generic Array API path: array-api-strict through `pool` (it has no fast plan), numpy and torch
    through `reduce_rows` itself (their `pool` calls take the fast paths)."""
    x, m = to_backend(hidden, backend), to_backend(mask, backend)
    if backend == "array_api_strict":
        return to_numpy64(pool(x, m, "weightedmean", prompt_length=prompt or None))
    xp = namespace(x)
    real = m if backend == "numpy" else m.bool()
    return to_numpy64(reduce_rows(xp, Pooling.WEIGHTED_MEAN, x, exclude_prompt(xp, real, prompt), real=real))


@settings(max_examples=12, deadline=None)
@given(
    backend=st.sampled_from(["numpy", "torch", "array_api_strict"]),
    length=st.integers(5_793, 200_000),
    at=st.floats(0.0, 1.0),
    prompt=st.sampled_from([0, 1, 37, 5_000]),
    pad=st.integers(0, 3),
)
@example(backend="numpy", length=194_296, at=1.0, prompt=0, pad=0)
@example(backend="torch", length=194_296, at=1.0, prompt=0, pad=2)
@example(backend="array_api_strict", length=194_296, at=0.5, prompt=0, pad=0)
def test_generic_weightedmean_divides_by_the_exact_rank_total(backend, length, at, prompt, pad):
    """Past 5,792 tokens the rank total 1 + … + n passes 2^24: the generic path summed the float32 ranks, and
    its divisor was up to two roundings off (one-hot rows came out 2 ulps from the float64 reference). Its
    divisor is now the rank total rounded once to the work dtype, so a one-hot row (an exact numerator) is
    within one ulp of the reference, as the fast paths are."""
    pytest.importorskip(backend)
    pooled = max(length - prompt, 1)
    hot = prompt + min(int(at * pooled), pooled - 1)  # a pooled token (rank hot + 1)
    hidden = np.zeros((2, length + pad, 1), np.float32)
    hidden[0, pad + hot, 0] = 1.0
    hidden[1, pad + length - 1, 0] = 3.0  # row 1: its last real token
    mask = np.zeros((2, length + pad), bool)
    mask[:, pad:] = True  # left padding
    got = _generic_weightedmean(backend, hidden, mask, prompt)
    expected = reference_pool(hidden, mask, "weightedmean", prompt_length=prompt)
    assert got.dtype == np.float64 and np.all(expected > 0)
    np.testing.assert_array_max_ulp(got.astype(np.float32), expected.astype(np.float32), maxulp=1)
