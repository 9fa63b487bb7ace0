"""Measurement for the benchmarks: medians of timed calls taken in rounds, peak extra memory of one call, and a
description of the machine. Knows nothing about pooling; `tokenpool.bench.pooling` builds the candidates."""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Timing:
    """One timed candidate: what it is, its median, and ratios filled in by the benchmark."""

    group: str  # floor / reference / seed / sentence-transformers / tokenpool
    library: str
    layout: str  # padded / packed / -
    strategy: str
    median_ms: float = 0.0
    vs_floor: float = 0.0
    speedup_vs_st: float | None = None
    max_abs_diff_vs_st: float | None = None
    bytes_read: int = 0  # what the candidate must read at least (the real tokens, or one token per row)
    gb_per_s: float = 0.0  # bytes_read / median
    threads: int | None = None  # thread count it runs at; None: the benchmark's (see `time_candidates`)
    samples_ms: list[float] = field(default_factory=list, repr=False)
    speedup: float | None = None  # on a 1-thread row: how much faster its N-thread twin is (the benchmark's)
    floor_ms: float | None = None  # median of the floor calls timed before its blocks (`time_candidates`' paired)
    floor_samples_ms: list[float] = field(default_factory=list, repr=False)


Candidate = tuple[Timing, Callable[[], Any]]


def time_candidates(
    cands: list[Candidate], *, device: str, mode: str, repeats: int, rounds: int, warmup: int,
    set_threads: Callable[[int | None], None] | None = None, settle_ms: float = 0.0,
    evict: Callable[[], Any] | None = None, paired: Callable[[Timing], Callable[[], Any] | None] | None = None,
) -> list[Timing]:
    """Medians of timed calls, taken in rounds so that noise on a shared machine hits every candidate alike.

    "warm": each round times every candidate in a block of consecutive calls, after untimed ones for at least
    ``settle_ms`` (an array another block displaced can take several reads to come back: docs/performance.md).
    "cold": each round calls every candidate once, so each call follows a different one.
    A candidate whose ``threads`` is set runs with ``set_threads(threads)`` in effect, the others with
    ``set_threads(None)``; each thread count is timed in a phase of its own (switching counts between blocks
    slowed the blocks after a switch: stop 36). ``evict``, when given, runs untimed before every timed call.
    ``paired(timing)``, when it gives a call, is timed as many times in a block of its own right before each of
    that candidate's blocks (settled too, in warm mode; samples in ``floor_samples_ms``, median ``floor_ms``): a
    ratio of the two is free of the machine's slow drifts, and every timed call still follows a call of its own
    (interleaved, each candidate call followed a two-thread torch op, after which this VM ran Python ~3x slower
    for milliseconds: stop 44). Not for "cold", whose blocks are single calls.
    """
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    switch = set_threads or (lambda threads: None)
    cells: dict[tuple[str, str, str, str, int | None], list[Candidate]] = {}
    for timing, call in cands:
        key = (timing.group, timing.library, timing.layout, timing.strategy, timing.threads)
        cells.setdefault(key, []).append((timing, call))
    if mode == "cold":
        rounds, blocks = repeats, [[cand] for cand in cands]
    else:
        rounds, blocks = min(rounds, repeats), list(cells.values())
    with torch.inference_mode():
        for timing, call in cands:
            switch(timing.threads)
            for _ in range(warmup):
                call()
        sync()
        phases: dict[int | None, list[list[Candidate]]] = {}
        for block in blocks:
            phases.setdefault(block[0][0].threads, []).append(block)
        for threads, phase in phases.items():
            switch(threads)
            _time_rounds(phase, mode, repeats, rounds, sync, settle_ms / 1e3, evict, paired)
        switch(None)
    timings = [timing for timing, _ in cands]
    for timing in timings:
        timing.median_ms = statistics.median(timing.samples_ms)
        timing.floor_ms = statistics.median(timing.floor_samples_ms) if timing.floor_samples_ms else None
        timing.gb_per_s = timing.bytes_read / timing.median_ms / 1e6 if timing.bytes_read else 0.0
    return timings


def _time_rounds(
    blocks: list[list[Candidate]], mode: str, repeats: int, rounds: int, sync: Callable[[], None], settle: float,
    evict: Callable[[], Any] | None = None, paired: Callable[[Timing], Callable[[], Any] | None] | None = None,
) -> None:
    """``rounds`` rounds over the blocks (see `time_candidates`), adding each timed call to its timing's samples;
    in warm mode each block first runs untimed, at least once and for at least ``settle`` seconds."""
    for index in range(rounds):
        size = repeats // rounds + (index < repeats % rounds)
        for block in blocks:
            for timing, _ in block:  # the companion's calls in a block of their own right before the block's
                companion = None if paired is None else paired(timing)
                if companion is not None and mode == "warm":
                    _settle([(timing, companion)], sync, settle)  # as settled as the block it is paired with
                for _ in range(size if companion is not None else 0):
                    timing.floor_samples_ms.append(_timed(companion, sync, evict))
            if mode == "warm":
                _settle(block, sync, settle)
            for _ in range(size):
                for timing, call in block:
                    timing.samples_ms.append(_timed(call, sync, evict))


def _timed(call: Callable[[], Any], sync: Callable[[], None], evict: Callable[[], Any] | None) -> float:
    """Milliseconds of one ``call``, after an untimed ``evict`` when given."""
    if evict is not None:
        evict()
        sync()
    start = time.perf_counter()
    call()
    sync()
    return (time.perf_counter() - start) * 1e3


def _settle(block: list[Candidate], sync: Callable[[], None], seconds: float) -> None:
    """Run the block's calls untimed, at least once and for at least ``seconds``."""
    until = time.perf_counter() + seconds
    while True:
        for _, call in block:
            call()
        sync()
        if time.perf_counter() >= until:
            return


class ParallelRead:
    """A call that reads ``array`` once and writes nothing: numpy's flat ``max`` of ``threads`` equal parts, one
    per thread (numpy releases the GIL in its reductions). A STREAM-like read, and one of the floor's kernels."""

    def __init__(self, array: np.ndarray, threads: int) -> None:
        self.parts = np.array_split(array.reshape(-1), max(1, min(threads, array.size)))  # (no empty part)
        self.pool = ThreadPoolExecutor(max_workers=len(self.parts) - 1) if len(self.parts) > 1 else None

    def __call__(self) -> float:
        futures = [self.pool.submit(np.max, part) for part in self.parts[1:]] if self.pool else []
        best = np.max(self.parts[0])
        return max([float(best), *(float(future.result()) for future in futures)])


class CompiledRead:
    """A call that reads a T×D ``table`` once, writing one D row per thread: `core/compiled.py`'s max kernel over
    ``threads`` parts of about T/threads tokens, one per thread (`Kernels.run`: on numba's threads where it can,
    else on a thread pool). The row kernels' own loop with no row bookkeeping: a floor they cannot beat (None
    from `of` when numba is not installed)."""

    def __init__(self, kernels: Any, table: np.ndarray, threads: int) -> None:
        self.kernels, self.table = kernels, table
        bounds = np.linspace(0, table.shape[0], max(1, min(threads, table.shape[0])) + 1).astype(np.int64)
        self.starts, self.counts = bounds[:-1].copy(), np.diff(bounds)
        self.parts = np.arange(len(self.starts), dtype=np.int64)
        self.out = np.empty((len(self.starts), table.shape[1]), table.dtype)
        self.pool = ThreadPoolExecutor(max_workers=len(self.starts) - 1) if len(self.starts) > 1 else None

    @classmethod
    def of(cls, table: np.ndarray, threads: int) -> CompiledRead | None:
        from ..core import compiled

        kernels = compiled.kernels()
        usable = table.ndim == 2 and table.dtype in compiled.Kernels.DTYPES and table.flags.c_contiguous
        return cls(kernels, table, threads) if kernels is not None and usable else None

    def _part(self, index: int) -> None:
        self.kernels.max_rows(self.table, self.starts, self.counts, self.parts[index : index + 1], self.out)

    def __call__(self) -> float:
        if self.kernels.parallel or self.pool is None:
            self.kernels.run("max_rows", len(self.parts), self.table, self.starts, self.counts, self.parts, self.out)
        else:
            futures = [self.pool.submit(self._part, i) for i in range(1, len(self.starts))]
            self._part(0)
            for future in futures:
                future.result()
        return float(self.out.max())


def read_bandwidth(threads: int, *, device: str = "cpu") -> dict[str, Any]:
    """The memory read bandwidth, STREAM-like: GB/s of the fastest plain read (writing nothing) of a buffer of
    float32 ones several times the last-level cache, medians of 15 interleaved reads. On CPU
    (`stream_bytes`) torch's ``buffer.sum()`` on its intra-op threads, and `ParallelRead` and `CompiledRead`
    (with numba) on ``threads`` threads; on a GPU (1 GiB) torch's ``sum()`` and ``amax()``, synchronised."""
    import torch

    on_cpu = torch.device(device).type == "cpu"
    nbytes = stream_bytes() if on_cpu else 1 << 30
    if on_cpu:
        buffer = np.ones(nbytes // 4, dtype=np.float32)
        tensor = torch.from_numpy(buffer)
        kernels = {"torch sum": lambda: tensor.sum(), "numpy max": ParallelRead(buffer, threads)}
        compiled = CompiledRead.of(buffer.reshape(-1, 1024), threads)
        if compiled is not None:
            kernels["compiled max"] = compiled
    else:
        tensor = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        kernels = {"torch sum": lambda: tensor.sum(), "torch amax": lambda: tensor.amax()}
    reads = [(Timing("bandwidth", device, "-", name, bytes_read=nbytes), read) for name, read in kernels.items()]
    timed = time_candidates(reads, device=device, mode="cold", repeats=15, rounds=1, warmup=1)
    rates = {timing.strategy: round(timing.gb_per_s, 2) for timing in timed}
    return {"bytes": int(nbytes), "threads": threads, "device": device, "gb_per_s": max(rates.values()),
            "kernels": rates}  # fmt: skip


def stream_bytes(cache: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The CPU read's buffer: 4x the last-level cache and at least 128 MiB, at most an eighth of the memory. (A
    fixed 128 MiB fitted in the 300 MiB L3 of a Xeon VM and measured the L3: 37-67 GB/s against 28 from memory.)"""
    wanted, memory = max(128 << 20, 4 * (last_level_cache_bytes(cache) or 0)), memory_bytes()
    return wanted if memory is None else max(128 << 20, min(wanted, memory // 8)) // 4096 * 4096


def memory_bytes(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory this process may use in bytes: the machine's physical memory, or its cgroup's limit where that
    is lower (a container's ``--memory``: past it the kernel kills the process, with no message); None where the
    system says neither."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not a POSIX system
        physical = None
    limits = [physical] if physical else []
    for name in ("memory.max", "memory/memory.limit_in_bytes"):  # cgroup v2, v1 ("max" or a huge number: none)
        with contextlib.suppress(OSError, ValueError):
            limits.append(int((cgroup / name).read_text().strip()))
    return min(limits) if limits else None


def last_level_cache_bytes(cache: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of the highest cache level Linux lists for CPU 0 (``index*/level`` and ``size``, e.g. 307200K),
    or None where it lists none."""
    sizes: dict[int, int] = {}
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in cache.glob("index*"):
        try:
            level, size = (index / "level").read_text().strip(), (index / "size").read_text().strip()
        except OSError:
            continue
        scale = units.get(size[-1:].upper(), 1)
        digits = size[:-1] if size[-1:].upper() in units else size
        if level.isdigit() and digits.isdigit():
            sizes[int(level)] = max(sizes.get(int(level), 0), int(digits) * scale)
    return sizes[max(sizes)] if sizes else None


def peak_extra_bytes(call: Callable[[], Any], device: str) -> tuple[int, str]:
    """Peak bytes allocated during ``call`` beyond what existed before it (the result included), and how."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        host = peak_host_bytes(call)[0]
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before + host, "cuda allocator peak + tracemalloc"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        host = peak_host_bytes(call)[0]  # inside the profiler: its own Python allocations are not counted
    events = prof.profiler.kineto_results.events()
    changes = [n for _, n in sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")]
    peak = max(itertools.accumulate(changes, initial=0))
    return peak + host, "torch profiler allocation events + tracemalloc"


def peak_host_bytes(call: Callable[[], Any]) -> tuple[int, str]:
    """Peak bytes that ``call`` allocates through Python and numpy (tracemalloc), the result included."""
    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return peak, "tracemalloc"


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """Silence file descriptor 2 (the profiler's C++ side logs every start and stop there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def row_kernels() -> str:
    """Which numpy-path row kernels run large pools here: numba's compiled ones (`core/compiled.py`) or numpy's."""
    from ..core import compiled

    if compiled.kernels() is None:
        return "numpy (numba not installed: pip install 'tokenpool[fast]')"
    import numba

    return f"compiled (numba {numba.__version__})"


def openmp_wait() -> str:
    """How torch's OpenMP workers wait between parallel regions (read once, when torch loads): their spinning
    after each torch op takes the cores the next kernel runs on (docs/performance.md)."""
    settings = [f"{name}={os.environ[name]}" for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if name in os.environ]
    return ", ".join(settings) or "default (spinning)"


def machine() -> dict[str, Any]:
    """Versions, CPU, threads, load and GPU of this machine, for the report's header."""
    import torch

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
    with contextlib.suppress(OSError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    info["row_kernels"], info["openmp_wait"] = row_kernels(), openmp_wait()
    with contextlib.suppress(ImportError):
        import sentence_transformers

        info["sentence_transformers"] = sentence_transformers.__version__
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info
