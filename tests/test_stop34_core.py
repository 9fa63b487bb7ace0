"""Core corners found in hunt 34-3, each against an independent loop; each failed before its fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool

from tokenpool import pool, pool_packed
from tokenpool.core import fast
from tokenpool.core.sparse import sparsify


def loop_sparsify(row: list[float], top_k: int | None, threshold: float) -> list[tuple[int, float]]:
    """(column, value) pairs one row keeps: |value| > threshold with NaN the largest magnitude, the top_k
    largest (ties to the lower column), in column order."""
    def size(v: float) -> float:
        return math.inf if math.isnan(v) else abs(v)

    kept = [(c, v) for c, v in enumerate(row) if size(v) > threshold]
    if top_k is not None:
        kept = sorted(kept, key=lambda cv: (-size(cv[1]), cv[0]))[:top_k]
    return sorted(kept)


values = st.sampled_from([0.0, -0.5, 0.5, 1.0, -2.0, 2.0, math.inf, -math.inf, math.nan])


@given(
    st.lists(st.lists(values, min_size=4, max_size=4), min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(1, 5)),
    st.sampled_from([0.0, 0.5, 1.5]),
)
@settings(max_examples=200, deadline=None)
def test_sparsify_keeps_nan_as_the_largest_entry(rows, top_k, threshold):
    """sparsify([[nan, 1.0, 0.0]]) gave the row {1: 1.0}: NaN fails ``|v| > threshold``, so a NaN pooled row
    came out as a clean-looking sparse row (pool and finish_vectors show NaN, never hide it)."""
    got = sparsify(np.array(rows, dtype=np.float32), top_k=top_k, threshold=threshold)
    for r, row in enumerate(rows):
        columns, vals = got.row(r)
        expected = loop_sparsify(row, top_k, threshold)
        assert columns.tolist() == [c for c, _ in expected]
        np.testing.assert_array_equal(vals, np.array([v for _, v in expected], dtype=np.float32))




@pytest.mark.parametrize("strategy", ["mean", "max", "weightedmean"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_read_only_states_pool_through_the_numpy_kernels(strategy, dtype, monkeypatch):
    """A read-only array (np.load(mmap_mode="r"), np.frombuffer) of COMPILED_ELEMENTS values or more raised
    numba's TypeError "No matching definition for argument type(s) readonly array(float32, 2d, C)" (with
    numba installed: a (4, 1024, 768) float32 batch was enough)."""
    pytest.importorskip("numba")
    monkeypatch.setattr(fast, "COMPILED_ELEMENTS", 1)  # the compiled kernels' size threshold, at any size
    rng = np.random.default_rng(7)
    hidden = rng.standard_normal((3, 6, 5)).astype(dtype)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    hidden.setflags(write=False)
    expected = reference_pool(hidden, mask, strategy)
    tolerance = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(np.asarray(pool(hidden, mask, strategy), np.float64), expected, rtol=tolerance, atol=tolerance)
    packed = np.ascontiguousarray(hidden[mask.astype(bool)])
    packed.setflags(write=False)
    got = pool_packed(packed, [0, 3, 9, 9], strategy)
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=tolerance, atol=tolerance)
