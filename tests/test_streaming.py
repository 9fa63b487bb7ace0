"""`RunningPool` (core/streaming.py) against the generic Array API reduction and the float64 loop reference:
every strategy, dtypes, holes, prompts, empty rows, tokens added in blocks split at random points, in any
order."""

from __future__ import annotations

import re

import numpy as np
import pytest
from backends import TOLERANCE, round_to, to_backend, to_numpy64
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import real_positions, reference_row
from strategies_hyp import masks, strategy_lists

from tokenpool.core._backends import namespace
from tokenpool.core.masks import exclude_prompt, prepare_mask
from tokenpool.core.reductions import reduce_rows
from tokenpool.core.strategies import Pooling
from tokenpool.core.streaming import RunningPool

DTYPES = {
    "numpy": ["float64", "float32", "float16"],
    "torch": ["float64", "float32", "float16", "bfloat16"],
    "array_api_strict": ["float64", "float32"],
}


@st.composite
def streamed_inputs(draw, backends=("numpy", "torch")):
    """(backend, dtype, hidden float64 B×L×D as the library sees it, mask B×L, prompts, strategies, reduction)."""
    backend = draw(st.sampled_from(backends))
    dtype = draw(st.sampled_from(DTYPES[backend]))
    rows, length, dim = draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    hidden = round_to(np.random.default_rng(seed).standard_normal((rows, length, dim)) * 2.0, dtype)
    mask = draw(masks(rows, length))
    prompts = draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows))
    strategies = draw(strategy_lists())
    reduction = draw(st.sampled_from(["max", "sum"])) if strategies == ["splade"] else "max"  # (SPLADE's option)
    return backend, dtype, hidden, mask, prompts, strategies, reduction


def blocks_of(draw, hidden, mask, prompts):
    """(unit, real-token rows, position) blocks of every row's pooled tokens, cut at random points, shuffled."""
    blocks = []
    for b in range(hidden.shape[0]):
        real = real_positions(mask[b])  # padded positions of the real tokens; a token's position = its index
        first = min(prompts[b], len(real))
        cuts = sorted(draw(st.lists(st.integers(first, len(real)), max_size=4)))
        bounds = [first, *cuts, len(real)]
        blocks += [(b, real[lo:hi], lo) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    order = draw(st.permutations(range(len(blocks))))
    return [blocks[i] for i in order]


def generic(backend, dtype, hidden, mask, prompts, strategies, reduction):
    """`reduce_rows` (the generic Array API path) on the same padded data, strategies concatenated."""
    x = to_backend(hidden, backend, dtype)
    xp = namespace(x)
    real = prepare_mask(xp, x, to_backend(mask, backend))
    keep = exclude_prompt(xp, real, prompts)
    work = xp.astype(x, xp.float64 if dtype == "float64" else xp.float32)
    parts = [to_numpy64(reduce_rows(xp, Pooling(s), work, keep, reduction, real=real)) for s in strategies]
    return np.concatenate(parts, axis=1)


def loop_reference(hidden, mask, prompts, strategies, reduction) -> np.ndarray:
    rows = []
    for b in range(hidden.shape[0]):
        positions = real_positions(mask[b], prompts[b])
        skipped = len(real_positions(mask[b])) - len(positions)
        rows.append(np.concatenate([reference_row(hidden[b], positions, s, reduction, skipped) for s in strategies]))
    return np.stack(rows)


def check_streamed(data, draw, accumulate=None):
    backend, dtype, hidden, mask, prompts, strategies, reduction = data
    x = to_backend(hidden, backend, dtype)
    running = RunningPool(strategies, hidden.shape[0], hidden.shape[2], reduction=reduction, dtype=accumulate)
    for unit, positions, position in blocks_of(draw, hidden, mask, prompts):
        running.add(unit, x[unit][positions] if backend != "array_api_strict" else _take(x, unit, positions),
                    position)  # fmt: skip
    got = running.read()
    expected_dtype = accumulate or ("float64" if dtype == "float64" else "float32")
    assert str(got.dtype).rsplit(".", 1)[-1] == expected_dtype
    assert tuple(got.shape) == (hidden.shape[0], hidden.shape[2] * len(strategies))
    kept = [len(real_positions(mask[b], prompts[b])) for b in range(hidden.shape[0])]
    np.testing.assert_array_equal(running.counts, kept)
    rtol, atol = TOLERANCE["float64" if expected_dtype == "float64" and dtype == "float64" else "float32"]
    got = to_numpy64(got)
    np.testing.assert_allclose(got, loop_reference(hidden, mask, prompts, strategies, reduction), rtol=rtol, atol=atol)
    np.testing.assert_allclose(
        got, generic(backend, dtype, hidden, mask, prompts, strategies, reduction), rtol=rtol, atol=atol
    )
    assert np.all(got[np.array(kept) == 0] == 0)  # a unit without tokens is zeros, for every strategy


def _take(x, unit, positions):
    import array_api_strict as xp

    return xp.take(x[unit, ...], xp.asarray(positions, dtype=xp.int64), axis=0)


@given(data=streamed_inputs(), choice=st.data())
def test_streamed_rows_match_generic_and_loop_reference(data, choice):
    """Every strategy (also concatenated), splade max/sum, holes, prompts, empty rows, numpy and torch in every
    dtype (half precision accumulates in float32), blocks split at random points and added in any order."""
    check_streamed(data, choice.draw)


@settings(max_examples=40)
@given(data=streamed_inputs(backends=("array_api_strict",)), choice=st.data())
def test_streamed_rows_on_a_strict_array_api_library(data, choice):
    check_streamed(data, choice.draw)


@given(data=streamed_inputs(backends=("numpy",)), choice=st.data())
def test_streamed_rows_accumulate_in_a_chosen_dtype(data, choice):
    """``dtype="float64"`` keeps float64 statistics for float32/float16 blocks (the long-document engine's)."""
    check_streamed(data, choice.draw, accumulate="float64")


def test_streamed_max_of_nan_and_unit_order_do_not_mix():
    """A NaN in a unit's tokens stays in that unit (max propagates it, as `pool` does); other units are intact."""
    running = RunningPool(["max", "mean"], 2, 2)
    running.add(1, np.array([[1.0, 2.0]]), 0)
    running.add(0, np.array([[np.nan, 0.0], [3.0, 4.0]]), 5)
    got = running.read()
    assert np.isnan(got[0, 0]) and np.isnan(got[0, 2]) and got[0, 1] == 4.0 and got[0, 3] == 2.0
    np.testing.assert_array_equal(got[1], [1.0, 2.0, 1.0, 2.0])


def test_streamed_state_stays_on_torch_and_keeps_its_dtype():
    torch = pytest.importorskip("torch")
    running = RunningPool("weightedmean", 1, 3, dtype="float64")
    running.add(0, torch.ones(2, 3, dtype=torch.bfloat16), 1)  # ranks 2 and 3
    got = running.read()
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    torch.testing.assert_close(got, torch.ones(1, 3, dtype=torch.float64))


def test_a_pool_without_blocks_reads_zeros():
    assert RunningPool("mean", 3, 2).read().tolist() == [[0.0, 0.0]] * 3
    assert RunningPool(["cls", "max"], 0, 4, dtype="float64").read().shape == (0, 8)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.add(2, np.ones((1, 3)), 0), IndexError, r"unit must be an int in 0\.\.1, got 2"),
        (lambda r: r.add(True, np.ones((1, 3)), 0), IndexError, "got True"),
        (lambda r: r.add(0, np.ones((1, 3)), -1), ValueError, "position must be an int >= 0, got -1"),
        (lambda r: r.add(0, np.ones((1, 3)), 1.0), ValueError, "position must be an int >= 0, got 1.0"),
        (lambda r: r.add(0, np.ones((1, 4)), 0), ValueError, r"k×3 .* got shape \(1, 4\)"),
        (lambda r: r.add(0, np.ones(3), 0), ValueError, r"got shape \(3,\)"),
        (lambda r: r.add(0, np.array([["a", "b", "c"]]), 0), TypeError, "numeric"),
    ],
)
def test_bad_blocks_are_refused_naming_the_value(call, error, message):
    with pytest.raises(error, match=message):
        call(RunningPool("mean", 2, 3))


def test_bad_pools_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="unknown pooling strategy 'avgg'"):
        RunningPool("avgg", 1, 2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        RunningPool("splade", 1, 2, reduction="mean")
    with pytest.raises(ValueError, match="units must be an int >= 0, got -1"):
        RunningPool("mean", -1, 2)
    with pytest.raises(ValueError, match="not a dtype"):
        RunningPool("mean", 1, 2, dtype="float6").add(0, np.ones((1, 2)))
    with pytest.raises(ValueError, match="real floating"):
        RunningPool("mean", 1, 2, dtype="int32").add(0, np.ones((1, 2)))
    mixed = RunningPool("mean", 1, 2)
    mixed.add(0, np.ones((1, 2)))
    with pytest.raises(TypeError, match="one array library: got Tensor after ndarray"):
        mixed.add(0, torch.ones(1, 2), 1)


# ------------------------------------------------------------------------------- refused positions and dtypes


def loop_units(tokens: dict[int, dict[int, np.ndarray]], units: int, width: int) -> np.ndarray:
    """cls, lasttoken, mean, weightedmean, max of each unit's tokens (position → vector), float64 loops."""
    out = np.zeros((units, 5 * width))
    for u in range(units):
        if not tokens[u]:
            continue
        positions = sorted(tokens[u])
        for d in range(width):
            values = [float(tokens[u][p][d]) for p in positions]
            weighted = sum((p + 1) * float(tokens[u][p][d]) for p in positions)
            total = sum(p + 1 for p in positions)
            row = [values[0], values[-1], sum(values) / len(values), weighted / total, max(values)]
            for s, value in enumerate(row):
                out[u, s * width + d] = value
    return out


@given(
    blocks=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 12), st.integers(0, 4), st.integers(0, 2**32 - 1)),
        min_size=1, max_size=12,
    ),
)
@settings(max_examples=150, deadline=None)
def test_running_pool_refuses_a_position_added_twice(blocks):
    """RunningPool.add with a position already added (overlapping windows) double-counted it silently: the
    sum, the count and the rank total grew twice. Now a ValueError names the first repeated position and unit,
    the pool is unchanged by the refused block, and the accepted blocks read as a float64 loop over them."""
    from tokenpool.core.streaming import RunningPool

    units, width = 3, 2
    running = RunningPool(["cls", "lasttoken", "mean", "weightedmean", "max"], units, width, dtype="float64")
    accepted: dict[int, dict[int, np.ndarray]] = {u: {} for u in range(units)}
    for unit, position, k, seed in blocks:
        block = np.random.default_rng(seed).standard_normal((k, width))
        clashes = sorted(set(range(position, position + k)) & set(accepted[unit]))
        if clashes:
            with pytest.raises(ValueError, match=f"position {clashes[0]} of unit {unit} was already added"):
                running.add(unit, block, position)
            continue
        running.add(unit, block, position)
        accepted[unit].update({position + i: block[i] for i in range(k)})
    np.testing.assert_allclose(running.read(), loop_units(accepted, units, width), rtol=1e-12, atol=1e-12)
    assert running.counts.tolist() == [len(accepted[u]) for u in range(units)]


@given(
    position=st.one_of(st.integers(2**62, 2**80), st.sampled_from([2**63 - 1, 2**63 - 2, 2**64 - 1])),
    kind=st.sampled_from([int, np.uint64]),
    k=st.integers(1, 3),
)
@settings(max_examples=50, deadline=None)
def test_running_pool_refuses_positions_past_int64(position, kind, k):
    """A position past int64 (2**70) raised OverflowError (a "failed", not bad input) after the sums had
    already taken the block, leaving the pool half updated; numpy's uint64 positions wrapped in the rank total.
    Now a ValueError naming the position, before anything changes; positions that fit pool as a float64 loop."""
    from tokenpool.core.streaming import RunningPool

    if kind is np.uint64 and position >= 2**64:
        return
    running = RunningPool(["mean", "weightedmean", "cls"], 1, 2, dtype="float64")
    first = np.array([[1.0, -2.0]])
    running.add(0, first, 0)
    block = np.arange(2.0 * k).reshape(k, 2)
    if position + k > 2**63 - 1:
        with pytest.raises(ValueError, match=f"position {position} is out of range"):
            running.add(0, block, kind(position))
        expected = {0: {0: first[0]}}
    else:
        running.add(0, block, kind(position))
        expected = {0: {0: first[0], **{position + i: block[i] for i in range(k)}}}
    ref = loop_units(expected, 1, 2)  # cls, lasttoken, mean, weightedmean, max
    np.testing.assert_allclose(running.read()[0], np.concatenate([ref[0, 4:6], ref[0, 6:8], ref[0, 0:2]]), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64", np.int64, "bogus"])
@pytest.mark.parametrize("blocks", [0, 1])
def test_running_pool_refuses_a_non_float_dtype_with_or_without_blocks(dtype, blocks):
    """RunningPool(dtype="int32") read integer zeros when no block came (and "bogus" raised numpy's TypeError
    at read), while the same pool with a block refused the dtype with a ValueError: now both refuse it."""
    from tokenpool.core.streaming import RunningPool

    running = RunningPool("mean", 2, 3, dtype=dtype)
    with pytest.raises(ValueError, match=re.escape(repr(dtype))):
        if blocks:
            running.add(0, np.ones((1, 3)))
        running.read()


@pytest.mark.parametrize("dtype", [None, "float16", "float64", np.float32])
def test_running_pool_without_blocks_reads_zeros_of_its_dtype(dtype):
    from tokenpool.core.streaming import RunningPool

    got = RunningPool(["mean", "max"], 2, 3, dtype=dtype).read()
    assert got.dtype == np.dtype(dtype or np.float32)
    np.testing.assert_array_equal(got, np.zeros((2, 6)))
