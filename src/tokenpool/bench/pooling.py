"""`tokenpool bench`: time tokenpool's pooling against sentence-transformers, the seed and the memory floor.

Every candidate runs in this one process on the same arrays, in rounds (`harness.time_candidates`). The
floor is the fastest plain read of the real tokens, packed into one T×D array and read once, writing nothing,
so that no pooling can beat it. With ``--threads N`` (N > 1) the full-read candidates and the floor are also
timed at one thread. ``benchmarks/bench_pooling.py`` checks issue 19's targets on them."""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ..core.strategies import parse_strategies, split_names, strategy_names
from ..devices import device_parts
from ..errors import OptionError, one_line, option_integer, option_number, shown_name
from .flush import available, flusher, instruction
from .harness import (
    Candidate,
    CompiledRead,
    ParallelRead,
    Timing,
    machine,
    memory_bytes,
    peak_extra_bytes,
    peak_host_bytes,
    read_bandwidth,
    stream_bytes,
    time_candidates,
)

LIBRARIES = ("torch", "numpy", "torch-own")  # what --libraries takes
STRATEGIES = strategy_names()  # the default of --strategies: every strategy (splade on the same arrays)
SPLADE_SUM = "splade(sum)"  # the row of splade with reduction="sum", timed whenever splade is
PICKS = ("cls", "lasttoken")  # strategies that read one token per row; the others read every real token
MODES = ("flushed", "warm", "cold", "evicted")
# The largest value of a size option (numpy's and torch's: a dimension and the int32 offsets) and of --threads
# (torch takes a C int, but OpenMP runs out of memory creating 2**31 threads: more than any machine's CPUs).
HIGHEST = {"batch": 2**31 - 1, "length": 2**31 - 1, "dim": 2**31 - 1, "threads": 4096}

# Checks targets on a finished report (its "timings", "memory", "config"): returns one dict per target,
# {"target": name, "value": measured or None, "limit": number, "unit": str, "met": True / False / None}. It may
# add keys to the report (a "targets_note" is printed after the targets' heading).
TargetCheck = Callable[[dict[str, Any]], list[dict[str, Any]]]


class BenchError(Exception):
    """A bad option: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Raises `BenchError` for a bad option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BenchError(message)


def main(argv: Sequence[str] | None = None, *, check_targets: TargetCheck | None = None) -> int:
    """Run the benchmark; print a table (or ``--json``); exit 0, or 2 on a bad option. ``check_targets`` adds
    the report's "targets" (a MET / NOT MET line each) and ``--strict``, which exits 1 when one is missed."""
    try:
        args = parse_args(argv, build_parser(strict=check_targets is not None))
        report = run(args)
    except BenchError as exc:
        print(f"tokenpool bench: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if check_targets is not None:
        report["targets"] = check_targets(report)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    missed = [t for t in report.get("targets", ()) if t["met"] is False]
    return 1 if getattr(args, "strict", False) and missed else 0


def build_parser(*, strict: bool = False) -> argparse.ArgumentParser:
    """The options of ``tokenpool bench`` (and ``--strict`` when targets are checked)."""
    # (shortened options refused, as every tokenpool command does)
    parser = _Parser(prog="tokenpool bench", description=__doc__.splitlines()[0], allow_abbrev=False)
    data = parser.add_argument_group("data")
    data.add_argument("--batch", type=option_integer, default=64, help="rows B (default 64)")
    data.add_argument("--length", type=option_integer, default=512, help="padded length L (default 512)")
    data.add_argument("--dim", type=option_integer, default=768, help="hidden size D (default 768)")
    data.add_argument("--min-length", type=option_integer, help="shortest row (default min(16, --max-length)); lengths are uniform")
    data.add_argument("--max-length", type=option_integer, help="longest row (default L)")
    data.add_argument("--padding-fraction", type=option_number, help="draw lengths so that about this fraction of "
                      "the B×L tensor is padding (overrides min/max)")  # fmt: skip
    data.add_argument("--padding-side", choices=("right", "left"), default="right")
    data.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    data.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, …)")
    data.add_argument("--seed", type=option_integer, default=0)
    runs = parser.add_argument_group("run")
    runs.add_argument("--repeats", type=option_integer, default=30, help="timed calls per candidate (default 30)")
    runs.add_argument("--warmup", type=option_integer, default=2, help="untimed calls first (default 2)")
    runs.add_argument("--mode", choices=MODES, help="flushed (the default on an x86-64 CPU with numba, else "
                      "warm): warm blocks, each timed call after the arrays' cache lines are flushed, so that every "
                      "candidate, the floor too, reads them from memory while its code stays warm; warm: blocks of "
                      "consecutive calls (a last-level cache may hold part of the arrays); cold: round-robin, every "
                      "call after a different candidate; evicted: warm blocks, each timed call after an untimed "
                      "read of other memory, 4x the last-level cache (code and data from memory, as after a "
                      "model's forward pass)")  # fmt: skip
    runs.add_argument("--rounds", type=option_integer, default=5, help="blocks per candidate in warm mode (default 5)")
    runs.add_argument("--settle-ms", type=option_number, default=20.0, help="warm mode: untimed calls for at least this "
                      "long before each block's timed ones (default 20; 0: one call)")  # fmt: skip
    runs.add_argument("--threads", type=option_integer, help="torch intra-op threads (default: torch's)")
    runs.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all; "
                      "splade is timed with both reductions, on the hidden states)")  # fmt: skip
    runs.add_argument("--libraries", default="torch,numpy", help="tokenpool backends to time: torch, numpy, "
                      "torch-own (torch's own kernels, as used under autograd)")  # fmt: skip
    switches = {
        "--no-st": "skip sentence-transformers", "--no-memory": "skip the peak-memory report",
        "--no-scaling": "with --threads N > 1: skip timing at 1 thread as well",
        "--no-bandwidth": "skip the STREAM-like bandwidth read",
        "--json": "print one JSON document instead of tables",
        **({"--strict": "exit 1 when a target is not met"} if strict else {}),
    }  # fmt: skip
    for flag, text in switches.items():
        runs.add_argument(flag, action="store_true", help=text)
    return parser


def _parse_lists(args: argparse.Namespace) -> None:
    """Set ``args.strategy_list`` and ``args.library_list``: each name once, in the order given."""
    try:
        args.strategy_list = list(dict.fromkeys(m.value for m in parse_strategies(args.strategies)))
        args.library_list = list(dict.fromkeys(split_names(args.libraries, what="library", valid=LIBRARIES, separators=",")))
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    unknown = sorted(set(args.library_list) - set(LIBRARIES))
    if unknown or not args.library_list:
        got = ", ".join(map(shown_name, unknown)) or repr(args.libraries)
        raise BenchError(f"--libraries takes torch, numpy and torch-own, got {got}")


def parse_args(
    argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parse and check the options (BenchError on a bad one); adds ``strategy_list`` and ``library_list``."""
    args, extra = (parser or build_parser()).parse_known_args(argv)
    if extra:  # (quoted where a line break and a typed backslash-n would read alike, as the CLI's own)
        raise BenchError(f"unrecognized arguments: {' '.join(map(shown_name, extra))}")
    for name in ("batch", "length", "dim", "repeats", "rounds", "warmup", "seed", "threads"):
        value, low, high = getattr(args, name), 0 if name in ("warmup", "seed") else 1, HIGHEST.get(name)
        if value is not None and value < low:
            raise BenchError(f"--{name} must be >= {low}, got {value}")
        if value is not None and high is not None and value > high:
            raise BenchError(f"--{name} must be <= {high}, got {value}")
    if not 0 <= args.settle_ms < float("inf"):
        raise BenchError(f"--settle-ms must be a number >= 0, got {args.settle_ms}")
    on_cpu = args.device.split(":")[0] == "cpu"
    if args.mode in ("evicted", "flushed") and not on_cpu:
        raise BenchError(f"--mode {args.mode} empties the CPU's caches: it has no meaning on --device {args.device}")
    args.max_length = args.length if args.max_length is None else args.max_length
    args.min_length = min(16, args.max_length) if args.min_length is None else args.min_length
    if not 0 <= args.min_length <= args.max_length <= args.length:
        raise BenchError(f"need 0 <= --min-length <= --max-length <= --length, got {args.min_length}, "
                         f"{args.max_length}, {args.length}")
    # at most: the float32 draw and its real tokens, the bool and int64 masks, and on the CPU the states and
    # packed tokens (--device cuda holds those in GPU memory)
    itemsize, memory = (4 if args.dtype == "float32" else 2) if on_cpu else 0, memory_bytes()
    need = args.batch * args.length * (args.dim * (8 + 2 * itemsize) + 9)
    if memory is not None and need > memory:
        raise BenchError(f"--batch {args.batch} x --length {args.length} x --dim {args.dim} ({args.dtype}) needs up to "
                         f"{need / 2**30:,.1f} GiB for the benchmark's arrays, more than the "
                         f"{memory / 2**30:,.1f} GiB of memory this process may use: lower one of them")  # fmt: skip
    if args.padding_fraction is not None and not 0 <= args.padding_fraction < 1:
        raise BenchError(f"--padding-fraction must be in [0, 1), got {args.padding_fraction}")
    _parse_lists(args)
    import torch

    try:  # (the project's reading first: torch keeps 8 bits of an index, "cuda:300" would be its cuda:44)
        device = torch.device(*device_parts(args.device, "--device"))
    except OptionError as exc:
        raise BenchError(str(exc)) from None
    except RuntimeError as exc:
        raise BenchError(f"--device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {args.device}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"--device must be cpu or cuda, got {args.device}")
    if set(args.library_list) == {"numpy"} and (args.dtype == "bfloat16" or device.type != "cpu"):
        raise BenchError(f"--libraries numpy times nothing at --dtype {args.dtype} on --device {args.device}: numpy "
                         "has no bfloat16 and runs on the CPU only; add torch")  # fmt: skip
    return args


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
    if not lengths.any():  # the floor (and every ratio to it) is a read of the real tokens
        raise BenchError(f"every drawn row is empty (0 real tokens of {args.batch}x{args.length}): raise "
                         "--max-length or lower --padding-fraction")  # fmt: skip
    columns = np.arange(args.length)[None, :]
    right = args.padding_side == "right"
    mask = columns < lengths[:, None] if right else columns >= (args.length - lengths)[:, None]
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


def candidates(args: argparse.Namespace, data: dict[str, Any]) -> list[Candidate]:
    """The floor, the references, sentence-transformers and tokenpool (each library, strategy and layout);
    with ``args.scaling`` also the floor and tokenpool's full-read candidates at one thread."""
    import torch

    hidden, mask, tokens, cu = data["torch"]
    rows, length, dim = hidden.shape
    real = tokens.numel() * tokens.element_size()
    padded_bytes = hidden.numel() * hidden.element_size()
    out: list[Candidate] = floor_candidates(data, args.threads_used) + [
        (Timing("reference", "torch", "padded", "sum", bytes_read=padded_bytes),
         lambda: torch.sum(hidden.view(rows * length, dim), 0)),
        (Timing("seed", "torch", "padded", "mean", bytes_read=padded_bytes), lambda: hidden.mean(dim=1)),
    ]  # fmt: skip
    if "numpy" in data:
        np_hidden = data["numpy"][0]
        seed = Timing("seed", "numpy", "padded", "mean", bytes_read=padded_bytes)
        out.append((seed, lambda: np_hidden.mean(axis=1)))
    if not args.no_st:
        out += _st_candidates(args, data)
    picked = rows * dim * tokens.element_size()
    for library in (name for name in args.library_list if _data_for(name, data) is not None):
        for strategy, layout in itertools.product(_timed_strategies(args), ("padded", "packed")):
            read = picked if strategy in PICKS else real
            timing = Timing("tokenpool", library, layout, strategy, bytes_read=read)
            out.append((timing, tokenpool_call(library, layout, strategy, data)))
    if args.scaling:
        out += [(_one_thread(t), call) for t, call in floor_candidates(data, 1)]
        out += [(_one_thread(t), call) for t, call in out if t.group == "tokenpool" and t.strategy not in PICKS]
    return out


def floor_candidates(data: dict[str, Any], threads: int) -> list[Candidate]:
    """Plain reads of the packed real tokens, writing nothing: torch's ``sum()`` and ``amax()`` on its intra-op
    threads (or the GPU) and, on CPU, numpy's flat ``max`` and (with numba) the compiled row kernels' max over
    ``threads`` equal parts on as many threads. The floor is the fastest."""
    tokens = data["torch"][2]
    real = tokens.numel() * tokens.element_size()
    out: list[Candidate] = [
        (Timing("floor", "torch", "packed", "sum", bytes_read=real), lambda: tokens.sum()),
        (Timing("floor", "torch", "packed", "amax", bytes_read=real), lambda: tokens.amax()),
    ]
    if "numpy" in data:
        read = ParallelRead(data["numpy"][2], threads)
        out.append((Timing("floor", "numpy", "packed", "read", bytes_read=real), read))
        compiled = CompiledRead.of(data["numpy"][2], threads)
        if compiled is not None:
            out.append((Timing("floor", "compiled", "packed", "read", bytes_read=real), compiled))
    return out


def _one_thread(timing: Timing) -> Timing:
    return Timing(*_key(asdict(timing)), bytes_read=timing.bytes_read, threads=1)


def _timed_strategies(args: argparse.Namespace) -> list[str]:
    strategies = list(args.strategy_list)
    return strategies + [SPLADE_SUM] if "splade" in strategies else strategies


def _data_for(library: str, data: dict[str, Any]) -> tuple | None:
    return data.get("torch" if library == "torch-own" else library)


def tokenpool_call(library: str, layout: str, strategy: str, data: dict[str, Any]) -> Callable[[], Any]:
    """A no-argument call of ``pool`` (padded) or ``pool_packed`` (packed) on the benchmark's arrays;
    "torch-own" forces torch's own kernels on CPU (as autograd and bfloat16 use) over the numpy ones."""
    from .. import pool, pool_packed
    from ..core import fast

    hidden, mask, tokens, cu = _data_for(library, data)
    options = {"reduction": "sum"} if strategy == SPLADE_SUM else {}
    strategy = "splade" if strategy == SPLADE_SUM else strategy
    arrays = (pool_packed, tokens, cu) if layout == "packed" else (pool, hidden, mask)
    call = functools.partial(*arrays, strategy, **options)
    if library != "torch-own":
        return call

    def own_kernels() -> Any:
        saved, fast.TORCH_CPU_VIA_NUMPY = fast.TORCH_CPU_VIA_NUMPY, False
        try:
            return call()
        finally:
            fast.TORCH_CPU_VIA_NUMPY = saved

    return own_kernels


def _st_candidates(args: argparse.Namespace, data: dict[str, Any]) -> list[Candidate]:
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
    rows, out = hidden.shape[0], []
    for strategy in (name for name in args.strategy_list if name != "splade"):
        module = StPooling(hidden.shape[-1], pooling_mode=strategy)

        def padded(module: Any = module) -> Any:
            return module({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]

        def packed(module: Any = module) -> Any:
            features = {"token_embeddings": tokens[None], "cu_seq_lens_q": cu.long()}
            return module(features)["sentence_embedding"]

        read = (rows * hidden.shape[2] if strategy in PICKS else tokens.numel()) * tokens.element_size()
        out.append((Timing("sentence-transformers", "torch", "padded", strategy, bytes_read=read), padded))
        # (packed, ST's cls takes the next row's first token for an empty row, and an empty last row fails)
        if hasattr(module, "_forward_flattened") and data["lengths"].all():
            out.append((Timing("sentence-transformers", "torch", "packed", strategy, bytes_read=read), packed))
    return out


def timing_options_of(args: argparse.Namespace) -> dict[str, Any]:
    """`harness.time_candidates`' options for this run (its mode, repeats, threads, settling, flush or eviction)."""
    import torch

    def set_threads(threads: int | None) -> None:  # tokenpool's numpy kernels follow torch's thread count
        torch.set_num_threads(args.threads_used if threads is None else threads)

    return {
        "device": args.device, "mode": "cold" if args.mode == "cold" else "warm", "repeats": args.repeats,
        "rounds": args.rounds, "warmup": args.warmup, "set_threads": set_threads, "settle_ms": args.settle_ms,
        "evict": evictor() if args.mode == "evicted" else args.flush,
    }  # fmt: skip


def time_all(args: argparse.Namespace, cands: list[Candidate], timing_options: dict[str, Any]) -> list[Timing]:
    """Time the floor candidates, then every other candidate, each block right after a block of the fastest floor
    read of its thread count (`harness.time_candidates`' paired); the ratios: each candidate to the floor timed beside it
    (the floor rows: to the fastest), and sentence-transformers' ratio over tokenpool's for the same layout and
    strategy. Pairing keeps the machine's drifts between blocks (this VM's memory speed moves by 2x within
    seconds) out of the ratios. ``timing_options``: `timing_options_of`'s."""
    floor_cands = [cand for cand in cands if cand[0].group == "floor"]
    floors = time_candidates(floor_cands, **timing_options)
    fastest: dict[int | None, tuple[float, Callable[[], Any]]] = {}
    for timing, call in floor_cands:
        if timing.threads not in fastest or timing.median_ms < fastest[timing.threads][0]:
            fastest[timing.threads] = (timing.median_ms, call)
    others = [cand for cand in cands if cand[0].group != "floor"]
    # (cold mode is unpaired: its blocks are single calls, so every candidate call would follow a floor read,
    # the interleaving `time_candidates` warns of, with part of the packed tokens left in cache)
    paired = None if args.mode == "cold" else (lambda timing: fastest[timing.threads][1])
    time_candidates(others, **timing_options, paired=paired)
    for timing in floors:
        timing.vs_floor = timing.median_ms / fastest[timing.threads][0]
    for timing, _ in others:
        timing.vs_floor = timing.median_ms / (timing.floor_ms or fastest[timing.threads][0])
    # ST/ours: the rows' x floor for full reads; the rows' ms for picks, whose few gathered rows take a time the
    # floor's bandwidth does not set (divided by floors of two blocks, they swung 0.8-1.5 at equal ms)
    st = {(t.layout, t.strategy): t for t, _ in others if t.group == "sentence-transformers"}
    for timing, _ in others:
        theirs = st.get((timing.layout, timing.strategy))
        if timing.group == "tokenpool" and timing.threads is None and theirs is not None:
            by = "median_ms" if timing.strategy in PICKS else "vs_floor"
            timing.speedup_vs_st = getattr(theirs, by) / getattr(timing, by)
    return [timing for timing, _ in cands]


def time_layouts(args: argparse.Namespace, data: dict[str, Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    """`pool_packed` against `pool` on the same tokens, per library and full-read strategy: the two calls in one
    round-robin (each after the mode's flush or eviction), so each packed call is timed next to its padded twin,
    and the ratio of their medians carries none of the drift between two floor blocks that a ratio of two
    x-floor figures does (those moved by ±15% within a run: RESULTS.md, stop 53)."""
    libraries = [name for name in args.library_list if _data_for(name, data) is not None]
    strategies = [s for s in _timed_strategies(args) if s not in PICKS]
    pairs = [(Timing("layouts", library, layout, strategy), tokenpool_call(library, layout, strategy, data))
             for library in libraries for strategy in strategies for layout in ("padded", "packed")]  # fmt: skip
    if not pairs:
        return []
    timed = time_candidates(pairs, **{**options, "mode": "cold", "repeats": 2 * args.repeats})
    return [{"library": padded.library, "strategy": padded.strategy, "padded_ms": padded.median_ms,
             "packed_ms": packed.median_ms, "ratio": packed.median_ms / padded.median_ms}
            for padded, packed in zip(timed[::2], timed[1::2], strict=True)]  # fmt: skip


def _thread_speedups(timings: list[Timing]) -> float | None:
    """Each 1-thread row's ``speedup``: its N-thread twin's time over its own. For the floors the ratio of the
    medians (their phases run back to back); for the others the floors' ratio times the ratio of the two rows'
    x-floor figures, each timed beside its floor (the drift between the phases cancels). Returns the floors'
    own speed-up (None without a 1-thread phase)."""
    many = {_key(vars(t)): t for t in timings if t.threads is None}
    floor_one = min((t.median_ms for t in timings if t.group == "floor" and t.threads == 1), default=None)
    floor_many = min((t.median_ms for t in timings if t.group == "floor" and t.threads is None), default=None)
    for timing in timings:
        twin = many.get(_key(vars(timing))) if timing.threads == 1 else None
        if twin is None or floor_one is None or floor_many is None:
            continue
        if timing.group == "floor":
            timing.speedup = timing.median_ms / twin.median_ms
        else:
            timing.speedup = floor_one / floor_many * timing.vs_floor / twin.vs_floor
    return None if floor_one is None or floor_many is None else floor_one / floor_many


def evictor() -> Callable[[], Any]:
    """A read of `harness.stream_bytes` of memory no candidate reads (on CPU; the caches then hold none of their
    arrays), by numpy on this thread: no thread pool is left spinning for the candidate that follows (torch's
    would be)."""
    other = np.ones(stream_bytes() // 4, dtype=np.float32)
    return functools.partial(np.maximum.reduce, other)


def _flusher(args: argparse.Namespace, data: dict[str, Any], on_cpu: bool) -> Callable[[], None] | None:
    """For --mode flushed (and by default where it runs): a flush of every array of the data from the caches;
    sets ``args.mode`` to "warm" when no mode was asked for and none can be made (BenchError when asked)."""
    flush = flusher(data["torch"]) if on_cpu and args.mode in (None, "flushed") else None
    if args.mode == "flushed" and flush is None:
        raise BenchError(f"--mode flushed needs numba on an x86-64 CPU: {available() or 'numba cannot compile it'}")
    args.mode = args.mode or ("flushed" if flush is not None else "warm")
    return flush


def check_outputs(cands: list[Candidate], lengths: np.ndarray) -> None:
    """Largest |tokenpool − sentence-transformers| per strategy over the rows of ``lengths`` > 0 real tokens: the
    timed calls compute the same thing (an empty row is zeros in tokenpool, −inf for ST's max, its padding for cls)."""
    import torch

    real = torch.from_numpy(lengths > 0)
    with torch.inference_mode():
        st = {t.strategy: call() for t, call in cands
              if t.group == "sentence-transformers" and t.layout == "padded"}  # fmt: skip
        for timing, call in cands:
            if timing.group == "tokenpool" and timing.threads is None and timing.strategy in st:
                ours = torch.as_tensor(call()).to(device="cpu", dtype=torch.float64)[real]
                theirs = st[timing.strategy].to(device="cpu", dtype=torch.float64)[real]
                timing.max_abs_diff_vs_st = float((ours - theirs).abs().max())


def memory_report(args: argparse.Namespace, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak extra bytes of every tokenpool call, next to the size of its output."""
    rows, length, dim = data["torch"][0].shape
    report = []
    for library in (name for name in args.library_list if _data_for(name, data) is not None):
        output = rows * dim * _data_for(library, data)[0].dtype.itemsize
        for layout, strategy in itertools.product(("padded", "packed"), _timed_strategies(args)):
            call = tokenpool_call(library, layout, strategy, data)
            call()  # first calls import modules and fill caches: not the pooling's memory
            peak, how = peak_host_bytes(call) if library == "numpy" else peak_extra_bytes(call, args.device)
            report.append({"library": library, "layout": layout, "strategy": strategy, "peak_bytes": peak,
                           "output_bytes": output, "method": how})  # fmt: skip
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the data, time every candidate, measure memory and bandwidth; a JSON-ready report."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)  # tokenpool's numpy kernels follow torch's thread count
    args.threads_used = torch.get_num_threads()
    on_cpu = torch.device(args.device).type == "cpu"
    args.scaling = args.threads_used > 1 and args.mode != "cold" and not args.no_scaling and on_cpu
    data = make_data(args)
    args.flush = _flusher(args, data, on_cpu)
    cands = candidates(args, data)
    bandwidth = None if args.no_bandwidth else read_bandwidth(args.threads_used, device=args.device)
    timing_options = timing_options_of(args)  # (once: --mode evicted's buffer is 4x the last-level cache)
    timings = time_all(args, cands, timing_options)
    layouts = time_layouts(args, data, timing_options)
    floor_speedup = _thread_speedups(timings)
    check_outputs(cands, data["lengths"])
    memory = [] if args.no_memory else memory_report(args, data)
    lengths = data["lengths"]
    config = {
        "batch": args.batch, "length": args.length, "dim": args.dim, "dtype": args.dtype, "device": args.device,
        "padding_side": args.padding_side, "min_row": int(lengths.min()), "max_row": int(lengths.max()),
        "real_fraction": round(float(lengths.sum()) / (args.batch * args.length), 4), "repeats": args.repeats,
        "mode": args.mode, "rounds": args.rounds, "settle_ms": args.settle_ms, "seed": args.seed,
        "threads": args.threads_used, "floor_speedup": floor_speedup,
        "flush": instruction() if args.mode == "flushed" else None,
    }  # fmt: skip
    rows = [{k: v for k, v in asdict(t).items() if k not in ("samples_ms", "floor_samples_ms")} for t in timings]
    return {"machine": machine(), "config": config, "bandwidth": bandwidth, "timings": rows, "layouts": layouts,
            "memory": memory}  # fmt: skip


def format_report(report: dict[str, Any]) -> str:
    """The report as text: a header, the timings, the memory table, and the targets when they were checked."""
    c, m = report["config"], report["machine"]
    lines = [
        f"tokenpool bench: B={c['batch']} L={c['length']} D={c['dim']} {c['dtype']} on {c['device']}, "
        f"{c['padding_side']} padding, rows {c['min_row']}..{c['max_row']} tokens ({c['real_fraction']:.0%} real), "
        f"medians of {c['repeats']} ({c['mode']}{': ' + c['flush'] if c.get('flush') else ''})",
        f"machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
        f"numpy {m['numpy']}, load {m.get('load_average')}; row kernels: {m.get('row_kernels')}; "
        f"OpenMP wait: {m.get('openmp_wait')}",
    ]
    band = report.get("bandwidth")
    if band:
        kernels = ", ".join(f"{name} {rate:.1f}" for name, rate in band["kernels"].items())
        lines.append(f"memory read bandwidth (STREAM-like, {band['bytes'] >> 20} MiB on "
                     f"{band.get('device', 'cpu')}, {band['threads']} threads): {band['gb_per_s']:.1f} GB/s "
                     f"({kernels})")  # fmt: skip
    head = _cells("group", "library", "layout", "strategy")
    lines += ["", "x floor: each row against the fastest floor read of its thread count, timed right before it; "
              "ST/ours: the ratio of the two rows' x floor (cls, lasttoken: of their ms)",
              f"{head}{'ms':>9}{'x floor':>9}{'GB/s':>7}{'ST/ours':>9}{'|d| vs ST':>11}"]  # fmt: skip
    lines += [_timing_line(t) for t in report["timings"] if t.get("threads") is None]
    lines += _one_thread_lines(report) + _layout_lines(report.get("layouts", []))
    lines += _memory_lines(report["memory"]) + _target_lines(report)
    return "\n".join(lines)


def _layout_lines(layouts: list[dict[str, Any]]) -> list[str]:
    """`time_layouts`' pairs: each strategy's padded and packed medians, timed alternating, and their ratio."""
    if not layouts:
        return []
    lines = ["", "pool_packed against pool (the two calls alternating; medians)",
             f"{_cells('group', 'library', '', 'strategy')}{'padded ms':>10}{'packed ms':>10}{'ratio':>7}"]  # fmt: skip
    for row in layouts:
        cells = _cells("layouts", row["library"], "", row["strategy"])
        lines.append(f"{cells}{row['padded_ms']:>10.3f}{row['packed_ms']:>10.3f}{row['ratio']:>7.2f}")
    return lines


def _one_thread_lines(report: dict[str, Any]) -> list[str]:
    """The candidates also timed at one thread, each with its N-thread speed-up."""
    single = [t for t in report["timings"] if t.get("threads") == 1]
    if not single:
        return []
    return ["", f"at 1 thread (same rounds; x floor: against the 1-thread floor), last column: speed-up of "
                f"{report['config'].get('threads')} threads over 1",
            *(_timing_line(t) + ("" if t.get("speedup") is None else f"  x{t['speedup']:.2f}") for t in single)]


def _key(t: dict[str, Any]) -> tuple[str, str, str, str]:
    return t["group"], t["library"], t["layout"], t["strategy"]


def _memory_lines(memory: list[dict[str, Any]]) -> list[str]:
    """The memory table (each call's peak next to its output, and its budget when targets were checked)."""
    if not memory:
        return []
    budget = all("budget_bytes" in row for row in memory)
    head = _cells("peak extra memory", "library", "layout", "strategy") + f"{'KiB':>9}{'x output':>9}"
    lines = ["", head + (f"{'budget':>9}" if budget else "")]
    for row in memory:
        cells = _cells("", row["library"], row["layout"], row["strategy"])
        lines.append(f"{cells}{row['peak_bytes'] / 1024:>9.0f}{row['peak_bytes'] / row['output_bytes']:>9.2f}"
                     + (f"{row['budget_bytes'] / 1024:>9.0f}" if budget else ""))  # fmt: skip
    return [*lines, f"(measured with {'; '.join(sorted({row['method'] for row in memory}))})"]


def _target_lines(report: dict[str, Any]) -> list[str]:
    """One MET / NOT MET / not measured line per target, when they were checked."""
    if "targets" not in report:
        return []
    note = report.get("targets_note")
    lines = ["", "targets" + (f" ({note})" if note else "")]
    for t in report["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        shown = "-" if t["value"] is None else format(t["value"], ".0f" if t["unit"] == "bytes" else ".2f")
        lines.append(f"  {verdict:<13}{t['target']}: {shown} {t['unit']} (limit {t['limit']:g})")
    return lines


def _timing_line(t: dict[str, Any]) -> str:
    speed = "" if t["speedup_vs_st"] is None else f"{t['speedup_vs_st']:.1f}"
    diff = "" if t["max_abs_diff_vs_st"] is None else f"{t['max_abs_diff_vs_st']:.1e}"
    rate = f"{t['gb_per_s']:.1f}" if t.get("gb_per_s") else ""
    cells = _cells(t["group"], t["library"], t["layout"], t["strategy"])
    return f"{cells}{t['median_ms']:>9.3f}{t['vs_floor']:>9.2f}{rate:>7}{speed:>9}{diff:>11}"


def _cells(group: str, library: str, layout: str, strategy: str) -> str:
    """A table row's first four columns."""
    return f"{group:<22}{library:<10}{layout:<8}{strategy:<22}"
