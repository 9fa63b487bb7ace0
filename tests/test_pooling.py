"""`pool` against the float64 loop reference on every backend, dtype, padding layout and option."""

from __future__ import annotations

import numpy as np
import pytest
from backends import (
    BACKENDS,
    DTYPES,
    TOLERANCE,
    dtype_name,
    library_of,
    require,
    round_to,
    to_backend,
    to_numpy64,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool
from strategies_hyp import ALL_STRATEGIES, masks, pooling_inputs

import tokenpool
from tokenpool import Pooling, pool


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "jax"])
@given(data=pooling_inputs(), choice=st.data())
def test_matches_float64_reference(backend, data, choice):
    check_against_reference(backend, data, choice)


@settings(max_examples=15)  # JAX compiles every op for every new shape: fewer, still random, examples
@given(data=pooling_inputs(), choice=st.data())
def test_matches_float64_reference_jax(data, choice):
    check_against_reference("jax", data, choice)


def check_against_reference(backend, data, choice):
    require(backend)
    hidden, mask, options = data
    dtype = choice.draw(st.sampled_from(DTYPES[backend]))
    seen = round_to(hidden, dtype)
    result = pool(to_backend(hidden, backend, dtype), to_backend(mask, backend), **options)
    expected = reference_pool(seen, mask, options["strategy"], **{k: v for k, v in options.items() if k != "strategy"})
    assert library_of(result) == backend.split("_")[0] or backend == "array_api_strict"
    assert dtype_name(result) == dtype
    assert tuple(result.shape) == expected.shape
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_numpy64(result), expected, rtol=rtol, atol=atol)


@given(data=pooling_inputs(), poison=st.sampled_from([np.nan, np.inf, -np.inf, 6.5e4]))
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_padding_values_never_reach_the_result(backend, data, poison):
    """NaN/inf (or huge values) in padded positions must not leak: padding is selected away, not multiplied."""
    require(backend)
    hidden, mask, options = data
    options["prompt_length"] = None
    poisoned = np.where(mask[..., None] == 1, hidden, poison)
    result = to_numpy64(pool(to_backend(poisoned, backend), to_backend(mask, backend), **options))
    expected = reference_pool(hidden, mask, options["strategy"], **{k: v for k, v in options.items() if k != "strategy"})
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-10)


@given(
    rows=st.integers(1, 4),
    length=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    strategy=st.sampled_from(ALL_STRATEGIES),
    prompt=st.integers(0, 2),
    choice=st.data(),
)
def test_left_and_right_padding_give_the_same_vectors(rows, length, seed, strategy, prompt, choice):
    """The same sequences padded on either side pool to the same vectors (weightedmean included)."""
    rng = np.random.default_rng(seed)
    lengths = choice.draw(st.lists(st.integers(0, length), min_size=rows, max_size=rows))
    tokens = [rng.standard_normal((n, 3)) for n in lengths]
    right = np.zeros((rows, length, 3))
    left = np.full((rows, length, 3), 9.0)
    right_mask = np.zeros((rows, length), dtype=int)
    left_mask = np.zeros((rows, length), dtype=int)
    for b, seq in enumerate(tokens):
        n = len(seq)
        right[b, :n], right_mask[b, :n] = seq, 1
        if n:
            left[b, length - n :], left_mask[b, length - n :] = seq, 1
    a = pool(right, right_mask, strategy, prompt_length=prompt)
    b = pool(left, left_mask, strategy, prompt_length=prompt)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_empty_rows_are_zero_never_nan(backend, strategy, dtype):
    hidden = np.random.default_rng(0).standard_normal((3, 4, 5))
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]])
    result = to_numpy64(pool(to_backend(hidden, backend, dtype), mask, strategy, normalize=True))
    assert np.all(np.isfinite(result))
    assert np.all(result[1] == 0)
    assert np.all(np.any(result[[0, 2]] != 0, axis=1))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_fp16_sum_overflow_still_gives_the_right_mean(backend):
    """600 tokens of 200.0: the fp16 sum (120000) overflows 65504, the mean (200) does not."""
    hidden = np.full((2, 600, 4), 200.0)
    mask = np.ones((2, 600), dtype=int)
    mask[1, 300:] = 0
    for strategy in ["mean", "weightedmean", "mean_sqrt_len_tokens"]:
        result = pool(to_backend(hidden, backend, "float16"), to_backend(mask, backend), strategy)
        assert dtype_name(result) == "float16"
        expected = reference_pool(hidden, mask, strategy)
        if strategy == "mean_sqrt_len_tokens":  # 200 * sqrt(600) = 4899: representable
            np.testing.assert_allclose(to_numpy64(result), expected, rtol=1e-3)
        else:
            np.testing.assert_allclose(to_numpy64(result), expected, rtol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_keeps_library_and_dtype_and_float64_stays_float64(backend):
    require(backend)
    dtype = "float64" if "float64" in DTYPES[backend] else "float32"
    hidden = to_backend(np.ones((2, 3, 4)), backend, dtype)
    result = pool(hidden, to_backend(np.array([[1, 1, 0], [1, 0, 0]]), backend), ["mean", "max"])
    assert dtype_name(result) == dtype
    assert type(result) is type(hidden)


@pytest.mark.parametrize(
    ("hidden_backend", "mask_backend"),
    [("numpy", "torch"), ("torch", "numpy"), ("numpy", "list"), ("torch", "list"), ("jax", "numpy"), ("numpy", "jax")],
)
def test_mask_may_come_from_another_library(hidden_backend, mask_backend):
    require(hidden_backend)
    if mask_backend != "list":
        require(mask_backend)
    hidden = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    foreign = mask.tolist() if mask_backend == "list" else to_backend(mask, mask_backend)
    result = pool(to_backend(hidden, hidden_backend), foreign, "mean")
    assert library_of(result) == hidden_backend
    np.testing.assert_allclose(to_numpy64(result), reference_pool(hidden, mask, "mean"), rtol=1e-6)


def test_boolean_and_float_masks_are_accepted():
    hidden = np.random.default_rng(2).standard_normal((2, 3, 4))
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    expected = pool(hidden, mask)
    np.testing.assert_array_equal(pool(hidden, mask.astype(bool)), expected)
    np.testing.assert_array_equal(pool(hidden, mask.astype(np.float32)), expected)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_integer_and_bool_hidden_states_promote_to_the_default_float(backend):
    hidden = np.arange(24).reshape(2, 3, 4)
    result = pool(to_backend(hidden, backend), [[1, 1, 0], [1, 1, 1]], "mean")
    expected_dtype = "float64" if backend == "numpy" else "float32"  # numpy's mean / torch's default dtype
    assert dtype_name(result) == expected_dtype
    np.testing.assert_allclose(to_numpy64(result), reference_pool(hidden, [[1, 1, 0], [1, 1, 1]], "mean"))
    boolean = pool(to_backend(hidden % 2 == 0, backend), None, "max")
    assert dtype_name(boolean) == expected_dtype


@given(mask=masks(3, 6), seed=st.integers(0, 2**31), dim=st.integers(2, 6), k=st.data())
def test_truncate_then_normalise_gives_unit_vectors_of_k_dims(mask, seed, dim, k):
    """Matryoshka order (TEI's): cut to k dims, then L2-normalise; a zero vector stays zero."""
    hidden = np.random.default_rng(seed).standard_normal((3, 6, dim))
    truncate = k.draw(st.integers(1, dim))
    result = pool(hidden, mask, "mean", truncate_dim=truncate, normalize=True)
    assert result.shape == (3, truncate)
    norms = np.linalg.norm(result, axis=1)
    has_tokens = mask.sum(axis=1) > 0
    np.testing.assert_allclose(norms[has_tokens], 1.0, rtol=1e-12)
    assert np.all(result[~has_tokens] == 0)
    full = pool(hidden, mask, "mean")[:, :truncate]
    np.testing.assert_allclose(result * np.linalg.norm(full, axis=1, keepdims=True), full, atol=1e-12)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_single_sequence_gives_one_vector(strategy):
    hidden = np.random.default_rng(3).standard_normal((5, 4))
    mask = np.array([0, 1, 1, 0, 1])
    result = pool(hidden, mask, strategy)
    assert result.shape == (4,)
    np.testing.assert_allclose(result, reference_pool(hidden[None], mask[None], strategy)[0], rtol=1e-12)


def test_strategy_names_and_aliases_are_case_insensitive():
    hidden = np.random.default_rng(4).standard_normal((2, 3, 4))
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    for alias, member in [
        ("LAST-TOKEN", Pooling.LAST_TOKEN),
        ("last", Pooling.LAST_TOKEN),
        ("cls_token", Pooling.CLS),
        ("mean_tokens", Pooling.MEAN),
        ("Max_Tokens", Pooling.MAX),
        ("weighted_mean", Pooling.WEIGHTED_MEAN),
        ("mean_sqrt_len", Pooling.MEAN_SQRT_LEN),
    ]:
        np.testing.assert_array_equal(pool(hidden, mask, alias), pool(hidden, mask, member))
        assert Pooling(alias) is member
    both = pool(hidden, mask, ["max", Pooling.CLS])
    np.testing.assert_array_equal(both, np.concatenate([pool(hidden, mask, "max"), pool(hidden, mask, "cls")], 1))
    np.testing.assert_array_equal(pool(hidden, mask, "max,cls"), both)


def test_members_take_the_mask_positionally_or_by_keyword():
    hidden = np.random.default_rng(5).standard_normal((2, 3, 4))
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    for member in Pooling:
        expected = reference_pool(hidden, mask, member.value)
        np.testing.assert_allclose(member(hidden, mask), expected, rtol=1e-12)
        np.testing.assert_allclose(member(hidden, attention_mask=mask), expected, rtol=1e-12)
    np.testing.assert_allclose(Pooling.mean_pooling(hidden, mask), reference_pool(hidden, mask, "mean"))
    np.testing.assert_allclose(Pooling.cls_pooling(hidden, mask), reference_pool(hidden, mask, "cls"))


def test_public_api_is_exported():
    for name in ["Pooling", "pool", "__version__"]:
        assert hasattr(tokenpool, name)


def test_jax_jit_and_grad_work():
    """Under jax.jit the mask values are abstract: pool skips the data-dependent 0/1 check and still traces."""
    require("jax")
    import jax
    import jax.numpy as jnp

    hidden = np.random.default_rng(6).standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 1, 1, 1]])
    strategies = ["mean", "max", "cls", "lasttoken", "weightedmean"]
    options = {"normalize": True, "prompt_length": 1}
    jitted = jax.jit(lambda h, m: pool(h, m, strategies, **options))(jnp.asarray(hidden), jnp.asarray(mask))
    expected = reference_pool(hidden, mask, strategies, **options)
    np.testing.assert_allclose(np.asarray(jitted), expected, rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda h: pool(h, jnp.asarray(mask), "mean").sum())(jnp.asarray(hidden))
    np.testing.assert_allclose(np.asarray(grad)[:, :, 0], [[0.5, 0.5, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_length_batches_pool_to_zeros(backend):
    """A batch with L = 0 token positions has only empty rows: zeros, for every strategy and backend."""
    require(backend)
    hidden = to_backend(np.zeros((2, 0, 3)), backend, "float32")
    mask = to_backend(np.zeros((2, 0), dtype=np.int64), backend)
    for strategy in ALL_STRATEGIES:
        result = to_numpy64(pool(hidden, mask, strategy, normalize=True))
        assert result.shape == (2, 3) and np.all(result == 0)
