"""Stop 52: CLS / last-token pooling of a padded batch in one compiled call (`fast.PickPlan`)."""

from __future__ import annotations

import numpy as np
import pytest
from backends import fast_kernels, mask_layout
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool import pool
from tokenpool.core import compiled, fast
from tokenpool.core.strategies import parse_combination

numba_kernels = pytest.mark.skipif(compiled.kernels() is None, reason="numba is not installed")


def _loop_picks(mask: np.ndarray, hidden: np.ndarray, last: bool) -> np.ndarray | None:
    """Each row's first (or last) real token by a plain loop, zeros for an empty row; None at a value other
    than 0 and 1."""
    values = mask.astype(np.int64).tolist()
    if any(v not in (0, 1) for row in values for v in row):
        return None
    out = np.zeros((hidden.shape[0], hidden.shape[2]), hidden.dtype)
    for i, row in enumerate(values):
        real = [j for j, v in enumerate(row) if v]
        if real:
            out[i] = hidden[i, real[-1] if last else real[0]]
    return out


@numba_kernels
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 9),
    length=st.integers(1, 40),
    layout=st.sampled_from(["right", "left", "holes"]),
    mask_dtype=st.sampled_from([np.bool_, np.int32, np.int64]),
    dtype=st.sampled_from([np.float32, np.float64]),
    last=st.booleans(),
    bad=st.sampled_from([None, 2, -1, 7]),
)
@settings(max_examples=150, deadline=None)
def test_pick_rows_equal_a_loop(seed, rows, length, layout, mask_dtype, dtype, last, bad):
    """Holes, empty rows, both paddings, every mask dtype; -2 at a value other than 0/1."""
    rng = np.random.default_rng(seed)
    mask = mask_layout(rng, rows, length, layout).astype(mask_dtype)
    if bad is not None and mask_dtype != np.bool_:
        mask[rng.integers(rows), rng.integers(length)] = bad
    hidden = rng.standard_normal((rows, length, 5)).astype(dtype)
    out = np.full((rows, 5), np.nan, dtype)
    status = compiled.kernels().pick_rows(mask, hidden.reshape(rows * length, 5), last, out)
    want = _loop_picks(mask, hidden, last)
    assert status == (-2 if want is None else 0)
    if want is not None:
        np.testing.assert_array_equal(out, want)


@numba_kernels
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_host_plan_picks_only_when_every_strategy_reads_one_token(library):
    """cls, lasttoken and [cls, lasttoken] take the one-call plan; a list with a full-read strategy, half
    precision and a prompt do not (they take `RowPlan` and the checked route)."""
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 4, 8)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]], np.int64)
    if library == "torch":
        torch = pytest.importorskip("torch")
        hidden, mask = torch.from_numpy(hidden), torch.from_numpy(mask)
    with fast_kernels("torch-numpy"):
        plan = fast.host_plan
        for names in ("cls", "lasttoken", ["cls", "lasttoken"]):
            assert isinstance(plan(hidden, mask, np.float32, parse_combination(names)), fast.PickPlan), names
        assert not isinstance(plan(hidden, mask, np.float32, parse_combination(["cls", "mean"])), fast.PickPlan)
        half = hidden.astype(np.float16) if library == "numpy" else hidden.half()
        assert not isinstance(plan(half, mask, np.float32, parse_combination("cls")), fast.PickPlan)
        got = np.asarray(pool(hidden, mask, ["cls", "lasttoken"]))
    want = np.asarray(hidden)[[0, 1, 2], [0, 1, 0]], np.asarray(hidden)[[0, 1, 2], [1, 3, 0]]
    want[0][2] = want[1][2] = 0  # the empty row
    np.testing.assert_array_equal(got, np.concatenate(want, axis=1))


@numba_kernels
@pytest.mark.parametrize("strategy", ["cls", "lasttoken"])
def test_a_bad_mask_value_is_named_on_the_pick_plan(strategy):
    """The one-call plan declines a value other than 0/1, and the checked route names it (no silent row)."""
    hidden = np.ones((2, 3, 4), np.float32)
    mask = np.array([[1, 1, 0], [1, 3, 0]], np.int64)
    with fast_kernels("torch-numpy"), pytest.raises(ValueError, match=r"only 0 and 1 .*found \[3\]"):
        pool(hidden, mask, strategy)


@numba_kernels
@given(
    seed=st.integers(0, 2**32 - 1),
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    prompt=st.integers(0, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
    library=st.sampled_from(["numpy", "torch"]),
)
@settings(max_examples=100, deadline=None)
def test_packed_picks_take_one_call_and_equal_a_loop(seed, lengths, prompt, dtype, library):
    """pool_packed's CLS / last token (`compiled._take_rows`): a loop's rows, empty rows and rows that are all
    prompt giving zeros; the plan is the one-call one."""
    from tokenpool import pool_packed

    rng = np.random.default_rng(seed)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.standard_normal((int(cu[-1]), 6)).astype(dtype)
    want = {name: np.zeros((len(lengths), 6), dtype) for name in ("cls", "lasttoken")}
    for i, n in enumerate(lengths):
        if n > prompt:
            want["cls"][i], want["lasttoken"][i] = tokens[cu[i] + prompt], tokens[cu[i + 1] - 1]
    source = tokens
    if library == "torch":
        torch = pytest.importorskip("torch")
        source = torch.from_numpy(tokens)
    compiled.kernels()  # (the packed picks use kernels that an earlier large call built)
    with fast_kernels("torch-numpy"):
        skip = np.full(len(lengths), prompt) if prompt else None
        plan = fast.packed_plan(np.asarray(tokens), cu, skip, dtype, None, parse_combination("cls"))
        assert isinstance(plan, fast.PickPlan)
        for name, rows in want.items():
            got = pool_packed(source, cu, name, prompt_length=prompt or None)
            np.testing.assert_array_equal(np.asarray(got), rows)
