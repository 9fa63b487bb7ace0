"""Stop 54 (the lead's changes): the benchmark's cache-line flush uses ``clflushopt`` where the CPU lists it
(``clflush`` took 345 ms per flush of the arrays on a Xeon VM, ``clflushopt`` 5 ms)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool.bench import flush as flush_module

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse2 {extra} avx512f
bugs\t\t: spectre_v1 clflushopt_is_not_a_flag_here

processor\t: 1
flags\t\t: fpu vme sse2 {extra} avx512f
"""


def test_the_flush_instruction_is_clflushopt_only_where_the_flags_list_it(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra="clflush clflushopt clwb"))
    assert flush_module.instruction(info) == "clflushopt"
    info.write_text(CPUINFO.format(extra="clflush"))  # (the "bugs" line names it, but not as a flag)
    assert flush_module.instruction(info) == "clflush"
    info.write_text(CPUINFO.format(extra="clflushoptx"))  # whole words only
    assert flush_module.instruction(info) == "clflush"
    assert flush_module.instruction(tmp_path / "missing") == "clflush"


@pytest.mark.parametrize("name", sorted(flush_module.INTRINSICS))
def test_each_flush_instruction_reaches_the_data_and_leaves_it_alone(name: str) -> None:
    """Both instructions compile and run over views at any offset (clflushopt only where this CPU lists it)."""
    if flush_module.available() is not None:
        pytest.skip(flush_module.available())
    if name == "clflushopt" and flush_module.instruction() != "clflushopt":
        pytest.skip("this CPU does not list clflushopt")
    flush_bytes = flush_module.compiled(name)[1]
    values = np.arange(100_003, dtype=np.float32)
    raw = values.view(np.uint8)
    for start, size in ((0, raw.size), (1, 63), (63, 65), (5, 0), (7, raw.size - 7)):
        flush_bytes(raw[start : start + size])
    assert np.array_equal(values, np.arange(100_003, dtype=np.float32))


def test_the_flusher_uses_the_instruction_the_cpu_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    if flush_module.available() is not None:
        pytest.skip(flush_module.available())
    listed = flush_module.instruction() == "clflushopt"  # (elsewhere it is an illegal instruction)
    asked: list[str] = []
    real = flush_module.compiled

    def spy(name: str = "clflush"):  # type: ignore[no-untyped-def]
        asked.append(name)
        return real(name)

    monkeypatch.setattr(flush_module, "compiled", spy)
    monkeypatch.setattr(flush_module, "instruction", lambda: "clflush")
    flush_module.flusher([np.zeros(10)])()
    assert asked == ["clflush"]
    if listed:
        monkeypatch.setattr(flush_module, "instruction", lambda: "clflushopt")
        flush_module.flusher([np.zeros(10)])()
        assert asked == ["clflush", "clflushopt"]


# -- the max kernels learn of a NaN from the CPU's invalid-operation flag (x86-64) ----------------------------

X86 = platform.machine().lower() in ("x86_64", "amd64")


def _kernels():  # type: ignore[no-untyped-def]
    pytest.importorskip("numba")
    from tokenpool.core import compiled

    kernels = compiled.kernels()
    if kernels is None:
        pytest.skip("no compiled kernels here")
    return kernels


def test_the_max_kernels_read_the_flag_on_x86_and_compare_elsewhere() -> None:
    assert _kernels().nan_check == ("flag" if X86 else "compare")


def _token_order_max(table: np.ndarray, start: int, count: int) -> np.ndarray:
    """numpy's maximum token after token (a NaN wins, the first one; of equal values the first), in float64-free
    plain numpy: the reference the compiled kernels must match bit for bit."""
    kept = table[start].copy()
    for token in table[start + 1 : start + count]:
        kept = np.where((kept >= token) | (kept != kept), kept, token)
    return kept


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    width=st.sampled_from([1, 5, 16, 37, 64]),
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    byte_offset=st.sampled_from([0, 8, 16, 40]),
    seed=st.integers(0, 2**32 - 1),
    nans=st.integers(0, 2),
)
def test_max_rows_with_a_nan_anywhere_give_numpy_maximum(dtype, width, counts, byte_offset, seed, nans) -> None:  # type: ignore[no-untyped-def]
    """A NaN in a group's vector lanes, its scalar lanes, the tokens after the last whole group, or the line two
    tokens share (tables off a 64-byte boundary): the row comes out as numpy's token-order maximum, bit for bit."""
    kernels = _kernels()
    rng = np.random.default_rng(seed)
    total = sum(counts)
    values = rng.standard_normal(total * width).astype(dtype)
    values[rng.integers(0, max(values.size, 1), 2)[: values.size > 0 and 2]] = np.inf
    for _ in range(nans if values.size else 0):
        values[rng.integers(0, values.size)] = np.nan
    raw = np.zeros(values.nbytes + 128, np.uint8)
    begin = (-raw.ctypes.data) % 64 + byte_offset
    table = raw[begin : begin + values.nbytes].view(dtype).reshape(total, width)
    table[:] = values.reshape(total, width)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    sizes = np.asarray(counts, np.int64)
    out = np.full((len(counts), width), 7, dtype)
    kernels.max_rows(table, starts, sizes, np.arange(len(counts), dtype=np.int64), out)
    for row, (start, count) in enumerate(zip(starts, sizes, strict=True)):
        expected = _token_order_max(table, start, count) if count else np.zeros(width, dtype)
        assert out[row].tobytes() == expected.tobytes(), (row, start, count)


def _reports_each_nan(loop, dtype) -> bool:  # type: ignore[no-untyped-def]
    """Whether a token loop says it skipped a NaN wherever one sits in 8 tokens of width 37 (a vector body and
    scalar lanes), and never of a NaN-free table (an infinity included)."""
    table = np.arange(37 * 8, dtype=dtype)
    table[5] = np.inf
    if loop(np.full(37, -np.inf, dtype), table, 0, 37, 8, False):
        return False
    for position in range(0, table.size, 7):
        bad = table.copy()
        bad[position] = np.nan
        if not loop(np.full(37, -np.inf, dtype), bad, 0, 37, 8, False):
            return False
    return True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_flag_loop_reports_a_nan_wherever_it_sits_and_never_in_clean_data(dtype) -> None:  # type: ignore[no-untyped-def]
    """The loop the x86-64 kernels run (compiled as they compile it), read through the CPU's flag; the reference
    check fails loops that miss a NaN, report one in clean data, or are blind to the last tokens."""
    kernels = _kernels()
    if kernels.nan_check != "flag":
        pytest.skip("the compare loop runs here")
    from tokenpool.core import compiled

    assert _reports_each_nan(compiled._max_of, dtype)
    assert not _reports_each_nan(lambda acc, flat, offset, stride, count, exact: False, dtype)
    assert not _reports_each_nan(lambda acc, flat, offset, stride, count, exact: True, dtype)
    blind = lambda acc, flat, offset, stride, count, exact: bool(np.isnan(flat[: 37 * 4]).any())  # noqa: E731
    assert not _reports_each_nan(blind, dtype)


@pytest.mark.skipif(not X86, reason="MXCSR is x86-64's")
def test_a_callers_invalid_flag_survives_the_max_kernel() -> None:
    """The flagged loop clears the invalid flag for its own use and puts the caller's flags back."""
    kernels = _kernels()
    if kernels.nan_check != "flag":
        pytest.skip("the compare loop runs here")
    import numba

    from tokenpool.core import compiled

    read, write = compiled._status, compiled._set_status

    @numba.njit
    def flags_after(sink, table, starts, counts, rows, out):  # type: ignore[no-untyped-def]
        write(read() & ~1)
        sink[1] = sink[0] * 0.0  # inf * 0: an invalid operation, which sets the flag (stored before the read)
        before = read() & 1
        kernels_max(table, starts, counts, rows, out)
        return before, read() & 1

    kernels_max = kernels.max_rows
    table = np.arange(64 * 12, dtype=np.float32).reshape(12, 64)
    index = np.zeros(1, np.int64)
    out = np.zeros((1, 64), np.float32)
    sink = np.array([np.inf, 0.0])
    before, after = flags_after(sink, table, index, np.array([12]), index, out)
    assert np.isnan(sink[1]) and before == 1 and after == 1
    assert np.array_equal(out[0], table.max(axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compare_loop_gives_the_same_maximum_and_reports_a_nan(dtype) -> None:  # type: ignore[no-untyped-def]
    """The loop that runs off x86-64 (or where the flag loop fails `max_sees_nan`): compiled here on purpose,
    since x86 never runs it."""
    _kernels()
    import numba

    from tokenpool.core import compiled

    loop = numba.njit(compiled._max_tokens)
    assert _reports_each_nan(loop, dtype)
    rng = np.random.default_rng(5)
    for count in (0, 7, 8, 9, 16, 23):
        table = rng.standard_normal((max(count, 1), 37)).astype(dtype)
        clean = np.full(37, -np.inf, dtype)
        assert not loop(clean, table.reshape(-1), 0, 37, count, False)
        if count:
            assert clean.tobytes() == _token_order_max(table, 0, count).tobytes()
            table[count - 1, 3] = np.nan  # in a whole group (count a multiple of 8): skipped and reported
            acc = np.full(37, -np.inf, dtype)  # after the groups: folded one by one, NaN-aware
            reported = loop(acc, table.reshape(-1), 0, 37, count, False)
            assert reported == (count % 8 == 0)
            if not reported:
                assert acc.tobytes() == _token_order_max(table, 0, count).tobytes()


def test_the_end_to_end_nan_check_fails_a_max_kernel_blind_to_nan_and_passes_the_built_one() -> None:
    kernels = _kernels()
    from tokenpool.core import compiled

    def blind(table, starts, counts, rows, out):  # type: ignore[no-untyped-def]
        out[:] = np.fmax.reduce(table[starts[0] : starts[0] + counts[0]], axis=0)  # (fmax skips NaN)

    def exact(table, starts, counts, rows, out):  # type: ignore[no-untyped-def]
        out[:] = np.maximum.reduce(table[starts[0] : starts[0] + counts[0]], axis=0)

    assert not compiled.max_sees_nan(blind)
    assert compiled.max_sees_nan(exact)
    assert compiled.max_sees_nan(kernels.max_rows)


def test_a_build_whose_max_kernel_misses_a_nan_falls_back_to_the_compare_loop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`_build` tries the flag-read loop with numba's cache, then without, then the compare loop compiled afresh."""
    pytest.importorskip("numba")
    from tokenpool.core import compiled

    tried: list[tuple[bool, bool]] = []

    class Stub:
        def __init__(self, numba, cache, *, flag=True):  # type: ignore[no-untyped-def]
            tried.append((cache, flag))
            if flag:
                raise RuntimeError("the compiled max kernel (flag loop) missed a NaN")
            self.nan_check = "compare"

    monkeypatch.setattr(compiled, "Kernels", Stub)
    assert compiled._build().nan_check == "compare"
    assert tried == [(True, True), (False, True), (False, False)]
