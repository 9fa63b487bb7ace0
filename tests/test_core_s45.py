"""Stop 45's bug hunt of the public pooling API: each test failed before its fix and compares with an
independent reference (`reference.py`'s float64 loops, or a gradient derived by hand from the formula)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import real_positions, reference_pool
from strategies_hyp import masks

import tokenpool as tp
from tokenpool import pool
from tokenpool.core.pooling import finish_vectors


def splade_gradient(hidden: np.ndarray, mask: np.ndarray, reduction: str) -> np.ndarray:
    """d Σ pool(hidden, mask, "splade") / d hidden, by hand in float64: a real token's value x > 0 contributes
    1 / (1 + x) where it is summed (reduction "sum") or is its row's largest in that dimension ("max")."""
    grad = np.zeros(hidden.shape)
    for b in range(hidden.shape[0]):
        positions = real_positions(mask[b])
        for d in range(hidden.shape[2]):
            values = [float(hidden[b, t, d]) for t in positions]
            chosen = positions if reduction == "sum" else positions[int(np.argmax(values)) :][:1] if values else []
            for t in chosen:
                if hidden[b, t, d] > 0:
                    grad[b, t, d] = 1.0 / (1.0 + float(hidden[b, t, d]))
    return grad


@st.composite
def nan_padded(draw):
    """(hidden B×L×D float64 with NaN at every padded position, its mask, the same hidden with zeros there)."""
    rows, length, dim = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    mask = draw(masks(rows, length))
    seed = draw(st.integers(0, 2**32 - 1))
    clean = np.random.default_rng(seed).standard_normal((rows, length, dim)) * 2
    clean[mask == 0] = 0.0
    hidden = clean.copy()
    hidden[mask == 0] = np.nan
    return hidden, mask, clean


@settings(max_examples=25, deadline=None)
@given(case=nan_padded(), reduction=st.sampled_from(["max", "sum"]))
def test_splade_gradient_ignores_nan_in_padding_under_jax_grad(case, reduction):
    """NaN in padded positions (what attention over fully masked rows can give) must not reach the gradient:
    the generic path (JAX, torch.compile) computed log1p(relu(h)) at every position before selecting the real
    ones, so a padded NaN gave 0·NaN = NaN in the gradient (its values were right). Value and gradient come
    from one ``jax.jit`` of ``jax.value_and_grad``: one XLA compile per shape instead of one per op (eager
    dispatch compiled every op for every new shape, ~1 s an example)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    try:
        hidden, mask, clean = case
        loss = lambda h: jnp.sum(pool(h, jnp.asarray(mask), "splade", reduction=reduction))  # noqa: E731
        value, gradient = jax.jit(jax.value_and_grad(loss))(jnp.asarray(hidden))
        value, gradient = float(value), np.asarray(gradient)
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(value, reference_pool(clean, mask, "splade", reduction=reduction).sum(), rtol=1e-12)
    np.testing.assert_allclose(gradient, splade_gradient(clean, mask, reduction), rtol=1e-12, atol=0)


@pytest.mark.parametrize("reduction", ["max", "sum"])
def test_splade_gradient_ignores_nan_in_padding_under_torch_compile(reduction):
    """The same through ``torch.compile`` (which takes the generic path): finite, hand-derived gradients."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]])
    clean = rng.standard_normal((3, 5, 4)) * 2
    clean[mask == 0] = 0.0
    hidden = torch.tensor(np.where(mask[..., None] == 1, clean, math.nan), requires_grad=True)
    compiled = torch.compile(lambda h, m: pool(h, m, "splade", reduction=reduction), backend="eager")
    out = compiled(hidden, torch.tensor(mask, dtype=torch.bool))
    np.testing.assert_allclose(out.detach().numpy(), reference_pool(clean, mask, "splade", reduction=reduction))
    (gradient,) = torch.autograd.grad(out.sum(), hidden)
    np.testing.assert_allclose(gradient.numpy(), splade_gradient(clean, mask, reduction), rtol=1e-12, atol=0)


DENSE = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


def numeric_gradient(hidden: np.ndarray, mask: np.ndarray, strategy: str, weights: np.ndarray, **options) -> np.ndarray:
    """d Σ weights·reference_pool(hidden) / d hidden by central differences of the float64 loop reference."""
    grad, step = np.zeros(hidden.shape), 1e-6
    for index in np.ndindex(hidden.shape):
        up, down = hidden.copy(), hidden.copy()
        up[index] += step
        down[index] -= step
        delta = reference_pool(up, mask, strategy, **options) - reference_pool(down, mask, strategy, **options)
        grad[index] = float((delta * weights).sum()) / (2 * step)
    return grad


@st.composite
def small_batches(draw):
    """(hidden B×L×D float64, its 0/1 mask with any layout, a strategy, options for `pool`)."""
    rows, length, dim = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    hidden = np.random.default_rng(seed).standard_normal((rows, length, dim))
    options = {"prompt_length": draw(st.sampled_from([None, 1])), "normalize": draw(st.booleans())}
    return hidden, draw(masks(rows, length)), draw(st.sampled_from([*DENSE, "splade"])), options


@settings(max_examples=30, deadline=None)
@given(case=small_batches(), packed=st.booleans())
def test_torch_func_grad_pools_like_the_reference(case, packed):
    """``torch.func.grad`` (and jacrev, functional training loops) hands `pool` wrapped tensors without storage:
    the fast paths called ``.numpy()`` on them and every strategy raised "Cannot access data pointer of Tensor
    that doesn't have storage"; now they take the functional path, with the reference's gradient."""
    torch = pytest.importorskip("torch")
    hidden, mask, strategy, options = case
    weights = np.random.default_rng(0).standard_normal((hidden.shape[0], hidden.shape[2]))
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])

    def loss(h: torch.Tensor) -> torch.Tensor:
        if packed:
            from tokenpool import pool_packed

            pooled = pool_packed(h[torch.tensor(mask == 1)], offsets, strategy, **options)
        else:
            pooled = pool(h, torch.tensor(mask), strategy, **options)
        return (pooled * torch.tensor(weights)).sum()

    gradient = torch.func.grad(loss)(torch.tensor(hidden))
    np.testing.assert_allclose(gradient.numpy(), numeric_gradient(hidden, mask, strategy, weights, **options),
                               atol=1e-6)


@pytest.mark.parametrize("strategy", [*DENSE, "splade"])
def test_torch_func_vmap_pools_each_sequence_like_the_reference(strategy):
    """``torch.func.vmap`` over single L×D sequences (hidden and a boolean mask both batched) failed the same
    way; now each vmapped row is the reference's row."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    hidden, mask = rng.standard_normal((4, 6, 3)), rng.integers(0, 2, (4, 6))
    mask[0] = 0
    pooled = torch.func.vmap(lambda h, m: pool(h, m, strategy, normalize=True))(
        torch.tensor(hidden), torch.tensor(mask, dtype=torch.bool)
    )
    np.testing.assert_allclose(pooled.numpy(), reference_pool(hidden, mask, strategy, normalize=True), rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(case=small_batches(), packed=st.booleans())
def test_second_order_gradients_match_finite_differences(case, packed):
    """A gradient of a gradient (``create_graph=True``: gradient penalties, Hessian-vector products) through the
    torch fast path: mean, mean/√n and weightedmean summed rows with ``embedding_bag``, whose backward has no
    derivative (NotImplementedError "the derivative for '_embedding_bag_backward' is not implemented"). Checked
    by ``gradgradcheck`` against finite differences, padded and packed, with and without normalisation."""
    torch = pytest.importorskip("torch")
    hidden, mask, strategy, options = case
    keep = torch.tensor(mask == 1)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])

    def pooled(h: torch.Tensor) -> torch.Tensor:
        if packed:
            from tokenpool import pool_packed

            return pool_packed(h[keep], offsets, strategy, **options)
        return pool(h, torch.tensor(mask), strategy, **options)

    assert torch.autograd.gradgradcheck(pooled, (torch.tensor(hidden, requires_grad=True),))


@settings(max_examples=30, deadline=None)
@given(case=small_batches(), packed=st.booleans())
def test_forward_mode_tangents_match_finite_differences(case, packed):
    """Forward-mode AD (``torch.autograd.forward_ad.dual_level``): a dual tensor does not require grad, so the
    fast paths pooled a ``.numpy()`` view of its primal and dropped the tangent (cls, max, lasttoken came back
    with no tangent at all: a silently missing derivative) or raised (mean, mean/√n and weightedmean: "Trying
    to use forward AD with _embedding_bag"). The tangent now equals the reference's directional derivative."""
    torch = pytest.importorskip("torch")
    import torch.autograd.forward_ad as forward_ad

    from tokenpool import pool_packed

    hidden, mask, strategy, options = case
    direction = np.random.default_rng(1).standard_normal(hidden.shape)
    keep = torch.tensor(mask == 1)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(torch.tensor(hidden), torch.tensor(direction))
        out = pool_packed(dual[keep], offsets, strategy, **options) if packed else pool(dual, mask, strategy, **options)
        tangent = forward_ad.unpack_dual(out).tangent
    step = 1e-6
    want = (reference_pool(hidden + step * direction, mask, strategy, **options)
            - reference_pool(hidden - step * direction, mask, strategy, **options)) / (2 * step)  # fmt: skip
    assert tangent is not None, "the pooled rows lost the tangent"
    np.testing.assert_allclose(tangent.numpy(), want, atol=1e-6)


@pytest.mark.parametrize("dtype", ["<U1", "object", "datetime64[s]", "timedelta64[s]"])
def test_pack_and_unpack_refuse_arrays_without_numbers_as_pool_does(dtype):
    """``pool`` and ``pool_packed`` refuse strings, objects and datetimes with a TypeError naming the dtype;
    ``pack`` and ``unpack`` returned them "packed" (strings as tokens) for a later step to trip over."""
    from tokenpool import pack, unpack

    values = np.zeros((2, 3, 2)).astype(dtype)
    with pytest.raises(TypeError, match="numeric array, got dtype"):
        pack(values)
    with pytest.raises(TypeError, match="numeric array, got dtype"):
        unpack(values[0], [0, 1, 3])


@pytest.mark.parametrize("pad_value", [None, "0", True])
def test_unpack_refuses_a_pad_value_that_is_not_a_number(pad_value):
    """``pad_value=None`` padded with NaN and True with 1.0, silently; now a TypeError naming the value."""
    from tokenpool import unpack

    with pytest.raises(TypeError, match="pad_value must be a number"):
        unpack(np.ones((3, 2)), [0, 1, 3], pad_value=pad_value)


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 6), extra=st.sampled_from([(1,), (0,), (-1,), (1, 0)]), seed=st.integers(0, 99))
def test_pack_of_one_sequence_checks_its_mask_like_pool(length, extra, seed):
    """One L×D sequence with a mask of the wrong shape: ``pack`` named a (1, 1, L)-style shape the caller never
    gave; now it says what ``pool`` says (the given shapes, and that one sequence needs an (L,) mask). A right
    mask packs the reference's real tokens."""
    from tokenpool import pack

    rng = np.random.default_rng(seed)
    hidden, mask = rng.standard_normal((length, 2)), rng.integers(0, 2, length)
    tokens, offsets = pack(hidden, mask)
    np.testing.assert_array_equal(tokens, hidden[real_positions(mask)])
    np.testing.assert_array_equal(offsets, [0, len(real_positions(mask))])
    shape = (1, length) if extra == (1, 0) else (length + extra[0],)
    if shape == (length,):
        return
    with pytest.raises(ValueError) as caught:
        pack(hidden, np.ones(shape))
    message = str(caught.value)
    assert f"has shape {shape} but hidden states have shape {(length, 2)}" in message
    assert f"must have shape {(length,)}" in message


@settings(max_examples=20, deadline=None)
@given(traced=masks(3, 5), other=masks(3, 5), strategy=st.sampled_from([*DENSE, "splade"]),
       prompt=st.sampled_from([None, 1]))  # fmt: skip
def test_a_traced_pool_pools_every_later_mask_like_the_reference(traced, other, strategy, prompt):
    """``torch.jit.trace`` (and the TorchScript ONNX export) records tensor ops only: the fast paths' host-side
    analysis of the traced mask became constants, so the traced module pooled a later batch with the first
    batch's positions — a silently wrong vector (mean, max, lasttoken, …) for any other mask."""
    torch = pytest.importorskip("torch")
    import warnings

    from tokenpool.torch import Pool

    hidden = np.random.default_rng(7).standard_normal((3, 5, 4))
    module = Pool(strategy, prompt_length=prompt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the trace warns about the mask check's Python bool)
        traced_module = torch.jit.trace(module, (torch.tensor(hidden), torch.tensor(traced)), check_trace=False)
    for mask in (traced, other):
        out = traced_module(torch.tensor(hidden), torch.tensor(mask))
        np.testing.assert_allclose(out.numpy(), reference_pool(hidden, mask, strategy, prompt_length=prompt),
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda bad: tp.pool_packed(bad, np.array([0, 1]), "mean"), "packed tokens"),
        (lambda bad: finish_vectors(bad, normalize=True), "vectors"),
        (lambda bad: tp.pool(bad, np.ones((1, 1)), "mean"), "hidden states"),
    ],
)
def test_a_list_that_is_no_array_is_named_by_what_it_should_be(call, what):
    """A ragged or non-numeric list was always called "hidden states", even where packed tokens or vectors were
    expected (the error came from the shared check, which named its input only for arrays)."""
    with pytest.raises(TypeError, match=f"^{what} must be an array"):
        call([[1.0, 2.0], [3.0]])
    with pytest.raises(TypeError, match=f"^{what} must be a numeric array"):
        call([["a", "b"]])
