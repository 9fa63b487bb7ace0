"""Stop 56, core: options a strategy cannot take are refused, the seed's CLS keeps its dtype, and the pooling
entry points against a plain float64 loop written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from backends import KERNELS, fast_kernels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies_hyp import ALL_STRATEGIES

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
        for one, first in ((array, array[:, 0]), (array[0], array[0, 0])):
            got = call(one)
            assert got.dtype == first.dtype and got.shape == first.shape
            np.testing.assert_array_equal(got, first)
    for call in (Pooling.MEAN, Pooling.mean_pooling):
        for one, axis in ((array, 1), (array[0], 0)):
            got, theirs = call(one), one.mean(axis=axis)
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
    for empty in (np.zeros((2, 0, 3), dtype=np.int32), np.zeros((0, 3), dtype=bool)):
        got = Pooling.CLS(empty)
        assert got.dtype == empty.dtype and got.shape == (*empty.shape[:-2], 3) and not got.any()
    tracked = torch.zeros(2, 0, 3, requires_grad=True)
    Pooling.CLS(tracked).sum().backward()
    assert tracked.grad.shape == (2, 0, 3)
    ints = np.arange(24).reshape(2, 3, 4)
    assert Pooling.CLS(ints, MASK).dtype == np.float64
    with pytest.raises(TypeError, match="complex"):
        Pooling.CLS(np.ones((2, 3), dtype=complex))
    np.testing.assert_array_equal(Pooling.CLS(ints, [[0, 1, 1], [1, 1, 1]]), [ints[0, 1], ints[1, 0]])


# -- the fast paths and the generic path against a plain float64 loop ---------------------------------------


def loop_pool(hidden, mask, strategy, prompt=0, reduction="max"):
    """One row at a time, one token at a time, in float64: the yardstick of this file (``prompt``: an int or
    one per row)."""
    hidden = np.asarray(hidden, dtype=np.float64)
    rows, _, dim = hidden.shape
    out = np.zeros((rows, dim))
    for b in range(rows):
        real = [t for t in range(hidden.shape[1]) if mask[b][t]]
        kept = real[prompt if isinstance(prompt, int) else prompt[b] :]
        if not kept:
            continue
        tokens = [hidden[b, t] for t in kept]
        if strategy == "cls":
            out[b] = tokens[0]
        elif strategy == "lasttoken":
            out[b] = tokens[-1]
        elif strategy in ("mean", "mean_sqrt_len_tokens"):
            total = np.zeros(dim)
            for token in tokens:
                total = total + token
            out[b] = total / (len(tokens) if strategy == "mean" else np.sqrt(len(tokens)))
        elif strategy == "weightedmean":
            weights = range(len(real) - len(kept) + 1, len(real) + 1)
            out[b] = sum(w * token for w, token in zip(weights, tokens, strict=True)) / sum(weights)
        elif strategy == "max":
            out[b] = np.max(tokens, axis=0)
        else:
            activated = [np.log1p(np.maximum(token, 0.0)) for token in tokens]
            out[b] = np.max(activated, axis=0) if reduction == "max" else np.sum(activated, axis=0)
    return out


MASK_DTYPES = ["bool", "int64", "int32", "int8", "uint8", "float32", "float64"]


@st.composite
def padded_cases(draw):
    rows, length, dim = draw(st.integers(1, 5)), draw(st.integers(1, 12)), draw(st.integers(1, 6))
    layout = draw(st.sampled_from(["right", "left", "holes", "empty", "full"]))
    if layout == "holes":
        mask = np.array(draw(st.lists(st.lists(st.booleans(), min_size=length, max_size=length),
                                      min_size=rows, max_size=rows)))  # fmt: skip
    else:
        lengths = np.array(draw(st.lists(st.integers(0, length), min_size=rows, max_size=rows)))
        lengths = {"empty": lengths * 0, "full": lengths * 0 + length}.get(layout, lengths)
        columns = np.arange(length)[None, :]
        mask = columns >= (length - lengths)[:, None] if layout == "left" else columns < lengths[:, None]
    hidden = np.random.default_rng(draw(st.integers(0, 2**31))).standard_normal((rows, length, dim)) * 3
    hidden[~mask] = draw(st.sampled_from([0.0, np.nan, np.inf, -1e30]))  # padding never reaches a result
    strategy = draw(st.sampled_from(ALL_STRATEGIES))
    reduction = draw(st.sampled_from(["max", "sum"])) if strategy == "splade" else "max"
    prompt = draw(st.one_of(st.integers(0, 3), st.lists(st.integers(0, 4), min_size=rows, max_size=rows)))
    return hidden, mask, strategy, reduction, draw(st.sampled_from(MASK_DTYPES)), prompt


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=padded_cases(), kernels=st.sampled_from(KERNELS), dtype=st.sampled_from(["float64", "float32", "float16"]))
def test_fast_paths_and_generic_path_match_the_loop(case, kernels, dtype):
    """Every kernel choice (compiled, numpy, torch), torch autograd and bfloat16, array-api-strict and JAX (the
    generic path) and `pool_packed` of the real tokens, with masks of every dtype, holes, left padding, empty rows and poisoned
    padding, with and without prompts: the float64 loop's rows."""
    import array_api_strict as xps

    hidden, mask, strategy, reduction, mask_dtype, prompt = case
    seen = hidden.astype(dtype)
    expected = loop_pool(seen, mask, strategy, prompt, reduction)
    rtol = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3}[dtype]
    prompts = {"prompt_length": prompt} if prompt else {}
    given_mask = mask.astype(mask_dtype)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    with fast_kernels(kernels):
        if kernels.startswith("torch"):
            got = pool(torch.from_numpy(seen), torch.from_numpy(given_mask), strategy, reduction=reduction, **prompts)
            packed = pool_packed(torch.from_numpy(seen[mask]), torch.from_numpy(offsets), strategy,
                                 reduction=reduction, **prompts)  # fmt: skip
            got, packed = got.double().numpy(), packed.double().numpy()
        else:
            got = pool(seen, given_mask, strategy, reduction=reduction, **prompts)
            packed = pool_packed(seen[mask], offsets, strategy, reduction=reduction, **prompts)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(np.asarray(packed, dtype=np.float64), expected, rtol=rtol, atol=rtol)
    tracked = torch.from_numpy(seen).requires_grad_(True)
    got = pool(tracked, torch.from_numpy(given_mask), strategy, reduction=reduction, **prompts)
    np.testing.assert_allclose(got.detach().double().numpy(), expected, rtol=rtol, atol=rtol)
    if dtype != "float16":
        strict = pool(xps.asarray(seen), xps.asarray(given_mask), strategy, reduction=reduction, **prompts)
        np.testing.assert_allclose(np.asarray(strict, dtype=np.float64), expected, rtol=rtol, atol=rtol)
    if dtype == "float32":  # (JAX without x64 computes in float32)
        jnp = pytest.importorskip("jax.numpy")
        got = pool(jnp.asarray(seen), jnp.asarray(given_mask), strategy, reduction=reduction, **prompts)
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, rtol=rtol, atol=rtol)
    brain = torch.from_numpy(hidden).to(torch.bfloat16)  # bfloat16: the loop on the values torch holds
    got = pool(brain, torch.from_numpy(given_mask), strategy, reduction=reduction, **prompts)
    expected = loop_pool(brain.double().numpy(), mask, strategy, prompt, reduction)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1.6e-2, atol=1.6e-2)
