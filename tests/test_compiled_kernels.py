"""`core/compiled.py`: numba's row-group kernels give numpy's kernels' results, run only where they apply, and
their absence (no numba, or a numba that fails to import) leaves the numpy kernels in charge."""

from __future__ import annotations

import builtins
import importlib.util

import numpy as np
import pytest
from backends import counting_kernels, fast_kernels, mask_layout
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool

from tokenpool import pool, pool_packed
from tokenpool.core import compiled, fast

STRATEGIES = ["mean", "max", "mean_sqrt_len_tokens", "weightedmean", "splade"]


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    fast.set_num_threads(None)


def _nan_padded(seed: int, rows: int, length: int, dim: int, layout: str, dtype) -> tuple:
    """(mask, hidden states whose padding holds NaN, the packed tokens, their offsets) of a random batch."""
    rng = np.random.default_rng(seed)
    mask = mask_layout(rng, rows, length, layout)
    hidden = rng.standard_normal((rows, length, dim)).astype(dtype)
    hidden[~mask] = np.nan
    return mask, hidden, hidden[mask], np.concatenate(([0], np.cumsum(mask.sum(1))))


def _loop(hidden: np.ndarray, mask: np.ndarray, strategy: str) -> np.ndarray:
    """float64 loop reference (no prompt): empty rows are zeros."""
    out = np.zeros((hidden.shape[0], hidden.shape[2]))
    for b in range(hidden.shape[0]):
        real = hidden[b][mask[b]].astype(np.float64)
        n = len(real)
        if n == 0:
            continue
        if strategy == "mean":
            out[b] = real.sum(0) / n
        elif strategy == "mean_sqrt_len_tokens":
            out[b] = real.sum(0) / np.sqrt(n)
        elif strategy == "weightedmean":
            weights = np.arange(1, n + 1, dtype=np.float64)
            out[b] = (weights[:, None] * real).sum(0) / weights.sum()
        elif strategy == "max":
            out[b] = real.max(0)
        else:  # splade, max reduction
            out[b] = np.log1p(np.maximum(real, 0)).max(0)
    return out


@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 9),
    length=st.integers(1, 40),
    dim=st.sampled_from([1, 7, 64, 385]),
    layout=st.sampled_from(["right", "left", "holes"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    threads=st.sampled_from([1, 2]),
    packed=st.booleans(),
)
def test_compiled_kernels_give_the_numpy_kernels_bits(seed, rows, length, dim, layout, dtype, threads, packed):
    """Sums run column by column, token after token, in both: the same bits (except weightedmean, where numpy's
    einsum may fuse its multiply-add, and a single column, which einsum sums in another order); and both match a
    float64 loop. Padding holds NaN."""
    pytest.importorskip("numba")
    mask, hidden, tokens, offsets = _nan_padded(seed, rows, length, dim, layout, dtype)
    saved = fast._PARALLEL_ELEMENTS
    fast._PARALLEL_ELEMENTS = 1  # the thread groups even for small inputs
    fast.set_num_threads(threads)
    try:
        results = {}
        for kernels in ("numpy", "numpy-plain"):
            with fast_kernels(kernels):
                for strategy in STRATEGIES:
                    run = pool_packed(tokens, offsets, strategy) if packed else pool(hidden, mask, strategy)
                    results[kernels, strategy] = run
    finally:
        fast._PARALLEL_ELEMENTS = saved
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for strategy in STRATEGIES:
        got, numpy_kernels = results["numpy", strategy], results["numpy-plain", strategy]
        assert got.dtype == dtype
        if strategy == "weightedmean" or (dim == 1 and strategy != "max"):
            np.testing.assert_allclose(got, numpy_kernels, rtol=tolerance, atol=tolerance)
        else:
            np.testing.assert_array_equal(got, numpy_kernels)
        np.testing.assert_allclose(got, _loop(hidden, mask, strategy), rtol=tolerance, atol=tolerance)


def test_compiled_kernels_run_for_large_inputs_only(monkeypatch):
    """From `COMPILED_ELEMENTS` elements read (the numba import is not repaid below), on numpy arrays and on
    float32 torch CPU tensors (max: their sums take torch's embedding_bag); half precision and non-contiguous tables keep the numpy kernels."""
    pytest.importorskip("numba")
    torch = pytest.importorskip("torch")
    calls = counting_kernels(monkeypatch)
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((4, 64, 32)).astype(np.float32)
    mask = np.ones((4, 64), dtype=bool)
    monkeypatch.setattr(fast, "COMPILED_ELEMENTS", hidden.size + 1)
    pool(hidden, mask, ["mean", "max", "weightedmean"])
    assert calls == []
    monkeypatch.setattr(fast, "COMPILED_ELEMENTS", hidden.size)
    pool(hidden, mask, ["mean", "max", "weightedmean"])
    pool(torch.from_numpy(hidden), torch.from_numpy(mask), "max")  # (torch's sums take embedding_bag)
    assert calls == ["sum_rows", "max_rows", "weighted_rows", "max_rows"]
    pool(hidden.astype(np.float16), mask, "mean")  # converted chunk by chunk
    pool(np.swapaxes(np.swapaxes(hidden, 0, 1).copy(), 0, 1), mask, "mean")  # no flat view
    assert len(calls) == 4


def test_compiled_max_propagates_nan_and_inf_of_real_tokens():
    pytest.importorskip("numba")
    hidden = np.zeros((2, 3, 4), dtype=np.float32)
    hidden[0, 1] = [np.nan, np.inf, -np.inf, 1.0]
    hidden[1, 2] = [np.nan, 0.0, 0.0, 0.0]  # padding: never read
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    with fast_kernels("numpy"):
        got = pool(hidden, mask, ["max", "mean"])
    assert np.isnan(got[0, 0]) and got[0, 1] == np.inf and got[0, 2] == 0 and got[0, 3] == 1
    assert np.isnan(got[0, 4]) and got[0, 5] == np.inf and got[0, 6] == -np.inf
    np.testing.assert_allclose(got[0, 7], 1 / 3, rtol=1e-6)
    np.testing.assert_array_equal(got[1], np.zeros(8))


@pytest.mark.parametrize("how", ["missing", "broken"])
def test_without_a_working_numba_the_numpy_kernels_run(monkeypatch, how):
    """No numba, or one whose import fails (e.g. built for another numpy): `kernels()` is None, results right."""
    monkeypatch.setattr(compiled, "_tried", False)
    monkeypatch.setattr(compiled, "_kernels", None)
    if how == "missing":
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    else:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
        real_import = builtins.__import__

        def failing(name, *args, **kwargs):
            if name == "numba":
                raise ImportError("numba built for another numpy")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", failing)
    assert compiled.kernels() is None
    hidden = np.random.default_rng(1).standard_normal((3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    with fast_kernels("numpy"):
        got = pool(hidden, mask, "mean")
    np.testing.assert_allclose(got, _loop(hidden, mask, "mean"), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------- read-only states


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
    identical bits, and both match a float64 loop. Read-only int64 offsets (a packed plan's starts are a view
    of them) crashed the kernel call's signature match. Padding holds NaN."""
    pytest.importorskip("numba")
    mask, hidden, tokens, offsets = _nan_padded(seed, rows, length, dim, layout, dtype)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(fast, "COMPILED_ELEMENTS", 1)
        calls = counting_kernels(monkeypatch)
        results = []
        for writable in (True, False):  # (the offsets and the mask read-only too: pyarrow's, np.load's)
            table, cu, keep = (tokens if packed else hidden).copy(), offsets.copy(), mask.copy()
            for array in (table, cu, keep):
                array.setflags(write=writable)
            results.append(pool_packed(table, cu, strategy) if packed else pool(table, keep, strategy))
    kernel = {"mean": "sum_rows", "max": "max_rows", "weightedmean": "weighted_rows"}[strategy]
    holes = any(row.any() and np.flatnonzero(row)[-1] - np.flatnonzero(row)[0] + 1 != row.sum() for row in mask)
    compiled_route = mask.any() and (packed or not holes)  # a padded batch with holes takes the numpy kernels
    assert calls == ([kernel] * 2 if compiled_route else []), calls
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


@given(
    seed=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 15),
    dim=st.sampled_from([3, 8, 16, 24, 48, 100, 768]),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.sampled_from(["none", "some", "only"]),
    longest=st.sampled_from([8, 40]),
)
@settings(max_examples=100, deadline=None)
def test_compiled_kernels_from_a_64_byte_boundary_keep_the_token_order_bits(seed, offset, dim, dtype, specials,
                                                                            longest):  # fmt: skip
    """Where a row is whole 64-byte lines, the compiled kernels fold each token from its first 64-byte boundary
    on and the line shared by two tokens as one vector: tables starting at any element offset (rows of ``dim``
    columns; 3, 100 and, in float32, 8 and 24 are not whole lines) give the numpy kernels' bits for mean,
    mean/√n, and the token-order maximum for max (numpy's SIMD maximum may pick the other of ±0), NaN, ±inf and
    ±0 values included (weightedmean within one rounding). Rows up to 40 tokens: the kernels fold eight tokens
    per pass, then one by one, and a max row that meets a NaN or an infinity runs again one token per pass."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, longest + 1, 5)
    base = rng.standard_normal(int(lengths.sum()) * dim + 16).astype(dtype)
    if specials == "some":
        base[rng.integers(0, base.size, 6)] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0], 6)
    elif specials == "only":  # ±0 in one column of neighbouring tokens: which one max keeps shows
        base = rng.choice(np.array([0.0, -0.0, 0.0, -0.0, 1.0, np.nan], dtype), base.size)
    tokens = base[offset : offset + int(lengths.sum()) * dim].reshape(-1, dim)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    strategies = ("mean", "mean_sqrt_len_tokens", "max", "weightedmean")
    with fast_kernels("numpy"):
        got = {s: pool_packed(tokens, offsets, s) for s in strategies}
    with fast_kernels("numpy-plain"):
        expected = {s: pool_packed(tokens, offsets, s) for s in strategies}
    for strategy in strategies[:2]:
        assert got[strategy].tobytes() == expected[strategy].tobytes(), strategy
    maxima = np.zeros((len(lengths), dim), dtype)
    for row, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        if stop > start:
            maxima[row] = tokens[start]
        for token in tokens[start + 1 : stop]:  # (per column, as the loop `kept >= value or kept != kept`)
            kept = maxima[row]
            maxima[row] = np.where((kept >= token) | (kept != kept), kept, token)
    assert got["max"].tobytes() == maxima.tobytes()
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got["weightedmean"], expected["weightedmean"], rtol=tolerance, atol=tolerance)


def _table_at(tokens: np.ndarray, byte_offset: int) -> np.ndarray:
    """A copy of ``tokens`` starting ``byte_offset`` bytes past a 64-byte boundary."""
    raw = np.zeros(tokens.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + byte_offset
    table = raw[start : start + tokens.nbytes].view(tokens.dtype).reshape(tokens.shape)
    table[:] = tokens
    assert table.ctypes.data % 64 == byte_offset
    return table


@pytest.mark.parametrize("byte_offset", [0, 32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_of_a_column_meeting_two_nans_keeps_the_first_nan(dtype, byte_offset):
    """Column [inf, -inf, nan] over a row's 3 tokens: inf + -inf is x86's default NaN (sign bit set), the later
    np.nan has it clear. Folded token after token (``(0 + t0 + t1) + t2``, as numpy's loop) the first NaN stays,
    in every column: also in a row's last columns, which the kernels fold one by one after the loop (a ``+=``
    there let LLVM swap the operands and return the later NaN)."""
    pytest.importorskip("numba")
    width = 64 // np.dtype(dtype).itemsize
    tokens = np.ones((3, width), dtype)
    tokens[0], tokens[1], tokens[2] = np.inf, -np.inf, np.nan
    table = _table_at(tokens, byte_offset)
    with fast_kernels("numpy"), np.errstate(invalid="ignore"):
        got = pool_packed(table, np.array([0, 3]), "mean")[0]
        expected = ((np.zeros(width, dtype) + table[0]) + table[1]) + table[2]  # the per-token order
    assert np.isnan(got).all() and np.isnan(expected).all()
    assert "".join("-" if s else "+" for s in np.signbit(got)) == "".join("-" if s else "+" for s in np.signbit(expected))


@pytest.mark.parametrize("name", ["sum_rows", "max_rows", "weighted_rows"])
@pytest.mark.parametrize("byte_offset", [16, 32, 48])
def test_a_table_of_width_0_writes_nothing(name, byte_offset):
    """A table of width 0 is not "whole 64-byte lines" (0 % lanes == 0): the kernels read and write nothing
    (they wrote around empty output rows and corrupted the heap through `pool_packed` on
    ``np.zeros((40, 16), np.float32)[:, 4:4]`` with the compiled kernels for any size). The output rows are
    empty views into a guard buffer, which must stay untouched."""
    pytest.importorskip("numba")
    kernels = compiled.kernels()
    raw = np.zeros(1024, np.uint8)
    start = (-raw.ctypes.data) % 64 + byte_offset
    table = np.lib.stride_tricks.as_strided(raw[start:].view(np.float32), shape=(5, 0), strides=(0, 4))
    assert table.flags.c_contiguous and table.ctypes.data % 64 == byte_offset
    guard = np.full(64, 7.0, np.float32)
    out = np.lib.stride_tricks.as_strided(guard[16:], shape=(2, 0), strides=(0, 4))
    starts, counts, rows = np.array([0, 2]), np.array([2, 3]), np.array([0, 1])
    ones = np.ones(2, np.float32)
    ranks = np.arange(1, 6, dtype=np.float32)
    extra = {"sum_rows": (ones,), "max_rows": (), "weighted_rows": (ranks, np.zeros(2, np.int64), ones)}
    getattr(kernels, name)(table, starts, counts, rows, *extra[name], out)
    assert np.flatnonzero(guard != 7).tolist() == []


@pytest.mark.parametrize("name", ["sum_rows", "max_rows", "weighted_rows"])
def test_an_empty_row_given_to_a_kernel_is_zeros_and_reads_nothing(name):
    """The fast paths hand every row to the kernels, empty ones too (`RowPlan._compiled_rows`): an empty one gives
    zeros (not -inf, not its neighbours' values) and leaves the other rows as they are."""
    pytest.importorskip("numba")
    kernels = compiled.kernels()
    table = np.arange(1, 49, dtype=np.float32).reshape(3, 16)
    starts, counts, rows = np.array([0, 1, 3]), np.array([1, 0, 0]), np.array([0, 1, 2])
    out = np.full((3, 16), 7.0, np.float32)
    ones, ranks = np.ones(3, np.float32), np.arange(1, 5, dtype=np.float32)
    extra = {"sum_rows": (ones,), "max_rows": (), "weighted_rows": (ranks, np.zeros(3, np.int64), ones)}
    getattr(kernels, name)(table, starts, counts, rows, *extra[name], out)
    assert np.array_equal(out[0], table[0]) and not out[1:].any()


@pytest.mark.parametrize("byte_offset", [0, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_max_of_rows_without_nan_keeps_infinities_and_the_first_of_equal_zeros(dtype, byte_offset):
    """Rows with no NaN take the compiled max's fast loop (eight tokens per pass, a maximum that skips NaN):
    values near the float range and ±inf come out as they are, and of ±0 in a column the first one stays."""
    pytest.importorskip("numba")
    big = np.finfo(dtype).max
    rng = np.random.default_rng(7)
    tokens = (rng.uniform(-1.0, 1.0, (19, 64)) * big).astype(dtype)
    tokens[:, 5] = np.where(np.arange(19) % 2, -0.0, 0.0)  # 0.0 first: kept
    tokens[:, 6] = np.where(np.arange(19) % 2, 0.0, -0.0)  # -0.0 first: kept
    tokens[11, 7], tokens[3, 8], tokens[:, 9] = np.inf, -np.inf, -np.inf
    expected = tokens.max(axis=0)
    expected[5], expected[6] = 0.0, -0.0
    with fast_kernels("numpy"):
        got = pool_packed(_table_at(tokens, byte_offset), np.array([0, 19]), "max")
    assert got[0].tobytes() == expected.tobytes()
