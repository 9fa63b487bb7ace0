"""Big-endian float64 and long double inputs pool in their own precision: padded, packed and streamed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenpool import pool, pool_packed

ALL = ["cls", "mean", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens", "splade"]


def reduce_values(values: list[float], strategy: str) -> float:
    """One dimension of one row from its real tokens' values, in float64 (reduction "max")."""
    n = len(values)
    if strategy in ("cls", "lasttoken"):
        return values[0] if strategy == "cls" else values[-1]
    if strategy in ("mean", "mean_sqrt_len_tokens"):
        return sum(values) / (n if strategy == "mean" else math.sqrt(n))
    if strategy == "weightedmean":
        return sum(i * v for i, v in enumerate(values, 1)) / (n * (n + 1) / 2)
    if strategy == "max":
        return max(values)
    return max(math.log1p(max(v, 0.0)) for v in values)  # splade


def loop_pool(hidden: np.ndarray, mask: np.ndarray, strategy: str) -> np.ndarray:
    """B×L×D → B×D in float64, one row and one token at a time (no prompt); an empty row is zeros."""
    hidden = np.asarray(hidden, dtype=np.float64)
    out = np.zeros((hidden.shape[0], hidden.shape[2]))
    for b in range(hidden.shape[0]):
        rows = [hidden[b, t] for t in range(hidden.shape[1]) if mask[b][t]]
        for d in range(hidden.shape[2]):
            if rows:
                out[b, d] = reduce_values([float(row[d]) for row in rows], strategy)
    return out


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("packed", [False, True])
def test_big_endian_float64_pools_in_float64(strategy, packed):
    """A big-endian float64 array ('>f8', e.g. read from a file) compared unequal to float64, so it was pooled
    in float32: every strategy lost half its digits (cls of 6.33… off by 3e-7)."""
    rng = np.random.default_rng(1)
    native = rng.standard_normal((2, 3, 4)) + 1 / 3
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    expected = loop_pool(native, mask, strategy)
    swapped = native.astype(">f8")
    if packed:
        tokens = np.concatenate([swapped[0, :2], swapped[1, 1:]])
        result = pool_packed(tokens, [0, 2, 4], strategy)
    else:
        result = pool(swapped, mask, strategy)
    assert np.dtype(result.dtype).kind == "f" and np.dtype(result.dtype).itemsize == 8
    np.testing.assert_allclose(np.asarray(result, dtype=np.float64), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("normalize", [False, True])
def test_long_double_is_not_pooled_in_float32(strategy, normalize):
    """numpy's long double (float128 on x86 Linux) took the half-precision rule ("anything but float32/float64
    accumulates in float32"): a wider-than-float64 input came back with float32's digits."""
    longdouble = np.dtype(np.longdouble)
    if longdouble.itemsize <= 8:
        pytest.skip("long double is float64 on this platform")
    native = np.random.default_rng(2).standard_normal((2, 3, 4)) + 1 / 3
    mask = np.array([[1, 0, 1], [1, 1, 1]])
    expected = loop_pool(native, mask, strategy)
    if normalize:
        expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    result = pool(native.astype(longdouble), mask, strategy, normalize=normalize)
    assert result.dtype == longdouble
    np.testing.assert_allclose(result.astype(np.float64), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [">f8", "longdouble"])
@pytest.mark.parametrize("strategy", ["mean", "weightedmean", "splade"])
def test_streamed_pooling_keeps_float64_digits_of_wide_or_swapped_blocks(dtype, strategy):
    """`RunningPool` takes its accumulation dtype from the same rule: '>f8' and long double blocks were
    accumulated in float32."""
    from tokenpool.core.streaming import RunningPool

    blocks = np.random.default_rng(3).standard_normal((5, 3)) + 1 / 3
    running = RunningPool(strategy, 1, 3)
    running.add(0, blocks[:2].astype(dtype), 0)
    running.add(0, blocks[2:].astype(dtype), 2)
    expected = loop_pool(blocks[None], np.ones((1, 5)), strategy)
    np.testing.assert_allclose(np.asarray(running.read(), dtype=np.float64), expected, rtol=1e-13, atol=1e-13)
