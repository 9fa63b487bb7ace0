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
from reference import reference_finish, reference_pool
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


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_numpy_bfloat16_from_ml_dtypes_pools_in_float32(strategy):
    """JAX's bfloat16 arrays become ml_dtypes' bfloat16 in numpy, which numpy's isdtype refuses: pooled in
    float32 and returned as bfloat16 like torch's (was a TypeError from numpy)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    mask = [[1, 1, 0], [0, 1, 1]]
    hidden = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(ml_dtypes.bfloat16)
    result = pool(hidden, mask, strategy, prompt_length=1, normalize=True)
    assert result.dtype == hidden.dtype
    expected = reference_pool(hidden.astype(np.float64), mask, strategy, prompt_length=1, normalize=True)
    np.testing.assert_allclose(result.astype(np.float64), expected, rtol=1.6e-2, atol=1.6e-2)
    assert pool(hidden.astype(ml_dtypes.int4), mask, "mean").dtype == np.float64  # integers promote


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


# -- finish_vectors: the one finishing step (Matryoshka cut, then L2 normalisation, non-finite policy) ---------


@st.composite
def finish_inputs(draw):
    """(float64 B×D rows spanning 1e-30..1e30 in magnitude, with zero rows, options)."""
    rows, dim = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** rng.integers(-30, 31, size=(rows, 1))
    values = rng.standard_normal((rows, dim)) * scale
    values[draw(st.lists(st.integers(0, rows - 1), max_size=rows))] = 0.0
    options = {
        "truncate_dim": draw(st.one_of(st.none(), st.integers(1, dim))),
        "normalize": draw(st.booleans()),
    }
    return values, options


def _fits(values: np.ndarray, dtype: str) -> np.ndarray:
    """Rows scaled into ``dtype``'s normal range (float16: 1e-4..1e4), keeping the relative spread."""
    if dtype in ("float16",):
        return values / np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-300) * 1e3
    return values


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "jax"])
@given(data=finish_inputs(), choice=st.data())
def test_finish_vectors_matches_the_float64_reference(backend, data, choice):
    """Cut, then normalise, against `math.hypot` in float64, on every backend and dtype, including rows whose
    squares overflow or underflow float32 (|x| up to 1e30 and down to 1e-30) and zero rows."""
    from tokenpool.core.pooling import finish_vectors

    require(backend)
    values, options = data
    dtype = choice.draw(st.sampled_from([d for d in DTYPES[backend] if d != "bfloat16"]))
    values = _fits(values, dtype)
    if dtype == "float32":
        values = np.clip(values, -1e37, 1e37)
    seen = round_to(values, dtype)
    result = finish_vectors(to_backend(values, backend, dtype), **options)
    expected = np.stack([reference_finish(row, **options) for row in seen])
    assert dtype_name(result) == dtype and tuple(result.shape) == expected.shape
    rtol, _ = TOLERANCE[dtype]
    got = to_numpy64(result)
    if options["normalize"]:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
        norms = np.linalg.norm(got, axis=1)
        zero = ~expected.any(axis=1)
        np.testing.assert_allclose(norms[~zero], 1.0, rtol=rtol)
        assert np.all(got[zero] == 0)
    else:  # nothing but the cut: the very same values
        np.testing.assert_array_equal(got, expected)


@given(data=pooling_inputs())
def test_pool_finishes_with_finish_vectors(data):
    """`pool(normalize=, truncate_dim=)` is `finish_vectors` of the plain pooled rows, bit for bit."""
    from tokenpool.core.pooling import finish_vectors

    hidden, mask, options = data
    finishing = {"normalize": options.pop("normalize"), "truncate_dim": options.pop("truncate_dim")}
    for dtype in ("float32", "float64"):
        plain = pool(hidden.astype(dtype), mask, **options)
        np.testing.assert_array_equal(
            pool(hidden.astype(dtype), mask, **options, **finishing), finish_vectors(plain, **finishing)
        )


@pytest.mark.parametrize("backend", ["numpy", "torch", "dask"])
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_finish_vectors_non_finite_policy(backend, poison):
    """By default a non-finite row stays non-finite (never passed off as a zero or unit row) and the other rows
    are finished as usual; ``finite=True`` raises ModelOutputError naming the first such row. A NaN in
    dimensions the cut drops is no error."""
    from tokenpool.core.pooling import finish_vectors
    from tokenpool.errors import ModelOutputError, classify

    require(backend)
    values = np.random.default_rng(7).standard_normal((4, 6)).astype(np.float32)
    values[2, 1] = poison
    values[3, 5] = np.nan
    for normalize in (False, True):
        got = to_numpy64(finish_vectors(to_backend(values, backend), normalize=normalize))
        assert not np.isfinite(got[2]).all() and not np.isfinite(got[3]).all()
        expected = np.stack([reference_finish(row, normalize=normalize) for row in values[:2].astype(np.float64)])
        np.testing.assert_allclose(got[:2], expected, rtol=1e-6)
        with pytest.raises(ModelOutputError, match="row 2") as caught:
            finish_vectors(to_backend(values, backend), normalize=normalize, finite=True)
        assert caught.value.index == 2 and classify(caught.value) == "failed"
        assert "document 9" in str(caught.value.at("document 9", 9))
    cut = to_numpy64(finish_vectors(to_backend(values[[0, 1, 3]], backend), truncate_dim=5, finite=True))
    np.testing.assert_array_equal(cut, values[[0, 1, 3], :5])


def test_finish_vectors_keeps_autograd_and_zero_rows_have_zero_gradients():
    """Under autograd the gradient equals torch's own `F.normalize` (an independent implementation) for
    non-zero rows, and is zero (not NaN) for a zero row."""
    require("torch")
    import torch

    from tokenpool.core.pooling import finish_vectors

    values = torch.randn(3, 5, dtype=torch.float64)
    values[1] = 0
    ours = values.clone().requires_grad_(True)
    theirs = values.clone().requires_grad_(True)
    weights = torch.randn(3, 4, dtype=torch.float64)
    (finish_vectors(ours, truncate_dim=4, normalize=True) * weights).sum().backward()
    (torch.nn.functional.normalize(theirs[:, :4], dim=-1) * weights).sum().backward()
    rows = [0, 2]  # F.normalize divides a zero row by its eps: its gradient there is 1e12·weights, not ours
    torch.testing.assert_close(ours.grad[rows], theirs.grad[rows], rtol=1e-10, atol=1e-12)
    assert torch.all(ours.grad[1] == 0)


def test_finish_vectors_takes_one_vector_lists_and_promotes_integers():
    from tokenpool.core.pooling import finish_vectors

    one = finish_vectors(np.array([3.0, 4.0, 12.0], dtype=np.float32), normalize=True, truncate_dim=2)
    assert one.dtype == np.float32 and one.shape == (2,)
    np.testing.assert_allclose(one, [0.6, 0.8], rtol=1e-7)
    listed = finish_vectors([[0, 0], [3, 4]], normalize=True)
    assert listed.dtype == np.float64
    np.testing.assert_array_equal(listed, [[0.0, 0.0], [0.6, 0.8]])
    half = finish_vectors(np.array([[6e4, 6e4]], dtype=np.float16), normalize=True)  # squares overflow fp16
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float64), [[2**-0.5, 2**-0.5]], rtol=1e-3)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"normalize": "yes"}, TypeError, "normalize must be True or False, got 'yes'"),
        ({"finite": 1}, TypeError, "finite must be True or False, got 1"),
        ({"truncate_dim": 0}, ValueError, r"truncate_dim must be an int in 1\.\.4 .* got 0"),
        ({"truncate_dim": 5}, ValueError, r"truncate_dim must be an int in 1\.\.4 .* got 5"),
        ({"truncate_dim": 2.0}, TypeError, "truncate_dim must be an int, got 2.0"),
    ],
)
def test_finish_vectors_rejects_bad_options(call, error, message):
    from tokenpool.core.pooling import finish_vectors

    with pytest.raises(error, match=message):
        finish_vectors(np.ones((2, 4), dtype=np.float32), **call)


def test_finish_vectors_rejects_bad_arrays():
    from tokenpool.core.pooling import finish_vectors

    with pytest.raises(ValueError, match=r"B×D rows or one D vector, got shape \(2, 3, 4\)"):
        finish_vectors(np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match="numeric array"):
        finish_vectors(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="must be real"):
        finish_vectors(np.ones((1, 2), dtype=np.complex64))
