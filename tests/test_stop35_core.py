"""Core corners found in hunt 35-d, each against an independent float64 loop; each failed before its fix."""

from __future__ import annotations

import re

import numpy as np
import pytest
from backends import counting_kernels, mask_layout
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool

from tokenpool import pool, pool_packed
from tokenpool.core import fast


@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 6),
    length=st.integers(1, 12),
    dim=st.sampled_from([1, 3, 16]),
    layout=st.sampled_from(["right", "left", "holes"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    strategy=st.sampled_from(["mean", "max", "weightedmean"]),
    packed=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_read_only_states_take_the_compiled_kernels_with_the_same_bits(
    seed, rows, length, dim, layout, dtype, strategy, packed
):
    """A read-only table (np.load(mmap_mode="r"), np.frombuffer) was refused by `_compiled` (the kernels were
    typed for writable tables) and took the slower numpy kernels; now both copies run the compiled kernel, with
    identical bits, and both match a float64 loop. Padding holds NaN."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(seed)
    mask = mask_layout(rng, rows, length, layout)
    hidden = rng.standard_normal((rows, length, dim)).astype(dtype)
    hidden[~mask] = np.nan
    tokens, offsets = hidden[mask], np.concatenate(([0], np.cumsum(mask.sum(1))))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(fast, "COMPILED_ELEMENTS", 1)
        calls = counting_kernels(monkeypatch)
        results = []
        for writable in (True, False):
            table = (tokens if packed else hidden).copy()
            table.setflags(write=writable)
            results.append(pool_packed(table, offsets, strategy) if packed else pool(table, mask, strategy))
    kernel = {"mean": "sum_rows", "max": "max_rows", "weightedmean": "weighted_rows"}[strategy]
    assert calls == ([kernel] * 2 if mask.any() else []), calls
    np.testing.assert_array_equal(results[0], results[1])
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(results[1], reference_pool(hidden, mask, strategy), rtol=tolerance, atol=tolerance)


def test_memory_mapped_states_take_the_compiled_kernels(tmp_path, monkeypatch):
    """np.load(mmap_mode="r") and np.frombuffer: the compiled kernels, the writable copy's bits."""
    pytest.importorskip("numba")
    monkeypatch.setattr(fast, "COMPILED_ELEMENTS", 1)
    hidden = np.random.default_rng(3).standard_normal((3, 7, 5)).astype(np.float32)
    mask = np.array([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1]], dtype=bool)
    np.save(tmp_path / "h.npy", hidden)
    mapped = np.load(tmp_path / "h.npy", mmap_mode="r")
    buffered = np.frombuffer(hidden.tobytes(), dtype=np.float32).reshape(hidden.shape)
    calls = counting_kernels(monkeypatch)
    expected = pool(hidden, mask, ["mean", "max", "weightedmean"])
    for table in (mapped, buffered):
        assert not table.flags.writeable
        np.testing.assert_array_equal(pool(table, mask, ["mean", "max", "weightedmean"]), expected)
    assert calls == ["sum_rows", "max_rows", "weighted_rows"] * 3
    reference = np.concatenate([reference_pool(hidden, mask, s) for s in ("mean", "max", "weightedmean")], axis=1)
    np.testing.assert_allclose(expected, reference, rtol=1e-5, atol=1e-6)


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


INTEGER_TYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
NOT_WHOLE = [True, False, np.bool_(True), 2.0, np.float32(2.0), np.float64(3.0), "2", None]


@given(st.sampled_from(INTEGER_TYPES), st.integers(0, 100))
def test_whole_number_rule_accepts_numpy_integers(kind, value):
    """errors.is_int refused np.int64(3) while `pool`'s options accepted it (inline `numbers.Integral`
    checks): one rule now, a Python int or any numpy integer, checked against Python's own int()."""
    from tokenpool.errors import check_int, is_int

    given_value = kind(value)
    assert is_int(given_value)
    assert check_int(given_value, "n", minimum=0) == int(str(value)) and type(check_int(given_value, "n", minimum=0)) is int
    if value >= 1:
        fast.set_num_threads(given_value)
        try:
            assert fast.get_num_threads() == value and type(fast.get_num_threads()) is int
        finally:
            fast.set_num_threads(None)
    else:
        with pytest.raises(ValueError, match=re.escape(f"threads must be a positive int or None, got {given_value!r}")):
            fast.set_num_threads(given_value)


@pytest.mark.parametrize("value", NOT_WHOLE, ids=repr)
def test_whole_number_rule_refuses_bools_and_floats(value):
    """A bool (Python's or numpy's) and a float, even an integral one, are no count: every whole-number check
    refuses them, naming the value."""
    from tokenpool.core.chunking import TokenChunks
    from tokenpool.core.pooling import check_truncate_dim
    from tokenpool.core.sparse import check_sparse_options
    from tokenpool.core.streaming import RunningPool
    from tokenpool.errors import OptionError, check_int, is_int

    assert not is_int(value)
    shown = re.escape(repr(value))
    with pytest.raises(ValueError, match=f"n must be a positive int, got {shown}"):
        check_int(value, "n")
    if value is None:
        return
    with pytest.raises(ValueError, match=f"threads must be a positive int or None, got {shown}"):
        fast.set_num_threads(value)
    with pytest.raises(TypeError, match=f"truncate_dim must be an int, got {shown}"):
        check_truncate_dim(value)
    with pytest.raises(ValueError, match=f"top_k must be a positive int .* got {shown}"):
        check_sparse_options(value, 0.0)
    with pytest.raises(ValueError, match=f"units must be an int >= 0, got {shown}"):
        RunningPool("mean", value, 2)
    with pytest.raises(ValueError, match=f"position must be an int >= 0, got {shown}"):
        RunningPool("mean", 1, 2).add(0, np.zeros((1, 2)), value)
    with pytest.raises(OptionError, match=f"chunk size must be an int >= 1, got {shown}"):
        TokenChunks(value)
    with pytest.raises(TypeError, match="prompt_length must (be an int|hold integers)"):
        pool(np.zeros((1, 2, 2)), np.ones((1, 2)), "mean", prompt_length=value)


@given(st.sampled_from(INTEGER_TYPES), st.integers(0, 3), st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_numpy_integer_options_pool_as_python_ints(kind, prompt, size):
    """Every whole-number option of the core takes numpy integers with the Python int's result: prompt_length,
    truncate_dim, top_k, chunk specs (stored as Python ints) and RunningPool's units and positions."""
    from tokenpool.core.chunking import TokenChunks
    from tokenpool.core.sparse import sparsify
    from tokenpool.core.streaming import RunningPool

    rng = np.random.default_rng(prompt * 7 + size)
    hidden = rng.standard_normal((2, 5, 4))
    mask = np.ones((2, 5), dtype=bool)
    np.testing.assert_array_equal(
        pool(hidden, mask, "mean", prompt_length=kind(prompt)), pool(hidden, mask, "mean", prompt_length=prompt)
    )
    expected = np.stack([hidden[b, prompt:].mean(0) if prompt < 5 else np.zeros(4) for b in range(2)])
    np.testing.assert_allclose(pool(hidden, mask, "mean", prompt_length=kind(prompt)), expected, atol=1e-12)
    assert sparsify(hidden[:, 0], top_k=kind(size)).indptr.tolist() == sparsify(hidden[:, 0], top_k=size).indptr.tolist()
    chunks = TokenChunks(kind(size + 1), kind(size))
    assert (type(chunks.size), type(chunks.overlap), str(chunks)) == (int, int, f"tokens:{size + 1}:{size}")
    running = RunningPool("mean", kind(2), kind(4), dtype="float64")
    running.add(kind(1), hidden[1, prompt:], kind(prompt))
    np.testing.assert_allclose(running.read()[1], expected[1], atol=1e-12)


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
