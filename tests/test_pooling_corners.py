"""Corners of the core pooling API (autograd on all-empty batches, splade alone, option types, meta tensors,
prompt-length dtypes, zero-width vectors), each against a plain reference; each failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest
from backends import fast_kernels
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


@pytest.mark.parametrize("strategies", [["splade", "mean"], ["max", "splade"], "splade,splade", ("cls", "splade")])
@pytest.mark.parametrize("entry", ["pool", "pool_packed", "Pool", "RunningPool"])
def test_splade_combined_with_any_strategy_is_refused_everywhere(entry, strategies):
    """SPLADE reads MLM logits and the dense strategies read hidden states: one array cannot be both, so the
    strategy table marks SPLADE not combinable and the Encoder refuses it. `pool` and the other entry points
    returned the concatenation of both (a silent meaningless vector) instead of that ValueError."""
    from tokenpool.core.streaming import RunningPool

    hidden = np.random.default_rng(1).standard_normal((2, 3, 4))
    calls = {
        "pool": lambda: pool(hidden, None, strategies),
        "pool_packed": lambda: pool_packed(hidden[0], [0, 1, 3], strategies),
        "RunningPool": lambda: RunningPool(strategies, 2, 4),
    }
    if entry == "Pool":
        pytest.importorskip("torch")
        from tokenpool.torch import Pool

        calls["Pool"] = lambda: Pool(strategies)
    with pytest.raises(ValueError, match="'splade' pools MLM logits and cannot be combined"):
        calls[entry]()


@pytest.mark.parametrize("normalize", ["no", "False", 1, 0, None])
def test_torch_pool_module_takes_normalize_as_pool_does(normalize):
    """`pool(normalize="no")` is a TypeError (a truthy string must not normalise); ``Pool`` took
    ``bool(normalize)``, so ``Pool(normalize="no")`` L2-normalised every vector it returned."""
    torch = pytest.importorskip("torch")
    from tokenpool.torch import Pool

    hidden = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="normalize must be True or False"):
        pool(hidden, None, "mean", normalize=normalize)
    with pytest.raises(TypeError, match="normalize must be True or False"):
        Pool("mean", normalize=normalize)
    for flag in (False, True, np.bool_(True)):
        want = reference_pool(hidden.numpy(), np.ones((2, 3)), "mean", normalize=bool(flag))
        np.testing.assert_allclose(Pool("mean", normalize=flag)(hidden).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("library", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("strategy", ["mean", "max", ["cls", "lasttoken"]])
def test_zero_width_vectors_normalise_to_zero_width_vectors(library, strategy):
    """D = 0 pools to B×0 rows; with ``normalize=True`` numpy raised "zero-size array to reduction operation
    maximum" and torch an IndexError from amax, out of the row-scaling step, instead of returning them."""
    from tokenpool.core.pooling import finish_vectors

    xp = pytest.importorskip(library)
    hidden, mask = np.zeros((2, 3, 0)), np.array([[1, 1, 0], [0, 0, 0]])
    want = reference_pool(hidden, mask, strategy, normalize=True)
    assert want.shape == (2, 0)
    tensor = xp.asarray(hidden)
    got = pool(tensor, xp.asarray(mask), strategy, normalize=True)
    assert tuple(got.shape) == want.shape and got.dtype == tensor.dtype
    assert tuple(finish_vectors(xp.asarray(want), normalize=True).shape) == (2, 0)
    assert tuple(pool_packed(tensor[0, ...], [0, 2, 3], strategy, normalize=True).shape) == (2, 0)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_per_row_prompt_lengths_of_every_integer_dtype(library, dtype):
    """One prompt length per row as an int32 (or any integer type narrower than int64) array or tensor raised
    OverflowError "Python integer 9223372036854775807 out of bounds for int32" from the cap that keeps uint64
    counts from wrapping; every integer dtype now pools as the float64 loop does."""
    if library == "torch":
        torch = pytest.importorskip("torch")
        if not hasattr(torch, dtype):
            pytest.skip(f"torch has no {dtype}")
    rng = np.random.default_rng(4)
    hidden, mask = rng.standard_normal((3, 6, 4)), np.array([[1] * 6, [0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    counts = np.array([2, 5, 1])
    prompt = counts.astype(dtype)
    if library == "torch":
        prompt = torch.from_numpy(prompt) if dtype != "uint64" else torch.tensor(counts.tolist(), dtype=torch.uint64)
    for strategy in ("weightedmean", "cls", "max"):
        want = reference_pool(hidden, mask, strategy, prompt_length=counts)
        np.testing.assert_allclose(pool(hidden, mask, strategy, prompt_length=prompt), want, rtol=1e-12)
        packed = pool_packed(hidden[mask == 1], [0, 6, 10, 12], strategy, prompt_length=prompt)
        np.testing.assert_allclose(packed, want, rtol=1e-12)


@pytest.mark.parametrize("prompt", [[], (), np.zeros(0, dtype=np.int64)])
def test_an_empty_batch_takes_an_empty_list_of_prompt_lengths(prompt):
    """B = 0 with "one int per row" given as an empty list: numpy reads ``[]`` as float64, so `pool` and
    `pool_packed` raised "prompt_length must hold integers, got dtype float64" for a valid call."""
    got = pool(np.zeros((0, 3, 4)), np.zeros((0, 3)), "weightedmean", prompt_length=prompt)
    assert got.shape == (0, 4)
    assert pool_packed(np.zeros((0, 4)), [0], "mean", prompt_length=prompt).shape == (0, 4)
    with pytest.raises(ValueError, match=r"one value per row, shape \(2,\)"):  # still one value per row
        pool(np.zeros((2, 3, 4)), None, "mean", prompt_length=prompt)


@pytest.mark.parametrize(
    ("spec", "error", "fragment"),
    [
        # sentence-transformers' legacy booleans as a dict: its keys were read as the strategies, so the
        # False one was pooled too (a 2·D concatenation of mean and cls)
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, TypeError, "not a dict"),
        ({"mean": "max"}, TypeError, "not a dict"),
        # bytes were iterated as integers: "unknown pooling strategy 109"
        (b"mean", ValueError, "unknown pooling strategy b'mean'"),
        (bytearray(b"cls"), ValueError, r"unknown pooling strategy bytearray\(b'cls'\)"),
    ],
)
def test_strategies_given_as_a_mapping_or_bytes_are_refused_naming_them(spec, error, fragment):
    from tokenpool.core.strategies import parse_strategies

    hidden = np.random.default_rng(2).standard_normal((2, 3, 4))
    with pytest.raises(error, match=fragment):
        parse_strategies(spec)
    with pytest.raises(error, match=fragment):
        pool(hidden, None, spec)
    assert pool(hidden, None, ("mean", "cls")).shape == (2, 8)  # a list or tuple still concatenates in order


def test_a_bfloat16_torch_mask_pools_like_an_integer_one():
    """A mask cast to the model's bfloat16 (which numpy lacks) was a TypeError from `tensor.numpy()`."""
    torch = pytest.importorskip("torch")
    hidden = torch.randn(3, 4, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    want = np.stack([hidden[0, :2].mean(0).numpy(), hidden[1].mean(0).numpy(), np.zeros(5)])
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        got = pool(hidden, mask.to(dtype), ["mean", "max"])
        np.testing.assert_allclose(got[:, :5].numpy(), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"only 0 and 1 .*found \[2\.0\]"):
        pool(hidden, (mask * 2).to(torch.bfloat16), "mean")


@pytest.mark.parametrize("reduction", ["max", "sum"])
@pytest.mark.parametrize("kernels", ["numpy", "numpy-plain"])
def test_splade_activation_in_place_never_touches_the_callers_array(reduction, kernels):
    """log(1 + relu) runs in place on pooled rows of ours only: the caller's tokens are left as they were, and
    the rows equal the activation applied to a copy."""
    from tokenpool import pool_packed

    rng = np.random.default_rng(11)
    hidden = rng.standard_normal((3, 6, 5)).astype(np.float32)
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1] + [0] * 5], dtype=bool)
    tokens, offsets = hidden[mask], np.array([0, 6, 9, 10])
    saved_hidden, saved_tokens = hidden.copy(), tokens.copy()
    with fast_kernels(kernels):
        padded = pool(hidden, mask, "splade", reduction=reduction)
        packed = pool_packed(tokens, offsets, "splade", reduction=reduction)
    np.testing.assert_array_equal(hidden, saved_hidden)
    np.testing.assert_array_equal(tokens, saved_tokens)
    rows = [np.log1p(np.maximum(saved_hidden[b][mask[b]].astype(np.float64), 0)) for b in range(3)]
    want = np.stack([r.max(0) if reduction == "max" else r.sum(0) for r in rows])
    np.testing.assert_allclose(padded, want, rtol=1e-6)
    np.testing.assert_allclose(packed, want, rtol=1e-6)


def test_a_masked_array_with_masked_values_is_refused_not_read_as_values():
    """pool(np.ma.masked_array(h, mask=...)) pooled the masked values as if they were real (its mask unread);
    refused naming it. A masked array with nothing masked pools as its data."""
    hidden = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    mask = np.ones((2, 3), dtype=np.int64)
    hidden_mask = np.zeros_like(hidden, dtype=bool)
    hidden_mask[0, 2] = True
    with pytest.raises(ValueError, match=r"hidden states: a numpy masked array with masked values"):
        pool(np.ma.masked_array(hidden, mask=hidden_mask), mask, "mean")
    with pytest.raises(ValueError, match=r"attention_mask: a numpy masked array"):
        pool(hidden, np.ma.masked_array(mask, mask=[[0, 0, 1], [0, 0, 0]]), "mean")
    np.testing.assert_array_equal(pool(np.ma.masked_array(hidden), mask, "mean"), hidden.mean(axis=1))
