"""`tokenpool bench` on tiny shapes: the report has every row, ratio and (from benchmarks/bench_pooling.py, which
checks issue 3's targets) target; bad options exit 2."""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tokenpool.bench import flush as flush_module
from tokenpool.bench import pooling as bench
from tokenpool.bench.flush import flusher
from tokenpool.bench.harness import CompiledRead, ParallelRead, Timing, openmp_wait, time_candidates
from tokenpool.bench.pooling import PICKS, SPLADE_SUM, STRATEGIES
from tokenpool.core import compiled

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from bench_pooling import main  # noqa: E402  (the script: tokenpool bench + the targets)

TINY = ["--batch", "3", "--length", "6", "--dim", "4", "--repeats", "2", "--warmup", "1", "--settle-ms", "0"]
QUICK = [*TINY, "--no-bandwidth", "--no-scaling"]  # no 128 MiB read, no second thread count


def _logged(calls: list[str], name: str, seconds: float) -> tuple[Timing, Any]:
    """A candidate named ``name`` whose call appends its name to ``calls`` and sleeps ``seconds``."""

    def call() -> None:
        calls.append(name)
        time.sleep(seconds)

    return Timing("tokenpool", "numpy", "packed", name), call


@pytest.mark.parametrize("settle_ms", [0.0, 30.0])
def test_warm_blocks_settle_untimed_before_their_timed_calls(monkeypatch, settle_ms):
    """Each warm block runs untimed for at least ``settle_ms`` (at least one call), then exactly its timed calls.
    The harness's clock is one that each call moves on by 4 ms: 30 ms of settling is 8 calls, exactly, however
    loaded the machine (real 4 ms sleeps ran long there, and fewer than the 6 calls once asserted fit 30 ms)."""
    from types import SimpleNamespace

    from tokenpool.bench import harness

    now = [1000.0]
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    calls: list[str] = []

    def ticking(name: str) -> tuple[Timing, Any]:
        def call() -> None:
            calls.append(name)
            now[0] += 0.004

        return Timing("tokenpool", "numpy", "packed", name), call

    timings = time_candidates(
        [ticking("a"), ticking("b")], device="cpu", mode="warm", repeats=4, rounds=2, warmup=1, settle_ms=settle_ms
    )
    assert [t.samples_ms for t in timings] == [pytest.approx([4.0] * 4)] * 2  # the timed calls, on that clock
    runs = [(name, len(list(group))) for name, group in itertools.groupby(calls)]  # consecutive calls of one
    assert runs[:2] == [("a", 1), ("b", 1)]  # the warmup calls, then 2 rounds of a block per candidate
    assert [name for name, _ in runs[2:]] == ["a", "b", "a", "b"]
    for _, block in runs[2:]:  # untimed calls, then the round's 2 timed ones
        assert block - 2 == (1 if settle_ms == 0 else 8)  # the first call at or past 30 ms is the 8th (32 ms)


def test_evicted_mode_runs_the_eviction_before_every_timed_call_only():
    """``evict`` runs right before each timed call (never before a warmup or settling call), untimed."""
    calls: list[str] = []
    evict = _logged(calls, "evict", 0.3)[1]  # untimed: the samples stay near the calls' 2 ms, far below 300
    timings = time_candidates(
        [_logged(calls, "a", 0.002), _logged(calls, "b", 0.002)], device="cpu", mode="warm", repeats=3, rounds=1,
        warmup=1, evict=evict,
    )
    assert [len(t.samples_ms) for t in timings] == [3, 3]
    assert all(sample < 150 for t in timings for sample in t.samples_ms)  # (a wide margin: a loaded machine)
    followers = [calls[i + 1] for i, name in enumerate(calls) if name == "evict"]
    assert followers == ["a"] * 3 + ["b"] * 3  # one eviction before each of the 6 timed calls
    assert calls[:2] == ["a", "b"] and calls.count("evict") == 6  # the warmup calls came without one


def test_paired_floor_is_timed_right_before_each_block_of_its_candidate():
    """A candidate with a companion has it timed as often right before its block (then its settling call and
    its timed calls), each after its own eviction; the companion's samples and median are kept apart from the
    candidate's, and a candidate without one runs alone."""
    calls: list[str] = []
    floor = _logged(calls, "floor", 0.3)[1]
    timings = time_candidates(
        [_logged(calls, "a", 0.002), _logged(calls, "b", 0.002)], device="cpu", mode="warm", repeats=3, rounds=1,
        warmup=1, evict=lambda: calls.append("evict"), paired=lambda t: floor if t.strategy == "a" else None,
    )
    a, b = timings
    timed = [name for name in calls[2:] if name != "evict"]  # after the two warmup calls and the settling ones
    assert timed == ["floor"] * 4 + ["a"] * 4 + ["b"] * 4  # (each block after one settling call of its own)
    assert [calls[i - 1] for i, name in enumerate(calls) if name == "floor"][1:] == ["evict"] * 3
    assert len(a.floor_samples_ms) == 3 and a.floor_ms == pytest.approx(statistics.median(a.floor_samples_ms))
    assert min(a.floor_samples_ms) > 150 > max(a.samples_ms)  # the floor's 300 ms is not in the candidate's samples
    assert b.floor_samples_ms == [] and b.floor_ms is None


def test_paired_floor_runs_at_its_candidates_thread_count():
    """The companion of a 1-thread candidate is timed while set_threads(1) is in effect, and the others' while
    set_threads(None) is."""
    state: list[int | None] = [None]
    seen: list[tuple[str, int | None]] = []
    floor = lambda: seen.append(("floor", state[0]))  # noqa: E731
    one = Timing("tokenpool", "numpy", "packed", "mean", threads=1)
    many = Timing("tokenpool", "numpy", "packed", "mean")
    time_candidates(
        [(many, lambda: None), (one, lambda: None)], device="cpu", mode="warm", repeats=2, rounds=1, warmup=0,
        set_threads=lambda threads: state.__setitem__(0, threads), paired=lambda t: floor,
    )
    assert {entry for entry in seen} == {("floor", None), ("floor", 1)}
    assert seen.index(("floor", 1)) > max(i for i, entry in enumerate(seen) if entry == ("floor", None))


def test_cold_mode_is_not_paired(capsys):
    """Cold blocks are single calls: a companion would precede every candidate call (interleaving)."""
    assert main([*QUICK, "--no-st", "--no-memory", "--strategies", "mean", "--mode", "cold", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["timings"]
    floor_ms = min(t["median_ms"] for t in rows if t["group"] == "floor")
    assert all(t["floor_ms"] is None and t["vs_floor"] == pytest.approx(t["median_ms"] / floor_ms) for t in rows)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_floor_reads_return_the_table_maximum(threads, dtype):
    """Each floor read really reads every element: its result is the table's maximum, wherever it lies."""
    rng = np.random.default_rng(threads)
    table = rng.standard_normal((37, 5)).astype(dtype)
    for row in (0, 18, 36):
        spiked = table.copy()
        spiked[row, 4] = 100.0
        assert ParallelRead(spiked, threads)() == 100.0
        read = CompiledRead.of(spiked, threads)
        if compiled.kernels() is None:
            assert read is None
        else:
            assert read() == 100.0
    assert CompiledRead.of(np.asfortranarray(table), threads) is None  # the kernels take C-contiguous tables only


def test_openmp_wait_names_the_settings_torch_read(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert openmp_wait() == "default (spinning)"
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert openmp_wait() == "OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=1000"


@pytest.fixture
def small_stream(monkeypatch):
    """The CPU bandwidth read (`read_bandwidth`) of an 8 MiB buffer, not `stream_bytes`' 4x the last-level cache
    (>= 128 MiB; 1 GiB on a machine with a 256 MiB L3): the report tests check its wiring, not its figure."""
    from tokenpool.bench import harness

    monkeypatch.setattr(harness, "stream_bytes", lambda: 8 << 20)


def test_json_report_has_all_candidates_ratios_and_targets(capsys, small_stream):
    argv = [*TINY, "--json", "--libraries", "torch,numpy,torch-own", "--threads", "2"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(t["group"], t["library"], t["layout"], t["strategy"], t["threads"]): t for t in report["timings"]}
    floors = [t for t in report["timings"] if t["group"] == "floor" and t["threads"] is None]
    expected = {("torch", "sum"), ("torch", "amax"), ("numpy", "read")}
    if compiled.kernels() is not None:  # the row kernels' own loop with no row bookkeeping
        expected.add(("compiled", "read"))
    assert {(t["library"], t["strategy"]) for t in floors} == expected
    floor_ms = min(t["median_ms"] for t in floors)  # the floor is the fastest plain read
    assert all(t["vs_floor"] == pytest.approx(t["median_ms"] / floor_ms) and t["floor_ms"] is None for t in floors)
    for library in ("torch", "numpy", "torch-own"):
        for layout in ("padded", "packed"):
            for strategy in [*STRATEGIES, SPLADE_SUM]:
                row = rows[("tokenpool", library, layout, strategy, None)]
                assert row["median_ms"] > 0
                # against the fastest floor read, timed alternately with it
                assert row["floor_ms"] > 0 and row["vs_floor"] == pytest.approx(row["median_ms"] / row["floor_ms"])
                assert row["gb_per_s"] == pytest.approx(row["bytes_read"] / row["median_ms"] / 1e6)
                one = rows.get(("tokenpool", library, layout, strategy, 1))  # --threads 2: also timed at 1 thread
                assert (one is None) == (strategy in PICKS)
                if one is not None:  # the floors' own speed-up times the ratio of the two x-floor figures
                    floors_one = min(t["median_ms"] for t in report["timings"] if t["group"] == "floor"
                                     and t["threads"] == 1)  # fmt: skip
                    expected_speedup = floors_one / floor_ms * one["vs_floor"] / row["vs_floor"]
                    assert one["speedup"] == pytest.approx(expected_speedup) and row["speedup"] is None
    real = 3 * 4 * 4 * report["config"]["real_fraction"] * 6  # B·L·D·4 bytes × the real fraction (approx.)
    assert rows[("tokenpool", "numpy", "padded", "mean", None)]["bytes_read"] == pytest.approx(real, rel=1e-3)
    assert rows[("tokenpool", "numpy", "padded", "cls", None)]["bytes_read"] == 3 * 4 * 4
    for strategy in ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"):
        for layout in ("padded", "packed"):
            st_row = rows[("sentence-transformers", "torch", layout, strategy, None)]
            ours = rows[("tokenpool", "torch", layout, strategy, None)]
            by = "median_ms" if strategy in PICKS else "vs_floor"  # picks: not set by the floor's bandwidth
            assert ours["speedup_vs_st"] == pytest.approx(st_row[by] / ours[by])
        # the timed calls compute what sentence-transformers computes (right padding: weightedmean agrees too)
        assert rows[("tokenpool", "torch", "padded", strategy, None)]["max_abs_diff_vs_st"] < 1e-5
    assert ("seed", "numpy", "padded", "mean", None) in rows and ("seed", "torch", "padded", "mean", None) in rows
    band = report["bandwidth"]
    assert band["threads"] == 2 and band["gb_per_s"] == max(band["kernels"].values()) > 0
    assert {m["library"] for m in report["memory"]} == {"torch", "numpy", "torch-own"}
    assert all(m["peak_bytes"] > 0 for m in report["memory"])
    names = [t["target"] for t in report["targets"]]
    floor_targets = [name for name in names if "x floor" in name and name.startswith(("torch p", "numpy p"))]
    assert len(floor_targets) == 2 * 2 * 5 * 2  # at 2 threads and at 1
    assert sum(name.endswith("x floor at 1 thread") for name in floor_targets) == 2 * 2 * 5
    assert sum("sentence-transformers' packed path" in name for name in names) == 6
    assert sum("threads >=" in name for name in names) == 4
    assert any(name.startswith("nothing beats the floor") for name in names)
    assert any(name.startswith("numpy mean/max/weightedmean peak extra memory <= 300 KiB") for name in names)
    assert all(t["met"] in (True, False) for t in report["targets"])
    assert report["config"]["batch"] == 3 and report["config"]["threads"] == 2 and report["machine"]["torch"]


def test_table_prints_met_or_not_met_for_each_target(capsys):
    assert main([*QUICK, "--no-st", "--no-memory", "--padding-side", "left", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "left padding" in out and "float16" in out
    target_lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert target_lines and all(line.split()[0] in ("MET", "NOT", "not") for line in target_lines)
    assert "not measured torch padded mean >= 10x faster than sentence-transformers" in out  # --no-st


def test_tokenpool_bench_prints_timings_and_memory_without_targets(capsys):
    """The library's benchmark (`tokenpool bench`) reports timings, ratios and memory; targets live in benchmarks/."""
    assert bench.main([*QUICK, "--json", "--strategies", "mean,cls"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "targets" not in report and "reference_shape" not in report
    rows = {(t["group"], t["library"], t["layout"], t["strategy"]) for t in report["timings"]}
    assert ("tokenpool", "numpy", "packed", "cls") in rows and ("floor", "torch", "packed", "sum") in rows
    assert all(m["peak_bytes"] > 0 and m["output_bytes"] > 0 for m in report["memory"])
    assert bench.main([*QUICK, "--no-st", "--strategies", "mean"]) == 0
    out = capsys.readouterr().out
    assert "x floor" in out and "peak extra memory" in out and "targets" not in out and "MET" not in out
    assert bench.main([*QUICK, "--strict"]) == 2  # --strict belongs to the targets
    assert "--strict" in capsys.readouterr().err


def test_strict_exits_1_when_a_target_is_missed(capsys):
    # On tiny shapes the fixed costs dominate: the floor ratios are far above their limits.
    assert main([*QUICK, "--no-st", "--no-memory", "--strategies", "mean", "--strict", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(t["met"] is False for t in report["targets"]) and report["reference_shape"] is False


def test_bfloat16_runs_torch_only(capsys):
    assert main([*QUICK, "--no-st", "--no-memory", "--dtype", "bfloat16", "--json"]) == 0
    libraries = {
        t["library"] for t in json.loads(capsys.readouterr().out)["timings"] if t["group"] == "tokenpool"
    }
    assert libraries == {"torch"}


def test_padding_fraction_sets_the_lengths(capsys):
    assert (
        main([*QUICK, "--length", "100", "--padding-fraction", "0.8", "--no-st", "--no-memory", "--json"]) == 0
    )
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["max_row"] <= 40


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--batch", "0"], "--batch must be >= 1, got 0"),
        (["--min-length", "9", "--length", "8"], "--min-length"),
        (["--strategies", "median"], "unknown pooling strategy 'median'"),
        (["--libraries", "cupy"], "cupy"),
        (["--dtype", "int8"], "int8"),
        (["--device", "tpu"] if torch.cuda.is_available() else ["--device", "cuda:0"], "--device"),
        (["--padding-fraction", "1.5"], "1.5"),
        (["--settle-ms", "-1"], "--settle-ms must be a number >= 0, got -1.0"),
        (["--settle-ms", "nan"], "--settle-ms must be a number >= 0, got nan"),
        (["--mode", "evicted", "--device", "cuda"], "--mode evicted empties the CPU's caches: it has no meaning on "
         "--device cuda"),
        (["--mode", "flushed", "--device", "cuda"], "--mode flushed empties the CPU's caches"),
    ],
)
@pytest.mark.parametrize("entry", [main, bench.main], ids=["script", "library"])
def test_bad_options_exit_2_with_one_line(capsys, argv, words, entry):
    assert entry([*QUICK, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenpool bench: error:") and words in err[0]


def test_flusher_flushes_numpy_arrays_and_cpu_tensors_and_refuses_strided_ones():
    """The flush runs over each array and leaves the values alone; a strided array is refused on any CPU."""
    with pytest.raises(ValueError, match=r"can only flush contiguous arrays, got strides \(8,\)"):
        flusher([np.arange(10, dtype=np.float32)[::2]])
    table = np.arange(1001, dtype=np.float32)
    tensors = [table[1:], torch.arange(7, dtype=torch.bfloat16), np.zeros(0, np.uint8)]
    flush = flusher(tensors)
    if flush is None:
        pytest.skip(f"no clflush here: {flush_module.available()}")
    flush()
    assert table[1:].sum() == np.arange(1, 1001).sum() and float(tensors[1].float().sum()) == 21


def test_flush_reaches_every_cache_line_of_a_view_at_any_offset():
    """The compiled walk visits one byte in every 64-byte line that holds a byte of the view, whatever its start
    and size (the operation is swapped for one that marks the byte it is given)."""
    if flush_module.available() is not None:
        pytest.skip(flush_module.available())
    numba = pytest.importorskip("numba")
    each_line = flush_module.compiled()[0]

    @numba.njit
    def mark(view, offset):
        view[offset] = 1

    buffer = np.zeros(4096 + 128, np.uint8)
    base = (-buffer.ctypes.data) % 64  # a 64-byte boundary inside the buffer
    for start, size in itertools.product(range(64), (0, 1, 63, 64, 65, 1000)):
        view = buffer[base + start : base + start + size]
        view[:] = 0
        each_line(view, mark)
        address = view.ctypes.data
        lines = {(address + i) // 64 for i in range(size)}
        assert {(address + i) // 64 for i in np.flatnonzero(view)} == lines, (start, size)


def test_flushed_mode_is_the_default_where_it_runs_and_refused_where_not(monkeypatch, capsys):
    argv = [*QUICK, "--no-st", "--no-memory", "--strategies", "mean", "--json"]
    assert main(argv) == 0
    expected = "warm" if flusher([np.zeros(1)]) is None else "flushed"
    assert json.loads(capsys.readouterr().out)["config"]["mode"] == expected
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert flusher([np.zeros(1)]) is None
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["config"]["mode"] == "warm"
    assert main([*argv, "--mode", "flushed"]) == 2
    assert "--mode flushed needs numba on an x86-64 CPU: this CPU is aarch64, not x86-64" in capsys.readouterr().err


@pytest.mark.slow
def test_script_runs_as_a_program():
    """The script as a program (its imports, its ``__main__``); QUICK: the bandwidth read and the second thread
    count are the in-process tests' (`test_json_report_has_all_candidates_ratios_and_targets`)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pooling.py"
    done = subprocess.run(
        [sys.executable, str(script), *QUICK, "--no-st", "--no-memory", "--strategies", "mean"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tokenpool" in done.stdout and "targets" in done.stdout



def test_cuda_script_runs_its_cpu_fallback(tmp_path, capsys, small_stream):
    """benchmarks/device/bench_pooling_cuda.py (for a lent GPU) runs the same code on the CPU: one report per
    dtype and shape, every strategy padded and packed, ratios to the fastest floor read, tables and JSON."""
    sys.path.insert(0, str(BENCHMARKS / "device"))
    from bench_pooling_cuda import main as cuda_main

    argv = ["--device", "cpu", "--dtypes", "float32,bfloat16", "--shapes", "3x6x4", "--repeats", "2", "--no-st"]
    assert cuda_main([*argv, "--out", str(tmp_path)]) == 0
    reports = json.loads((tmp_path / "pooling_cuda.json").read_text())
    assert [r["config"]["dtype"] for r in reports] == ["float32", "bfloat16"]
    for report in reports:
        rows = {(t["layout"], t["strategy"]): t for t in report["timings"] if t["group"] == "tokenpool"}
        assert set(rows) == {(layout, s) for layout in ("padded", "packed") for s in [*STRATEGIES, SPLADE_SUM]}
        assert all(t["vs_floor"] == pytest.approx(t["median_ms"] / t["floor_ms"]) for t in rows.values())
        assert report["bandwidth"]["device"] == "cpu" and report["memory"]
    assert (tmp_path / "pooling_cuda.txt").read_text().count("tokenpool bench:") == 2
    with pytest.raises(SystemExit) as bad:
        cuda_main(["--shapes", "3x6"])
    assert bad.value.code == 2 and "--shapes takes BxLxD" in capsys.readouterr().err
