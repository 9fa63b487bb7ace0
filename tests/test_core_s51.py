"""Stop 51: corners of the pooling core (each test failed before its fix)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from backends import to_backend, to_numpy64
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference import reference_pool

from tokenpool import pool
from tokenpool.core._backends import namespace
from tokenpool.core.masks import exclude_prompt
from tokenpool.core.pooling import finish_vectors
from tokenpool.core.reductions import reduce_rows
from tokenpool.core.sparse import sparsify
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


# -- sparsify's top-k and NaN ------------------------------------------------------------------------------


def _loop_top_k(row: list[float], top_k: int, threshold: float) -> list[tuple[int, float]]:
    """(column, value) pairs one row keeps: |value| > threshold or NaN, then the top_k by NaN first (as
    numpy's sort and torch.topk order them), then the largest magnitude (±inf next), ties to the lower column."""
    kept = [(c, v) for c, v in enumerate(row) if math.isnan(v) or abs(v) > threshold]
    kept = sorted(kept, key=lambda cv: (not math.isnan(cv[1]), -abs(cv[1]) if not math.isnan(cv[1]) else 0, cv[0]))
    return sorted(kept[:top_k])


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(st.sampled_from([0.0, 1.0, -2.0, 3.4e38, math.inf, -math.inf, math.nan, -math.nan]),
                           min_size=5, max_size=5), min_size=1, max_size=3),
    top_k=st.integers(1, 4),
    threshold=st.sampled_from([0.0, 1.5]),
    dtype=st.sampled_from([np.float32, np.float64, np.float16]),
)
@example(rows=[[math.inf, 0.0, math.nan, 0.0, 0.0]], top_k=1, threshold=0.0, dtype=np.float32)
def test_sparsify_top_k_ranks_nan_above_inf(rows, top_k, threshold, dtype):
    """NaN ranked level with ±inf, and a tie goes to the lower column: ``[[inf, 0, nan]]`` with top_k=1 kept
    the inf and dropped the NaN (torch.topk, which a SparseEncoder's max_active_dims uses, keeps the NaN). NaN
    now ranks above ±inf, so a row holding NaN keeps a NaN under any top_k."""
    with np.errstate(over="ignore"):
        dense = np.array(rows, dtype=dtype)
    got = sparsify(dense, top_k=top_k, threshold=threshold)
    for r, row in enumerate(dense.astype(np.float64).tolist()):
        columns, values = got.row(r)
        expected = _loop_top_k(row, top_k, threshold)
        assert columns.tolist() == [c for c, _ in expected]
        np.testing.assert_array_equal(values, np.array([v for _, v in expected], np.float32))
        assert any(math.isnan(v) for v in row) == bool(np.isnan(values).any())


# -- finish_vectors returns a new array ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch", "array_api_strict"])
@pytest.mark.parametrize("options", [{}, {"truncate_dim": 3}, {"truncate_dim": 2}, {"normalize": False}])
@pytest.mark.parametrize("single", [False, True])
def test_finish_vectors_never_returns_its_input_or_a_view_of_it(backend, options, single):
    """With no cut (or a cut to the full width) and no normalisation ``finish_vectors(v)`` returned ``v``
    itself (a cut: a view of it), so writing into the result rewrote the caller's input. It returns a new
    array, as numpy's functions do, with the same values."""
    pytest.importorskip(backend)
    values = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    given = to_backend((values[0] if single else values).copy(), backend)
    got = finish_vectors(given, **options)
    assert got is not given
    width = options.get("truncate_dim", 3)
    np.testing.assert_array_equal(to_numpy64(got), (values[0] if single else values)[..., :width])
    got[..., 0] = -1.0
    np.testing.assert_array_equal(to_numpy64(given), values[0] if single else values)


def test_finish_vectors_copy_keeps_the_autograd_graph():
    torch = pytest.importorskip("torch")
    leaf = torch.arange(6.0).reshape(2, 3).requires_grad_()
    got = finish_vectors(leaf * 2, truncate_dim=2)
    (got * torch.tensor([1.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [[2.0, 6.0, 0.0], [2.0, 6.0, 0.0]])


# -- sparsify ranks float64 values as float64 --------------------------------------------------------------

WIDE = [0.0, 1.0, 1.0 + 2**-30, -(1.0 + 2**-40), 2.0**24 + 1, 1e39, -2e39, math.inf, -math.inf, math.nan]


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(st.sampled_from(WIDE), min_size=5, max_size=5), min_size=1, max_size=3),
    top_k=st.one_of(st.none(), st.integers(1, 4)),
    threshold=st.sampled_from([0.0, 1.0]),
)
@example(rows=[[1e39, math.inf, 1.0, 0.0, 0.0]], top_k=1, threshold=0.0)
@example(rows=[[1.0, 1.0 + 2**-30, 0.0, 0.0, 0.0]], top_k=1, threshold=0.0)
@example(rows=[[1.0, 1.0 + 2**-30, 0.0, 0.0, 0.0]], top_k=None, threshold=1.0)
def test_sparsify_ranks_float64_values_as_float64(rows, top_k, threshold):
    """float64 values were ranked (and held against the threshold) as float32: 1 and 1 + 2^-30 tied, so top_k=1
    kept column 0 rather than the larger column 1, and ``[[1e39, inf]]`` with top_k=1 tied 1e39 with inf and
    refused the row, while ``[[inf, 1e39]]`` gave {0: inf}. They are ranked as float64 now: the entries kept are
    those of the float64 loop reference, and only a kept finite value past float32's range is refused."""
    dense = np.array(rows, dtype=np.float64)
    expected = [_loop_top_k(row, 5 if top_k is None else top_k, threshold) for row in rows]
    kept = [v for row in expected for _, v in row]
    if any(math.isfinite(v) and abs(v) > float(np.finfo(np.float32).max) for v in kept):
        with pytest.raises(ValueError, match="beyond float32's range"):
            sparsify(dense, top_k=top_k, threshold=threshold)
        return
    got = sparsify(dense, top_k=top_k, threshold=threshold)
    for r, row in enumerate(expected):
        columns, values = got.row(r)
        assert columns.tolist() == [c for c, _ in row]
        np.testing.assert_array_equal(values, np.array([v for _, v in row], np.float32))


def test_sparsify_ranks_large_integers_exactly():
    """int64 2^24 and 2^24 + 1 are one float32: top_k=1 kept the lower column instead of the larger value."""
    got = sparsify(np.array([[2**24, 2**24 + 1, 3]], dtype=np.int64), top_k=1)
    assert got.indices.tolist() == [1]


# -- zero rows on Dask -------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    strategy=st.sampled_from(["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "splade"]),
    length=st.integers(1, 4),
    dim=st.integers(0, 3),
    masked=st.booleans(),
)
@example(strategy="max", length=3, dim=2, masked=False)
def test_zero_rows_on_dask_compute_to_zero_rows(strategy, length, dim, masked):
    """A Dask batch of no rows: max and splade promised shape (0, D) but computed to (0, 0) or (1, 0) (Dask's
    max over a block of no rows); every strategy now computes to (0, D), as numpy's does."""
    pytest.importorskip("dask")
    hidden = to_backend(np.zeros((0, length, dim), np.float32), "dask")
    mask = to_backend(np.ones((0, length), np.int64), "dask") if masked else None
    got = pool(hidden, mask, strategy)
    assert tuple(got.shape) == (0, dim)
    assert got.compute().shape == (0, dim)
