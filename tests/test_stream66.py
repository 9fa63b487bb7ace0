"""Stop 66, streamed pooling: `RunningPool`'s float32 running sums past 3.4e38 stay finite, as `pool`'s do."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenpool
from tokenpool.core.streaming import RunningPool

torch = pytest.importorskip("torch")

SUMS = ("mean", "weightedmean", "mean_sqrt_len_tokens")
# float32's largest finite value is 3.4028235e38: two such tokens overflow a float32 sum
HUGE = (3.0e38, -3.0e38, 2.5e38, 1.0e38, -1.5e38, 1.0, 0.0)
EPS32 = float(np.finfo(np.float32).eps)


def loop_reference(units: list[np.ndarray], prompt: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """(the pooled rows, a bound on their float32 rounding) by a plain float64 loop; a unit's tokens are its
    positions ``prompt`` … (weightedmean weighs position p by p + 1); a unit without tokens is zeros."""
    rows, slack = [], []
    for tokens in units:
        n = len(tokens)
        weights = np.arange(prompt + 1, prompt + n + 1, dtype=np.float64)
        if strategy != "weightedmean":
            weights[:] = 1.0
        divisor = {"mean": n, "weightedmean": weights.sum(), "mean_sqrt_len_tokens": np.sqrt(n)}[strategy]
        terms = weights[:, None] * tokens.astype(np.float64)
        rows.append(terms.sum(0) / divisor)
        # a float32 sum of n terms is off by at most n·eps·Σ|term|; the division and the cast add an eps or two
        slack.append((n + 2) * EPS32 * np.abs(terms).sum(0) / divisor)
    return np.stack(rows), np.stack(slack)


def _as64(x) -> np.ndarray:
    return x.detach().to(torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def check_rows(got, expected: np.ndarray, slack: np.ndarray) -> None:
    """``got`` has no NaN, is inf exactly where the float64 rows are past float32's range (mean/√n may be), and
    is within float32 rounding of them elsewhere."""
    with np.errstate(over="ignore"):
        expected = expected.astype(np.float32).astype(np.float64)
    got = _as64(got)
    assert not np.isnan(got).any()
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    assert np.array_equal(got[np.isinf(got)], expected[np.isinf(got)])
    finite = np.isfinite(expected)
    error = np.abs(got[finite] - expected[finite])
    assert (error <= slack[finite] + 1e-6 * np.abs(expected[finite])).all(), (got, expected)


@st.composite
def huge_units(draw):
    """(units: numpy float32 k×D token blocks, each ≥ 1 token, some near 3e38; prompt; strategy; blocks: each unit
    cut at random points, as (unit, lo, hi), in a random order)."""
    count, dim = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    units, blocks = [], []
    for u in range(count):
        n = draw(st.integers(1, 7))
        units.append(np.array(draw(st.lists(st.sampled_from(HUGE), min_size=n * dim, max_size=n * dim)),
                              dtype=np.float32).reshape(n, dim))  # fmt: skip
        bounds = [0, *sorted(draw(st.lists(st.integers(0, n), max_size=4))), n]
        blocks += [(u, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    order = draw(st.permutations(blocks))
    return units, draw(st.sampled_from([0, 1])), draw(st.sampled_from(SUMS)), order


def streamed(units, prompt, strategy, order, convert=np.asarray):
    running = RunningPool(strategy, len(units), units[0].shape[1])
    for unit, lo, hi in order:
        running.add(unit, convert(units[unit][lo:hi]), prompt + lo)
    return running.read()


def pooled(units, prompt, strategy):
    """`pool` on the same tokens: the units as rows of a padded batch, after ``prompt`` left-out tokens."""
    length, dim = prompt + max(len(t) for t in units), units[0].shape[1]
    hidden = np.zeros((len(units), length, dim), np.float32)
    mask = np.zeros((len(units), length), np.int64)
    for b, tokens in enumerate(units):
        hidden[b, prompt : prompt + len(tokens)] = tokens
        mask[b, : prompt + len(tokens)] = 1
    return tokenpool.pool(hidden, mask, strategy, prompt_length=prompt or None)


@settings(max_examples=200, deadline=None)
@given(data=huge_units())
def test_streamed_float32_sums_past_the_range_are_finite_and_exact(data):
    """Streamed means of float32 values near 3e38 are finite and equal the float64 loop's (within float32
    rounding), whatever the blocks' sizes and order, for numpy and torch blocks; `pool` agrees on the tokens."""
    units, prompt, strategy, order = data
    expected, slack = loop_reference(units, prompt, strategy)
    for convert in (np.asarray, torch.from_numpy):
        got = streamed(units, prompt, strategy, order, convert)
        assert got.dtype == (np.float32 if convert is np.asarray else torch.float32)
        check_rows(got, expected, slack)
    check_rows(pooled(units, prompt, strategy), expected, slack)  # (the same reference holds `pool` to it)


@settings(max_examples=60, deadline=None)
@given(data=huge_units())
def test_streamed_combinations_and_splade_sum_with_huge_values(data):
    """Strategies combined share running sums; each part is the float64 loop's; SPLADE's sum of log1p(relu)
    cannot overflow (each term is below 89) and is the loop's too."""
    units, prompt, _, order = data
    running = RunningPool(list(SUMS), len(units), units[0].shape[1])
    splade = RunningPool("splade", len(units), units[0].shape[1], reduction="sum")
    for unit, lo, hi in order:
        running.add(unit, units[unit][lo:hi], prompt + lo)
        splade.add(unit, units[unit][lo:hi], prompt + lo)
    got, dim = running.read(), units[0].shape[1]
    for i, strategy in enumerate(SUMS):
        check_rows(got[:, i * dim : (i + 1) * dim], *loop_reference(units, prompt, strategy))
    activated = [np.log1p(np.maximum(t.astype(np.float64), 0)) for t in units]
    expected = np.stack([a.sum(0) for a in activated])
    np.testing.assert_allclose(splade.read(), expected, rtol=1e-5)


def test_one_huge_token_weighted_by_its_rank_is_finite():
    """weightedmean's Σ rank·h overflows for one token at rank ≥ 2: the mean is the token itself."""
    for convert in (np.asarray, torch.from_numpy):
        running = RunningPool("weightedmean", 2, 2)
        running.add(0, convert(np.full((1, 2), 3.0e38, np.float32)), position=5)
        running.add(1, convert(np.full((3, 2), -3.0e38, np.float32)), position=0)
        running.add(1, convert(np.ones((1, 2), np.float32)), position=3)
        expected = [[3.0e38] * 2, [(-3.0e38 * 6 + 4) / 10] * 2]
        np.testing.assert_allclose(_as64(running.read()), expected, rtol=1e-6)


def test_nan_and_inf_in_the_input_stay_as_pool_keeps_them():
    """A token that is NaN or ±inf makes the sum what float64 makes of it, as in `pool`: inf stays inf, inf − inf
    and NaN give NaN, the other columns stay finite."""
    inf, nan = np.inf, np.nan
    units = [np.array(rows, np.float32) for rows in (
        [[inf, 1.0], [3.0e38, 3.0e38], [3.0e38, 2.0]],
        [[3.0e38, nan], [3.0e38, 3.0e38], [-inf, 1.0]],
        [[inf, 3.0e38], [-inf, 3.0e38]],
    )]  # fmt: skip
    one_by_one = [(u, i, i + 1) for i in range(3) for u in range(3) if i < len(units[u])]  # units interleaved
    for strategy in SUMS:
        expected = pooled(units, 0, strategy)
        for convert in (np.asarray, torch.from_numpy):
            with np.errstate(over="ignore", invalid="ignore"):
                got = _as64(streamed(units, 0, strategy, one_by_one, convert))
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
            np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("strategy", SUMS)
def test_normal_values_keep_the_float32_running_sum_bit_for_bit(strategy):
    """Ordinary values: each block's float32 sum (by the blocks' library) added in arrival order, exactly (no
    float64 anywhere), then divided by n, √n or Σ rank."""
    rng = np.random.default_rng(66)
    tokens = rng.standard_normal((40, 8)).astype(np.float32) * 100
    order = [(20, 33), (0, 7), (33, 40), (7, 20)]
    divisor = {"mean": 40.0, "weightedmean": 820.0, "mean_sqrt_len_tokens": np.sqrt(40.0)}[strategy]
    for convert in (np.asarray, torch.from_numpy):
        running = RunningPool(strategy, 1, 8)
        total = convert(np.zeros(8, np.float32))
        for lo, hi in order:
            running.add(0, convert(tokens[lo:hi]), lo)
            ranks = np.arange(lo + 1, hi + 1) if strategy == "weightedmean" else np.ones(hi - lo)
            total = total + (convert(ranks.astype(np.float32)[:, None]) * convert(tokens[lo:hi])).sum(0)
        assert _as64(running.read()[0]).tobytes() == _as64(total / float(divisor)).tobytes()


def test_bfloat16_blocks_and_autograd_through_an_overflowed_sum():
    """bfloat16 blocks accumulate in float32 (as `pool` does), so their sums overflow the same way; the float64
    sum stays in autograd's graph: the gradient of a mean is 1/n per token."""
    x = torch.full((4, 2), 3.0e38, dtype=torch.bfloat16, requires_grad=True)
    running = RunningPool("mean", 1, 2)
    running.add(0, x[:3], 0)
    running.add(0, x[3:], 3)
    got = running.read()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, x.detach().float()[:1], rtol=1e-6, atol=0)
    got.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((4, 2), 0.25, dtype=torch.bfloat16))
