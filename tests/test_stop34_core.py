"""Core corners found in hunt 34-3, each against an independent loop; each failed before its fix."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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
