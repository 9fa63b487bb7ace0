"""Sums over long rows in float32: every path (compiled, numpy, torch's embedding_bag, the generic Array API
math, the streaming accumulator) adds `TOKEN_BLOCK` tokens at a time and then the blocks' sums, so a row of tens
of thousands of tokens keeps the accuracy of torch's own cascaded sum instead of losing ~L·ε token after token;
and the numpy and compiled kernels still give the same bits on rows that cross block boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from backends import fast_kernels
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool import pool, pool_packed
from tokenpool.core.reductions import reduce_rows
from tokenpool.core.strategies import Pooling
from tokenpool.core.streaming import RunningPool

SUMS = [("mean", "max"), ("mean_sqrt_len_tokens", "max"), ("weightedmean", "max"), ("splade", "sum")]
LONG = 40_000  # token after token, float32 mean here is ~6e-6 off in relative terms; in blocks ~4e-7
BOUND = 1.5e-6


def _long_rows() -> tuple[np.ndarray, np.ndarray]:
    """Three rows of positive values up to 1000 (the worst case for a running float32 sum): LONG, 300, 0 tokens."""
    rng = np.random.default_rng(2049)
    hidden = (rng.random((3, LONG, 16), dtype=np.float32) * 1000).astype(np.float32)
    mask = np.arange(LONG)[None, :] < np.array([LONG, 300, 0])[:, None]
    return hidden, mask


def _reference(hidden: np.ndarray, mask: np.ndarray, strategy: str) -> np.ndarray:
    """A float64 loop over each row's real tokens."""
    out = np.zeros(hidden.shape[::2])
    for b, (row, keep) in enumerate(zip(hidden, mask, strict=True)):
        real = row[keep].astype(np.float64)
        n = len(real)
        if n == 0:
            continue
        if strategy == "weightedmean":
            ranks = np.arange(1, n + 1, dtype=np.float64)
            out[b] = (ranks[:, None] * real).sum(0) / ranks.sum()
        elif strategy == "splade":
            out[b] = np.log1p(np.maximum(real, 0)).sum(0)
        else:
            out[b] = real.sum(0) / (n if strategy == "mean" else np.sqrt(n))
    return out


def _relative_error(got, expected: np.ndarray) -> float:
    got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize(("strategy", "reduction"), SUMS)
@pytest.mark.parametrize("kernels", ["numpy", "numpy-plain", "torch", "torch-numpy", "torch-numpy-plain"])
def test_long_float32_rows_keep_cascaded_sum_accuracy(kernels, strategy, reduction):
    hidden, mask = _long_rows()
    expected = _reference(hidden, mask, strategy)
    if kernels.startswith("torch"):
        torch = pytest.importorskip("torch")
        hidden, mask = torch.from_numpy(hidden), torch.from_numpy(mask)
    if kernels == "numpy":
        pytest.importorskip("numba")
    with fast_kernels(kernels):
        got = pool(hidden, mask, strategy, reduction=reduction)
    assert _relative_error(got, expected) < BOUND, kernels


@pytest.mark.parametrize(("strategy", "reduction"), SUMS)
def test_long_rows_in_the_generic_math_and_torch_autograd(strategy, reduction):
    """The Array API reference (numpy and array-api-strict) and torch tensors that autograd tracks."""
    hidden, mask = _long_rows()
    expected = _reference(hidden, mask, strategy)
    got = reduce_rows(np, Pooling(strategy), hidden, mask, reduction)
    assert _relative_error(got, expected) < BOUND
    xp = pytest.importorskip("array_api_strict")
    strict = reduce_rows(xp, Pooling(strategy), xp.asarray(hidden), xp.asarray(mask), reduction)
    np.testing.assert_array_equal(np.asarray(strict), got)
    torch = pytest.importorskip("torch")
    tracked = torch.from_numpy(hidden).requires_grad_()
    assert _relative_error(pool(tracked, torch.from_numpy(mask), strategy, reduction=reduction), expected) < BOUND


@pytest.mark.parametrize(("strategy", "reduction"), SUMS)
def test_long_rows_streamed_in_windows_keep_the_accuracy(strategy, reduction):
    """`RunningPool` fed windows of 8,192 tokens (a long-context model's) sums each window in blocks too."""
    hidden, mask = _long_rows()
    expected = _reference(hidden, mask, strategy)
    running = RunningPool(strategy, 3, hidden.shape[2], reduction=reduction)
    for unit in range(3):
        real = hidden[unit][mask[unit]]
        for first in range(0, len(real), 8192):
            running.add(unit, real[first : first + 8192], first)
    assert _relative_error(running.read(), expected) < BOUND


@given(
    seed=st.integers(0, 2**32 - 1),
    lengths=st.lists(st.sampled_from([0, 1, 511, 512, 513, 1023, 1024, 1025, 1300]), min_size=1, max_size=4),
    offset=st.integers(0, 15),
    dim=st.sampled_from([3, 8, 16, 24, 48, 100]),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_compiled_kernels_fold_blocks_with_the_numpy_kernels_bits(seed, lengths, offset, dim, dtype, specials):
    """Rows that end before, at and after block boundaries, in tables at any 64-byte offset (the compiled
    kernels' head/tail layout folds a line shared by two tokens): mean and mean/√n give the numpy kernels'
    bits, NaN and ±inf included (a NaN's sign aside); weightedmean within one rounding (einsum may fuse its multiply-add)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(seed)
    total = int(sum(lengths))
    base = rng.standard_normal(total * dim + 16).astype(dtype)
    if specials:
        base[rng.integers(0, base.size, 6)] = rng.choice([np.nan, np.inf, -np.inf, -0.0], 6)
    tokens = base[offset : offset + total * dim].reshape(-1, dim)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    strategies = ("mean", "mean_sqrt_len_tokens", "weightedmean")
    with fast_kernels("numpy"):
        got = {s: pool_packed(tokens, offsets, s) for s in strategies}
    with fast_kernels("numpy-plain"):
        expected = {s: pool_packed(tokens, offsets, s) for s in strategies}
    for strategy in strategies[:2]:  # (NaN's sign aside: inf − inf makes x86's negative NaN, one order or other)
        canonical = [np.where(np.isnan(x[strategy]), np.nan, x[strategy]).tobytes() for x in (got, expected)]
        assert canonical[0] == canonical[1], strategy
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got["weightedmean"], expected["weightedmean"], rtol=tolerance, atol=tolerance)

