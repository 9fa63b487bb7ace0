"""`tokenpool bench`: time tokenpool's pooling against sentence-transformers, the seed and the memory floor.

Every candidate runs in this one process on the same arrays, round-robin (each repeat calls every candidate
once), so that noise from a shared machine hits all of them alike; the table reports medians and ratios.
The floor is ``torch.sum`` over the real tokens only (packed beforehand): reading each real token once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

STRATEGIES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# Targets of issue 3 (the reference shape: B=64, L=512, D=768, fp32, CPU).
FLOOR_LIMITS = {"torch": 1.5, "numpy": 2.5}
FLOOR_STRATEGIES = ("mean", "mean_sqrt_len_tokens", "weightedmean", "max")
ST_SPEEDUPS = {"mean": 10.0, "max": 30.0}
PICK_LIMIT_MS = 0.5
MASK_BYTES = 32  # the O(B×L) allowance of the memory target, bytes per mask element
FIXED_BYTES = 64 * 1024  # Python objects (tracemalloc counts them too), independent of the shapes
PACKED_SLACK = 1.05  # "no slower": medians within 5% count as equal (timer noise on a shared machine)


class BenchError(Exception):
    """A bad option: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BenchError(message)


@dataclass
class Timing:
    group: str  # floor / reference / seed / sentence-transformers / tokenpool
    library: str
    layout: str  # padded / packed / -
    strategy: str
    median_ms: float = 0.0
    vs_floor: float = 0.0
    speedup_vs_st: float | None = None
    max_abs_diff_vs_st: float | None = None
    samples_ms: list[float] = field(default_factory=list, repr=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table (or ``--json``); exit 0, 1 with ``--strict`` when a target is missed."""
    try:
        args = _parser().parse_args(argv)
        _check(args)
        report = run(args)
    except BenchError as exc:
        print(f"tokenpool bench: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    missed = [t for t in report["targets"] if t["met"] is False]
    return 1 if args.strict and missed else 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokenpool bench", description=__doc__.splitlines()[0])
    shape = parser.add_argument_group("data")
    shape.add_argument("--batch", type=int, default=64, help="rows B (default 64)")
    shape.add_argument("--length", type=int, default=512, help="padded length L (default 512)")
    shape.add_argument("--dim", type=int, default=768, help="hidden size D (default 768)")
    shape.add_argument(
        "--min-length", type=int, default=None, help="shortest row (default min(16, L)); lengths are uniform"
    )
    shape.add_argument("--max-length", type=int, default=None, help="longest row (default L)")
    shape.add_argument(
        "--padding-fraction", type=float, default=None,
        help="draw lengths so that about this fraction of the B×L tensor is padding (overrides min/max)",
    )  # fmt: skip
    shape.add_argument("--padding-side", choices=("right", "left"), default="right")
    shape.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    shape.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, …)")
    shape.add_argument("--seed", type=int, default=0)
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--repeats", type=int, default=30, help="timed calls per candidate (default 30)")
    run_group.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    run_group.add_argument(
        "--mode", choices=("warm", "cold"), default="warm",
        help="warm: time each candidate in blocks of consecutive calls (default); cold: round-robin, every call "
        "after a different candidate",
    )  # fmt: skip
    run_group.add_argument(
        "--rounds", type=int, default=5, help="blocks per candidate in warm mode (default 5)"
    )
    run_group.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    run_group.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all but splade)"
    )
    run_group.add_argument(
        "--libraries", default="torch,numpy",
        help="tokenpool backends to time: torch, numpy, torch-own (torch's own kernels, as used under autograd)",
    )  # fmt: skip
    run_group.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    run_group.add_argument("--no-memory", action="store_true", help="skip the peak-memory report")
    run_group.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    run_group.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    return parser


def _check(args: argparse.Namespace) -> None:
    for name in ("batch", "length", "dim", "repeats", "rounds"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {args.warmup}")
    args.max_length = args.length if args.max_length is None else args.max_length
    args.min_length = min(16, args.max_length) if args.min_length is None else args.min_length
    if not 0 <= args.min_length <= args.max_length <= args.length:
        raise BenchError(
            f"need 0 <= --min-length <= --max-length <= --length, got {args.min_length}, {args.max_length}, "
            f"{args.length}"
        )
    if args.padding_fraction is not None and not 0 <= args.padding_fraction < 1:
        raise BenchError(f"--padding-fraction must be in [0, 1), got {args.padding_fraction}")
    from ..core.strategies import parse_strategies

    try:
        args.strategy_list = [m.value for m in parse_strategies(args.strategies)]
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    args.library_list = [name.strip() for name in args.libraries.split(",") if name.strip()]
    unknown = sorted(set(args.library_list) - {"torch", "numpy", "torch-own"})
    if unknown:
        raise BenchError(f"--libraries takes torch, numpy and torch-own, got {', '.join(unknown)}")
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise BenchError(f"--device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {args.device}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"--device must be cpu or cuda, got {args.device}")


# -- data -------------------------------------------------------------------------------------------------
def lengths_for(args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    """Row lengths, uniform in [min, max] or chosen to give ``--padding-fraction``."""
    low, high = args.min_length, args.max_length
    if args.padding_fraction is not None:
        mean = (1 - args.padding_fraction) * args.length
        low, high = (max(0, round(2 * mean - args.length)), args.length) if mean >= args.length / 2 else (
            0, min(args.length, round(2 * mean))
        )  # fmt: skip
    return rng.integers(low, high + 1, size=args.batch)


def make_data(args: argparse.Namespace) -> dict[str, Any]:
    """Padded states, mask, packed tokens and offsets (torch, and numpy views of the same memory on CPU)."""
    import torch

    rng = np.random.default_rng(args.seed)
    lengths = lengths_for(args, rng)
    columns = np.arange(args.length)[None, :]
    if args.padding_side == "right":
        mask = columns < lengths[:, None]
    else:
        mask = columns >= (args.length - lengths)[:, None]
    values = torch.from_numpy(rng.standard_normal((args.batch, args.length, args.dim), dtype=np.float32))
    dtype = getattr(torch, args.dtype)
    hidden = _buffer(values.shape, dtype, args.device).copy_(values)
    real = values[torch.from_numpy(mask)]
    tokens = _buffer(real.shape, dtype, args.device).copy_(real)
    del values, real
    mask_t = torch.from_numpy(mask.astype(np.int64)).to(args.device)
    cu = torch.from_numpy(np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)).to(args.device)
    data = {"lengths": lengths, "torch": (hidden, mask_t, tokens, cu)}
    if args.dtype != "bfloat16" and torch.device(args.device).type == "cpu":  # numpy has no bfloat16
        data["numpy"] = tuple(x.numpy() for x in data["torch"])
    return data


def _buffer(shape: Any, dtype: Any, device: str) -> Any:
    """An empty tensor; on CPU allocated by numpy, so that every large array of the benchmark gets the same
    kind of pages (numpy asks for transparent huge pages, torch's allocator does not by default)."""
    import torch

    if torch.device(device).type != "cpu":
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return torch.from_numpy(np.empty(tuple(shape), dtype=f"u{itemsize}")).view(dtype)


# -- candidates -------------------------------------------------------------------------------------------
def candidates(args: argparse.Namespace, data: dict[str, Any]) -> list[tuple[Timing, Callable[[], Any]]]:
    import torch

    hidden, mask, tokens, cu = data["torch"]
    rows, length, dim = hidden.shape
    out: list[tuple[Timing, Callable[[], Any]]] = [
        (Timing("floor", "torch", "packed", "sum"), lambda: torch.sum(tokens, dim=0)),
        (
            Timing("reference", "torch", "padded", "sum"),
            lambda: torch.sum(hidden.view(rows * length, dim), 0),
        ),
        (Timing("seed", "torch", "padded", "mean"), lambda: hidden.mean(dim=1)),
    ]
    if "numpy" in data:
        np_hidden = data["numpy"][0]
        out.append((Timing("seed", "numpy", "padded", "mean"), lambda: np_hidden.mean(axis=1)))
    if not args.no_st:
        out += _st_candidates(args, data)
    for library in args.library_list:
        if _data_for(library, data) is None:
            continue
        for strategy in args.strategy_list:
            for layout in ("padded", "packed"):
                out.append(
                    (
                        Timing("tokenpool", library, layout, strategy),
                        tokenpool_call(library, layout, strategy, data),
                    )
                )
    return out


def _data_for(library: str, data: dict[str, Any]) -> tuple | None:
    return data.get("torch" if library == "torch-own" else library)


def tokenpool_call(library: str, layout: str, strategy: str, data: dict[str, Any]) -> Callable[[], Any]:
    """A no-argument call of ``pool`` (padded) or ``pool_packed`` (packed) on the benchmark's arrays.

    Library "torch-own" forces torch's own kernels on CPU (what autograd and bfloat16 use) instead of the numpy
    kernels that untracked torch CPU tensors get by default.
    """
    from .. import pool, pool_packed
    from ..core import fast

    hidden, mask, tokens, cu = _data_for(library, data)
    call = functools.partial(pool, hidden, mask, strategy)
    if layout == "packed":
        call = functools.partial(pool_packed, tokens, cu, strategy)
    if library != "torch-own":
        return call

    def own_kernels() -> Any:
        saved, fast.TORCH_CPU_VIA_NUMPY = fast.TORCH_CPU_VIA_NUMPY, False
        try:
            return call()
        finally:
            fast.TORCH_CPU_VIA_NUMPY = saved

    return own_kernels


def _st_candidates(args: argparse.Namespace, data: dict[str, Any]) -> list[tuple[Timing, Callable[[], Any]]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from sentence_transformers.sentence_transformer.modules import Pooling as StPooling
        except ImportError:
            try:
                from sentence_transformers.models import Pooling as StPooling
            except ImportError:
                return []
    hidden, mask, tokens, cu = data["torch"]
    out = []
    for strategy in args.strategy_list:
        if strategy == "splade":
            continue
        module = StPooling(hidden.shape[-1], pooling_mode=strategy)

        def padded(module: Any = module) -> Any:
            return module({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]

        def packed(module: Any = module) -> Any:
            features = {"token_embeddings": tokens[None], "cu_seq_lens_q": cu.long()}
            return module(features)["sentence_embedding"]

        out.append((Timing("sentence-transformers", "torch", "padded", strategy), padded))
        if hasattr(module, "_forward_flattened"):
            out.append((Timing("sentence-transformers", "torch", "packed", strategy), packed))
    return out


# -- timing -----------------------------------------------------------------------------------------------
def time_all(args: argparse.Namespace, cands: list[tuple[Timing, Callable[[], Any]]]) -> list[Timing]:
    """Medians of timed calls, taken in rounds so that noise on a shared machine hits every candidate alike.

    "warm": each round times every candidate in a block of consecutive calls (after an untimed one), as timeit
    does; the padded and packed variants of one strategy alternate within their block (A/B on equal terms).
    "cold": each round calls every candidate once, so each call follows a different one (as pooling follows a
    model's forward pass: the caches hold other data).
    """
    import torch

    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    cells: dict[tuple[str, str, str], list[tuple[Timing, Callable[[], Any]]]] = {}
    for timing, call in cands:
        cells.setdefault((timing.group, timing.library, timing.strategy), []).append((timing, call))
    if args.mode == "cold":
        rounds, blocks = args.repeats, [[cand] for cand in cands]
    else:
        rounds, blocks = min(args.rounds, args.repeats), list(cells.values())
    with torch.inference_mode():
        for _, call in cands:
            for _ in range(args.warmup):
                call()
        sync()
        for index in range(rounds):
            size = args.repeats // rounds + (index < args.repeats % rounds)
            for block in blocks:
                if args.mode == "warm":
                    for _, call in block:
                        call()
                    sync()
                for _ in range(size):
                    for timing, call in block:
                        start = time.perf_counter()
                        call()
                        sync()
                        timing.samples_ms.append((time.perf_counter() - start) * 1e3)
    timings = [timing for timing, _ in cands]
    for timing in timings:
        timing.median_ms = statistics.median(timing.samples_ms)
    floor = timings[0].median_ms
    st = {(t.layout, t.strategy): t.median_ms for t in timings if t.group == "sentence-transformers"}
    for timing in timings:
        timing.vs_floor = timing.median_ms / floor
        if timing.group == "tokenpool" and (timing.layout, timing.strategy) in st:
            timing.speedup_vs_st = st[(timing.layout, timing.strategy)] / timing.median_ms
    return timings


def check_outputs(cands: list[tuple[Timing, Callable[[], Any]]]) -> None:
    """Largest |tokenpool − sentence-transformers| per strategy: the timed calls compute the same thing."""
    import torch

    with torch.inference_mode():
        st = {
            t.strategy: call()
            for t, call in cands
            if t.group == "sentence-transformers" and t.layout == "padded"
        }
        for timing, call in cands:
            if timing.group == "tokenpool" and timing.strategy in st:
                ours = torch.as_tensor(call()).to(device="cpu", dtype=torch.float64)
                theirs = st[timing.strategy].to(device="cpu", dtype=torch.float64)
                timing.max_abs_diff_vs_st = float((ours - theirs).abs().max())


# -- memory -----------------------------------------------------------------------------------------------
def peak_extra_bytes(call: Callable[[], Any], device: str) -> tuple[int, str]:
    """Peak bytes allocated during ``call`` beyond what existed before it (the result included), and how."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        tracemalloc.start()
        result = call()
        torch.cuda.synchronize()
        host = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del result
        return torch.cuda.max_memory_allocated() - before + host, "cuda allocator peak + tracemalloc"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracemalloc.start()  # inside the profiler, so that its own Python allocations are not counted
        result = call()
        host = tracemalloc.get_traced_memory()[1]  # numpy and Python allocations
        tracemalloc.stop()
    del result
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak + host, "torch profiler allocation events + tracemalloc"


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


def memory_report(args: argparse.Namespace, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak extra bytes of every tokenpool call, against the target's budget."""
    rows, length, dim = data["torch"][0].shape
    report = []
    for library in args.library_list:
        if _data_for(library, data) is None:
            continue
        itemsize = _data_for(library, data)[0].dtype.itemsize
        output = rows * dim * itemsize
        budget = 2 * output + MASK_BYTES * rows * length + FIXED_BYTES
        for layout in ("padded", "packed"):
            for strategy in args.strategy_list:
                call = tokenpool_call(library, layout, strategy, data)
                call()  # first calls import modules and fill caches: not the pooling's memory
                if library == "numpy":
                    tracemalloc.start()
                    result = call()
                    peak, how = tracemalloc.get_traced_memory()[1], "tracemalloc"
                    tracemalloc.stop()
                    del result
                else:
                    peak, how = peak_extra_bytes(call, args.device)
                report.append(
                    {"library": library, "layout": layout, "strategy": strategy, "peak_bytes": peak,
                     "budget_bytes": budget, "output_bytes": output, "method": how}
                )  # fmt: skip
    return report


# -- targets and report -----------------------------------------------------------------------------------
def evaluate_targets(
    args: argparse.Namespace, timings: list[Timing], memory: list[dict[str, Any]]
) -> list[dict]:
    """Each target of issue 3 with the measured value and MET / NOT MET (None when it was not measured)."""
    found = {(t.group, t.library, t.layout, t.strategy): t for t in timings}
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, met: bool | None, unit: str) -> None:
        targets.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": met})

    for library, limit in FLOOR_LIMITS.items():
        for strategy in FLOOR_STRATEGIES:
            t = found.get(("tokenpool", library, "padded", strategy))
            value = None if t is None else t.vs_floor
            add(
                f"{library} {strategy} <= {limit}x floor",
                value,
                limit,
                None if t is None else value <= limit,
                "x",
            )
    for strategy, limit in ST_SPEEDUPS.items():
        t = found.get(("tokenpool", "torch", "padded", strategy))
        value = None if t is None else t.speedup_vs_st
        add(f"torch {strategy} >= {limit:g}x faster than sentence-transformers", value, limit,
            None if value is None else value >= limit, "x")  # fmt: skip
    for library in FLOOR_LIMITS:
        for strategy in ("cls", "lasttoken"):
            t = found.get(("tokenpool", library, "padded", strategy))
            value = None if t is None else t.median_ms
            add(f"{library} {strategy} <= {PICK_LIMIT_MS} ms", value, PICK_LIMIT_MS,
                None if t is None else value <= PICK_LIMIT_MS, "ms")  # fmt: skip
    ratios = []
    for (group, library, layout, strategy), t in found.items():
        padded = found.get((group, library, "padded", strategy))
        if group == "tokenpool" and layout == "packed" and padded is not None:
            ratios.append(t.median_ms / padded.median_ms)
    worst = max(ratios) if ratios else None
    add(f"pool_packed no slower than pool (worst packed/padded ratio, <= {PACKED_SLACK} for timer noise)",
        worst, PACKED_SLACK, None if worst is None else worst <= PACKED_SLACK, "x")  # fmt: skip
    for library in ("torch", "torch-own", "numpy"):
        mine = [row for row in memory if row["library"] == library]
        if mine:
            worst_row = max(mine, key=lambda row: row["peak_bytes"] / row["budget_bytes"])
            add(f"{library} peak extra memory <= 2x output + {MASK_BYTES}*B*L + {FIXED_BYTES // 1024} KiB (worst: "
                f"{worst_row['layout']} {worst_row['strategy']})", worst_row["peak_bytes"],
                worst_row["budget_bytes"], all(r["peak_bytes"] <= r["budget_bytes"] for r in mine), "bytes")  # fmt: skip
    return targets


def machine() -> dict[str, Any]:
    import os

    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    with contextlib.suppress(OSError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import sentence_transformers

        info["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the data, time every candidate, measure memory; a JSON-ready report."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = make_data(args)
    cands = candidates(args, data)
    timings = time_all(args, cands)
    check_outputs(cands)
    memory = [] if args.no_memory else memory_report(args, data)
    lengths = data["lengths"]
    config = {
        "batch": args.batch, "length": args.length, "dim": args.dim, "dtype": args.dtype, "device": args.device,
        "padding_side": args.padding_side, "min_row": int(lengths.min()), "max_row": int(lengths.max()),
        "real_fraction": round(float(lengths.sum()) / (args.batch * args.length), 4), "repeats": args.repeats,
        "mode": args.mode, "rounds": args.rounds, "seed": args.seed,
    }  # fmt: skip
    return {
        "machine": machine(),
        "config": config,
        "timings": [{k: v for k, v in asdict(t).items() if k != "samples_ms"} for t in timings],
        "memory": memory,
        "targets": evaluate_targets(args, timings, memory),
        "reference_shape": (args.batch, args.length, args.dim, args.dtype, args.device)
        == (64, 512, 768, "float32", "cpu"),
    }


def format_report(report: dict[str, Any]) -> str:
    c, m = report["config"], report["machine"]
    lines = [
        f"tokenpool bench: B={c['batch']} L={c['length']} D={c['dim']} {c['dtype']} on {c['device']}, "
        f"{c['padding_side']} padding, rows {c['min_row']}..{c['max_row']} tokens ({c['real_fraction']:.0%} real), "
        f"medians of {c['repeats']} ({c['mode']})",
        f"machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
        f"numpy {m['numpy']}, load {m.get('load_average')}",
        "",
        f"{'group':<22}{'library':<10}{'layout':<8}{'strategy':<22}{'ms':>9}{'x floor':>9}{'ST/ours':>9}{'|d| vs ST':>11}",
    ]
    for t in report["timings"]:
        speed = "" if t["speedup_vs_st"] is None else f"{t['speedup_vs_st']:.1f}"
        diff = "" if t["max_abs_diff_vs_st"] is None else f"{t['max_abs_diff_vs_st']:.1e}"
        lines.append(
            f"{t['group']:<22}{t['library']:<10}{t['layout']:<8}{t['strategy']:<22}{t['median_ms']:>9.3f}"
            f"{t['vs_floor']:>9.2f}{speed:>9}{diff:>11}"
        )
    if report["memory"]:
        lines += [
            "",
            f"{'peak extra memory':<22}{'library':<10}{'layout':<8}{'strategy':<22}{'KiB':>9}{'budget':>9}",
        ]
        for row in report["memory"]:
            lines.append(
                f"{'':<22}{row['library']:<10}{row['layout']:<8}{row['strategy']:<22}"
                f"{row['peak_bytes'] / 1024:>9.0f}{row['budget_bytes'] / 1024:>9.0f}"
            )
        methods = sorted({row["method"] for row in report["memory"]})
        lines.append(
            f"(budget = 2x output + {MASK_BYTES} bytes x B x L + {FIXED_BYTES // 1024} KiB; measured with "
            f"{'; '.join(methods)})"
        )
    lines += [
        "",
        "targets" + ("" if report["reference_shape"] else " (defined for B=64 L=512 D=768 float32 cpu)"),
    ]
    for t in report["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        value = (
            "-"
            if t["value"] is None
            else (f"{t['value']:.0f}" if t["unit"] == "bytes" else f"{t['value']:.2f}")
        )
        lines.append(f"  {verdict:<13}{t['target']}: {value} {t['unit']} (limit {t['limit']:g})")
    return "\n".join(lines)
