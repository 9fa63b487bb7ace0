"""Stop 56, core: options a strategy cannot take are refused, the seed's CLS keeps its dtype, and the pooling
entry points against a plain float64 loop written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenpool import Pooling, pool, pool_packed
from tokenpool.core.streaming import RunningPool
from tokenpool.torch import Pool

LOGITS = np.random.default_rng(0).standard_normal((2, 3, 20)).astype(np.float32)
MASK = np.array([[1, 1, 0], [1, 1, 1]])


def _splade_with_a_cut():
    yield lambda: pool(LOGITS, None, "splade", truncate_dim=8)
    yield lambda: pool(LOGITS, MASK, "splade", truncate_dim=8, normalize=True)
    yield lambda: Pooling.SPLADE(LOGITS, truncate_dim=8)
    yield lambda: pool_packed(LOGITS.reshape(6, 20), [0, 2, 6], "splade", truncate_dim=8)
    yield lambda: Pool("splade", truncate_dim=8)


@pytest.mark.parametrize("call", list(_splade_with_a_cut()))
def test_truncate_dim_on_splade_is_refused_naming_both(call):
    """``pool(logits, None, "splade", truncate_dim=8)`` returned the first 8 vocabulary ids' weights, a
    meaningless cut of a sparse vector (the Encoder refuses ``--dim`` on sparse models): every entry point now
    refuses it, naming truncate_dim and splade."""
    with pytest.raises(ValueError, match=r"truncate_dim=8.*splade"):
        call()


def _sum_without_splade():
    hidden = np.random.default_rng(1).standard_normal((2, 3, 4))
    for strategy in ("mean", "max", "cls", ["mean", "max"]):
        yield lambda s=strategy: pool(hidden, MASK, s, reduction="sum")
    yield lambda: Pooling.MEAN(hidden, reduction="sum")
    yield lambda: pool_packed(hidden.reshape(6, 4), [0, 2, 6], "mean", reduction="sum")
    yield lambda: Pool("weightedmean", reduction="sum")
    yield lambda: RunningPool(["mean", "lasttoken"], 2, 4, reduction="sum")


@pytest.mark.parametrize("call", list(_sum_without_splade()))
def test_reduction_sum_without_splade_is_refused_naming_it(call):
    """``pool(h, m, "mean", reduction="sum")`` silently ignored the reduction and returned the mean."""
    with pytest.raises(ValueError, match=r"reduction='sum'.*(mean|max|cls|weightedmean)"):
        call()


def test_the_defaults_and_splade_options_still_pool():
    """The default reduction is accepted for every strategy, splade takes both reductions, and dense
    strategies keep their Matryoshka cut."""
    hidden = np.random.default_rng(2).standard_normal((2, 3, 4))
    assert pool(hidden, MASK, "mean", reduction="max", truncate_dim=2).shape == (2, 2)
    expected = [[sum(np.log1p(max(float(LOGITS[b, t, v]), 0.0)) for t in range(3) if MASK[b, t]) for v in range(20)]
                for b in range(2)]  # fmt: skip
    np.testing.assert_allclose(pool(LOGITS, MASK, "splade", reduction="sum"), expected, rtol=1e-6)
    assert Pool("splade", reduction="sum")(torch.from_numpy(LOGITS)).shape == (2, 20)
    assert RunningPool("splade", 1, 20, reduction="sum").reduction == "sum"


SEED_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.bool_, np.float16, np.float32,
               np.float64]  # fmt: skip


@pytest.mark.parametrize("dtype", SEED_DTYPES)
def test_seed_calls_on_numpy_keep_the_seed_results_for_every_dtype(dtype):
    """The seed returns ``array[0]`` / ``array[:, 0]`` for CLS and ``array.mean(axis)`` for MEAN: CLS on
    integers (and bools) came back as float64 (large int64 values rounded); now the same values in the same
    dtype, MEAN numpy's mean's dtype."""
    values = np.random.default_rng(3).integers(0, 100, (3, 4, 5))
    array = (values > 50) if dtype is np.bool_ else values.astype(dtype)
    for call in (Pooling.CLS, Pooling.cls_pooling):
        for given, first in ((array, array[:, 0]), (array[0], array[0, 0])):
            got = call(given)
            assert got.dtype == first.dtype and got.shape == first.shape
            np.testing.assert_array_equal(got, first)
    for call in (Pooling.MEAN, Pooling.mean_pooling):
        for given, axis in ((array, 1), (array[0], 0)):
            got, theirs = call(given), given.mean(axis=axis)
            assert got.dtype == theirs.dtype
            np.testing.assert_allclose(got, theirs, rtol=1e-3 if dtype is np.float16 else 1e-12)


def test_seed_cls_is_exact_and_a_new_array():
    """An int64 past 2^53 (float64 rounds it), -0.0 and NaN come back as they are; the result is no view."""
    big = np.array([[[2**60 + 1, -(2**62) - 3], [5, 6]]], dtype=np.int64)
    assert Pooling.CLS(big).tolist() == [[2**60 + 1, -(2**62) - 3]]
    floats = np.array([[-0.0, np.nan], [1.0, 2.0]])
    got = Pooling.CLS(floats)
    assert np.signbit(got[0]) and np.isnan(got[1])
    got[0] = 7.0
    assert floats[0, 0] == 0.0


def test_seed_cls_on_torch_keeps_integers_and_autograd():
    ints = torch.arange(24).reshape(2, 3, 4)
    assert torch.equal(Pooling.CLS(ints), ints[:, 0]) and Pooling.CLS(ints).dtype == torch.int64
    hidden = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    Pooling.CLS(hidden).sum().backward()
    expected = torch.zeros(2, 3, 4, dtype=torch.float64)
    expected[:, 0] = 1
    assert torch.equal(hidden.grad, expected)


def test_seed_cls_without_tokens_and_masked_calls_keep_pools_rules():
    """No token: zeros of the input's dtype (as every strategy gives); with a mask or an option, CLS is
    `pool`'s (integers promote, as documented)."""
    empty = np.zeros((2, 0, 3), dtype=np.int32)
    got = Pooling.CLS(empty)
    assert got.dtype == np.int32 and got.shape == (2, 3) and not got.any()
    ints = np.arange(24).reshape(2, 3, 4)
    assert Pooling.CLS(ints, MASK).dtype == np.float64
    np.testing.assert_array_equal(Pooling.CLS(ints, [[0, 1, 1], [1, 1, 1]]), [ints[0, 1], ints[1, 0]])
