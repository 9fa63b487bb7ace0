"""Stop 48's bug hunt of the pooling core: each test failed before its fix and compares with the float64 loop
reference (`reference.py`) or names the refused value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool
from strategies_hyp import COMBINABLE, masks

from tokenpool import pack, pool, pool_packed


@st.composite
def batches_of_masks(draw):
    """(hidden B×L×D float64, its 0/1 mask of any layout, per-row prompt lengths)."""
    rows, length = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    hidden = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal((rows, length, 2))
    return hidden, draw(masks(rows, length)), np.array(draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows)))


@given(seed=st.integers(0, 2**32 - 1), layout=st.sampled_from(["right", "left", "holes"]), prompt=st.integers(0, 2),
       half=st.sampled_from(["float16", "bfloat16"]), packed=st.booleans(), contiguous=st.booleans(),
       extra=st.sampled_from(COMBINABLE), data=st.data())  # fmt: skip
def test_half_states_under_the_other_half_autocast_pool_and_backpropagate(
    seed, layout, prompt, half, packed, contiguous, extra, data
):
    """float16 states tracked by autograd under ``torch.autocast(dtype=torch.bfloat16)`` (or bfloat16 states under
    float16 autocast) raised "Unexpected floating ScalarType in at::autocast::prioritize" for max and splade (and
    cls / lasttoken of a non-contiguous tensor): the fast path stacked its half-precision rows with ``torch.stack``,
    which autocast refuses for the other half dtype. Now they pool as outside autocast."""
    torch = pytest.importorskip("torch")
    rows = data.draw(st.integers(1, 3))
    hidden = np.random.default_rng(seed).standard_normal((rows, 6, 3))
    mask = data.draw(masks(rows, 6, layout))
    other = torch.bfloat16 if half == "float16" else torch.float16
    for strategy in (["max", extra], "splade"):
        states = torch.tensor(hidden, dtype=getattr(torch, half))
        if not contiguous:
            states = states.transpose(0, 1).contiguous().transpose(0, 1)
        states.requires_grad_()
        with torch.autocast("cpu", dtype=other):
            if packed:
                pooled = pool_packed(*pack(states, torch.tensor(mask)), strategy, prompt_length=prompt)
            else:
                pooled = pool(states, torch.tensor(mask), strategy, prompt_length=prompt)
            pooled.float().sum().backward()
        assert pooled.dtype == states.dtype and torch.isfinite(states.grad).all()
        expected = reference_pool(states.detach().double().numpy(), mask, strategy, prompt_length=prompt)
        np.testing.assert_allclose(pooled.detach().double().numpy(), expected, rtol=1.6e-2, atol=1.6e-2)


@given(seed=st.integers(0, 2**32 - 1), length=st.integers(0, 5), strategy=st.sampled_from([*COMBINABLE, "splade"]),
       prompt=st.sampled_from([None, 0, 1]), normalize=st.booleans())  # fmt: skip
def test_one_sequence_and_one_vector_of_a_strict_array_api_library(seed, length, strategy, prompt, normalize):
    """`pool` of one L×D sequence and `finish_vectors` of one D vector raised IndexError ("the multi-axes index
    only specifies 1 dimensions") for array-api-strict: the batch of one was indexed as ``rows[0]``, which only
    numpy-like libraries read as the first row. Now they give the reference's vector, in the library's type."""
    strict = pytest.importorskip("array_api_strict")
    from tokenpool.core.pooling import finish_vectors

    rng = np.random.default_rng(seed)
    hidden, mask = rng.standard_normal((length, 3)), rng.integers(0, 2, length)
    pooled = pool(strict.asarray(hidden), strict.asarray(mask), strategy, prompt_length=prompt, normalize=normalize)
    expected = reference_pool(hidden[None], mask[None], strategy, prompt_length=prompt, normalize=normalize)[0]
    assert isinstance(pooled, type(strict.asarray(0.0))) and pooled.shape == (3,)
    np.testing.assert_allclose(np.asarray(pooled), expected, rtol=1e-10, atol=1e-10)
    finished = finish_vectors(strict.asarray(hidden[0] if length else np.ones(3)), normalize=True)
    assert finished.shape == (3,)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(finished)), 1.0, rtol=1e-12)


@settings(max_examples=12, deadline=None)  # (each example compiles four functions)
@given(case=st.data(), strategy=st.sampled_from([*COMBINABLE, "splade"]), layout=st.sampled_from(["right", "left", "holes"]))
def test_per_row_prompt_lengths_traced_by_jax_jit(case, strategy, layout):
    """``jax.jit`` of a function that passes its per-row ``prompt_length`` argument on to `pool` or `pool_packed`
    raised JAX's TracerArrayConversionError (the lengths were read on the host); they are used as traced values,
    as the mask is (its values unchecked under jit), and the rows are the reference's. A traced array of the wrong shape or
    dtype is still refused by name."""
    jax = pytest.importorskip("jax")
    rows, length = case.draw(st.integers(1, 3)), case.draw(st.integers(1, 6))
    hidden = np.random.default_rng(case.draw(st.integers(0, 2**32 - 1))).standard_normal((rows, length, 2))
    mask = case.draw(masks(rows, length, layout))
    prompts = np.array(case.draw(st.lists(st.integers(0, 7), min_size=rows, max_size=rows)))
    pooled = jax.jit(lambda h, m, p: pool(h, m, strategy, prompt_length=p))(hidden, mask, prompts)
    expected = reference_pool(hidden, mask, strategy, prompt_length=prompts)
    np.testing.assert_allclose(np.asarray(pooled, dtype=np.float64), expected, rtol=1e-5, atol=1e-5)
    one = jax.jit(lambda h, p: pool(h, None, strategy, prompt_length=p))(hidden, prompts[0])
    np.testing.assert_allclose(np.asarray(one, dtype=np.float64),
                               reference_pool(hidden, np.ones((rows, length)), strategy, prompt_length=int(prompts[0])),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    tokens, offsets = pack(hidden, mask)  # pool_packed too (its offsets concrete, as jit needs them)
    packed = jax.jit(lambda t, p: pool_packed(t, offsets, strategy, prompt_length=p))(tokens, prompts)
    np.testing.assert_allclose(np.asarray(packed, dtype=np.float64), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=rf"prompt_length has shape \({rows + 1},\)"):
        jax.jit(lambda h, p: pool(h, mask, strategy, prompt_length=p))(hidden, np.zeros(rows + 1, int))
    with pytest.raises(TypeError, match="prompt_length must hold integers"):
        jax.jit(lambda h, p: pool(h, mask, strategy, prompt_length=p))(hidden, np.zeros(rows))


@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(2, 4), kind=st.sampled_from(["bfloat16", "tracked", "float16"]),
       precision=st.sampled_from(["float32", "float16", "int8", "uint8", "binary", "ubinary"]))  # fmt: skip
def test_codes_and_sparse_rows_of_pooled_torch_tensors(seed, rows, kind, precision):
    """`quantize`, `Calibration.from_vectors`, `sparsify` and `keep_largest` of what `pool` returns for torch states
    raised torch's or numpy's errors for a bfloat16 tensor ("Got unsupported ScalarType BFloat16") and for one that
    autograd tracks ("Can't call numpy() on Tensor that requires grad"); they read the tensor's values, as for the
    same values in numpy."""
    torch = pytest.importorskip("torch")
    from tokenpool import quantize
    from tokenpool.core.quantize import Calibration
    from tokenpool.core.sparse import keep_largest, sparsify

    # row r's values around 10·r: every dimension varies across rows after bfloat16 rounding too (a calibration
    # refuses a dimension without spread; with rows around r, seeds 83789 and 8003 gave two equal bfloat16 means:
    # rows 10 apart would need two means of 4 normals each 10 of their standard deviations (0.5) off to meet)
    hidden = np.random.default_rng(seed).standard_normal((rows, 4, 6)) + 10 * np.arange(rows)[:, None, None]
    dtype = torch.float32 if kind == "tracked" else getattr(torch, kind)
    states = torch.tensor(hidden, dtype=dtype, requires_grad=kind == "tracked")
    pooled = pool(states, None, "mean")
    values = pooled.detach().float().numpy()
    calibration = Calibration.from_vectors(pooled)
    assert calibration == Calibration.from_vectors(values)
    np.testing.assert_array_equal(quantize(pooled, precision, calibration), quantize(values, precision, calibration))
    got, expected = sparsify(pooled, top_k=2), sparsify(values, top_k=2)
    assert (got.indptr.tolist(), got.indices.tolist(), got.values.tolist()) == (
        expected.indptr.tolist(), expected.indices.tolist(), expected.values.tolist())
    np.testing.assert_array_equal(keep_largest(pooled, 3), keep_largest(values, 3))


@given(case=batches_of_masks(), strategy=st.sampled_from([*COMBINABLE, "splade"]),
       mask_dtype=st.sampled_from(["int64", "float32", "bool"]))  # fmt: skip
def test_torch_func_vmap_of_integer_masks_and_per_example_prompt_lengths(case, strategy, mask_dtype):
    """``torch.func.vmap`` of `pool` (per-example pooling, and ``vmap(grad(loss))`` for per-sample gradients) over a
    tokenizer's int64 mask raised "vmap: It looks like you're attempting to use a Tensor in some data-dependent
    control flow" (the mask's 0/1 check reads its values), and a per-example ``prompt_length`` raised "Cannot access
    data pointer of Tensor that doesn't have storage"; batched values are used as they are (as under jax.jit)."""
    torch = pytest.importorskip("torch")
    hidden, mask, prompts = case
    states, masks_ = torch.tensor(hidden), torch.tensor(mask).to(getattr(torch, mask_dtype))
    pooled = torch.func.vmap(lambda h, m, p: pool(h, m, strategy, prompt_length=p))(states, masks_, torch.tensor(prompts))
    np.testing.assert_allclose(pooled.numpy(), reference_pool(hidden, mask, strategy, prompt_length=prompts),
                               rtol=1e-10, atol=1e-10)  # fmt: skip
    grads = torch.func.vmap(torch.func.grad(lambda h, m: pool(h, m, strategy).sum()))(states, masks_)
    assert grads.shape == states.shape and bool(torch.isfinite(grads).all())
