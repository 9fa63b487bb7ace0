"""Stop 66 review (s66r-g) of s66-stream: a unit whose float32 running sum overflowed keeps that sum and a
float64 one beside it; reading takes the float64 value only where the float32 one is NaN or inf (`pool`'s rule),
warns nothing new, and steps aside where the library has no float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tokenpool.core.streaming import RunningPool

torch = pytest.importorskip("torch")


def float32_running(blocks: list[np.ndarray], weighted: bool) -> np.ndarray:
    """Each block's float32 Σ (rank·) h added in arrival order in float32: a plain loop of the running sum."""
    total, first = np.zeros(blocks[0].shape[1], np.float32), 1
    for block in blocks:
        ranks = np.arange(first, first + len(block), dtype=np.float32) if weighted else np.ones(len(block), np.float32)
        total = total + (ranks[:, None] * block).sum(0, dtype=np.float32)
        first += len(block)
    return total


def _streamed(strategy: str, blocks: list[np.ndarray], convert=np.asarray):
    running, position = RunningPool(strategy, 1, blocks[0].shape[1]), 0
    for block in blocks:
        running.add(0, convert(block), position)
        position += len(block)
    return running.read()[0]


def _blocks(first_column: list[float]) -> list[np.ndarray]:
    """One-token blocks: column 0 as given, columns 1..7 ordinary values whose float32 and float64 sums differ."""
    rng = np.random.default_rng(66)
    rest = rng.standard_normal((len(first_column), 7)).astype(np.float32) * 1000
    rows = np.concatenate([np.array(first_column, np.float32)[:, None], rest], axis=1)
    return [row[None, :] for row in rows]


@pytest.mark.parametrize("strategy", ["mean", "weightedmean"])
@pytest.mark.parametrize("first", [np.nan, np.inf, 3.0e38])
def test_the_other_columns_keep_their_float32_bits(strategy, first):
    """A NaN, an inf or an overflow in one column of a unit: merged s66-stream carried the whole unit on in
    float64, so its other columns (ordinary values) lost the float32 running sum's bits that the base commit and
    `pool` (which redoes only values that are not finite) keep. Now they keep them; column 0 is the float64
    loop's (NaN, inf, or the finite mean of 3e38, 3e38, -3e38, ...)."""
    column = [first, 3.0e38, -3.0e38, 5.0, 7.0, -2.0]
    blocks = _blocks(column)
    weighted = strategy == "weightedmean"
    weights = np.arange(1, len(blocks) + 1, dtype=np.float64) if weighted else np.ones(len(blocks))
    with np.errstate(over="ignore", invalid="ignore"):
        sums = float32_running(blocks, weighted)
        expected64 = (weights * np.array(column, np.float64)).sum() / weights.sum()
    for convert in (np.asarray, torch.from_numpy):
        with np.errstate(over="ignore", invalid="ignore"):
            got = np.asarray(_streamed(strategy, blocks, convert), np.float32)
        assert got[1:].tobytes() == (sums[1:] / np.float32(weights.sum())).tobytes(), convert
        np.testing.assert_allclose(got[0], expected64, rtol=1e-6)  # (NaN == NaN here)


def test_a_mean_sqrt_n_past_the_range_reads_without_a_cast_warning():
    """mean/√n of two tokens of 3e38 is 4.2e38: inf in float32, its true value (as `pool` gives). Reading cast
    the float64 sum back with numpy's "overflow encountered in cast" RuntimeWarning, which `pool` (and the base
    commit) do not print."""
    blocks = [np.full((1, 2), 3.0e38, np.float32)] * 2
    running = RunningPool("mean_sqrt_len_tokens", 1, 2)
    with np.errstate(over="ignore"):
        for i, block in enumerate(blocks):
            running.add(0, block, i)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = running.read()
    assert np.isinf(got).all() and (got > 0).all()  # 6e38/√2 in float64 is past float32's 3.4e38


def test_jax_without_x64_is_not_widened():
    """JAX without jax_enable_x64 has no float64: the merged float64 sum was float32 again (inf) and printed
    JAX's "Explicitly requested dtype float64" UserWarning on every add. Now skipped as `pool` skips it."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    assert not jax.config.jax_enable_x64
    running = RunningPool("mean", 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(3):
            running.add(0, jnp.full((1, 2), 3.0e38, jnp.float32), i)
        got = running.read()
    assert got.dtype == jnp.float32
    expected = jnp.mean(jnp.full((3, 2), 3.0e38, jnp.float32), axis=0)  # JAX's own float32 mean: inf
    np.testing.assert_array_equal(np.asarray(got)[0], np.asarray(expected))
