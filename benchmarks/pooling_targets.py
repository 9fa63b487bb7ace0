"""The performance targets of issue 19 for the pooling benchmark, checked on a finished ``tokenpool bench`` report.

Issue 19 ("pooling at memory speed for real") sets them, at 1 and at 2 threads, the floor measured at the same
thread count (the fastest plain read of the real tokens, see `tokenpool.bench.pooling`):

- mean, mean_sqrt_len_tokens, weightedmean, max and splade (its default max reduction) within 1.2x the floor
  with torch CPU tensors and 1.3x with numpy arrays, padded and packed input alike (splade's sum reduction is
  reported, not targeted);
- faster than sentence-transformers' packed path on every strategy it has (its time / ours >= 1.2, on the same
  packed tokens), and >= 10x / >= 30x its padded mean / max;
- cls / lasttoken <= 0.3 ms on padded torch tensors;
- 1 -> N threads (run with ``--threads N``, N > 1): >= 1.6x on every full-read strategy;
- no extra memory beyond today's bound: numpy mean / max / weightedmean peak <= 300 KiB, and every call
  within 2x its output + 32 bytes per mask element + 64 KiB (issue 3);
- and, from issues 3 and 14: nothing timed beats the floor, and pool_packed is no slower than pool (the two
  calls timed alternating on the same tokens).

They are defined for the reference shape (B=64, L=512, D=768, float32, CPU); on other shapes they are still
evaluated, and the report says so. `benchmarks/bench_pooling.py` passes `evaluate_targets` to
`tokenpool.bench.pooling.main`.
"""

from __future__ import annotations

from typing import Any

FLOOR_LIMITS = {"torch": 1.2, "numpy": 1.3}  # tokenpool time / floor time, per library, padded and packed
FLOOR_STRATEGIES = ("mean", "mean_sqrt_len_tokens", "weightedmean", "max", "splade")
ST_PACKED_SPEEDUP = 1.2  # sentence-transformers' packed time / ours (torch, packed), every strategy it has
ST_STRATEGIES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
ST_PADDED_SPEEDUPS = {"mean": 10.0, "max": 30.0}  # sentence-transformers' padded time / ours (torch, padded)
PICK_STRATEGIES = ("cls", "lasttoken")
PICK_LIMIT_MS = 0.3  # padded torch tensors
THREAD_SPEEDUP = 1.6  # 1 -> N threads, full-read strategies
FULL_READ = (*FLOOR_STRATEGIES, "splade(sum)")
SMALL_PEAK_BYTES = 300 * 1024  # numpy mean / max / weightedmean
SMALL_PEAK_STRATEGIES = ("mean", "max", "weightedmean")
MASK_BYTES = 32  # the O(B×L) allowance of the memory budget, bytes per mask element
FIXED_BYTES = 64 * 1024  # Python objects (tracemalloc counts them too), independent of the shapes
FLOOR_SLACK = 0.95  # "nothing beats the floor": every other candidate >= 0.95x (timer noise)
PACKED_SLACK = 1.05  # "no slower": medians within 5% count as equal (timer noise)
REFERENCE_SHAPE = {"batch": 64, "length": 512, "dim": 768, "dtype": "float32", "device": "cpu"}


def memory_budget(config: dict[str, Any], output_bytes: int) -> int:
    """Bytes one pooling call may allocate: twice its output, 32 bytes per mask element, 64 KiB of objects."""
    return 2 * output_bytes + MASK_BYTES * config["batch"] * config["length"] + FIXED_BYTES


class _Targets:
    """Collects targets as dicts {"target", "value", "limit", "unit", "met"} (met None: not measured)."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.items: list[dict[str, Any]] = []
        self.found = {
            (t["group"], t["library"], t["layout"], t["strategy"], t.get("threads")): t for t in report["timings"]
        }

    def get(self, group: str, library: str, layout: str, strategy: str, threads: int | None = None) -> Any:
        return self.found.get((group, library, layout, strategy, threads))

    def add(self, name: str, value: float | None, limit: float, unit: str, *, at_most: bool) -> None:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        self.items.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": met})


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and met True / False (None when it was not measured).

    Also writes into ``report``: each memory row's ``budget_bytes``, ``reference_shape`` and, off the reference
    shape, a ``targets_note`` saying where the targets are defined.
    """
    targets = _Targets(report)
    _floor_targets(targets)
    _packed_target(targets, report.get("layouts") or [])
    _sentence_transformers_targets(targets)
    for strategy in PICK_STRATEGIES:
        t = targets.get("tokenpool", "torch", "padded", strategy)
        targets.add(f"torch padded {strategy} <= {PICK_LIMIT_MS} ms", None if t is None else t["median_ms"],
                    PICK_LIMIT_MS, "ms", at_most=True)  # fmt: skip
    _thread_targets(targets, report["config"].get("threads"), report["config"].get("floor_speedup"))
    _memory_targets(targets, report)
    config = report["config"]
    report["reference_shape"] = all(config[key] == value for key, value in REFERENCE_SHAPE.items())
    if not report["reference_shape"]:
        report["targets_note"] = "defined for B=64 L=512 D=768 float32 cpu"
    return targets.items


def _floor_targets(targets: _Targets) -> None:
    """Each full-read strategy within its library's limit of the floor, at N threads and (when timed) at 1."""
    for threads, where in ((None, ""), (1, " at 1 thread")):
        for library, limit in FLOOR_LIMITS.items():
            for layout in ("padded", "packed"):
                for strategy in FLOOR_STRATEGIES:
                    t = targets.get("tokenpool", library, layout, strategy, threads)
                    if t is None and threads == 1:
                        continue  # (timed at 1 thread only with --threads N > 1)
                    targets.add(f"{library} {layout} {strategy} <= {limit}x floor{where}",
                                None if t is None else t["vs_floor"], limit, "x", at_most=True)  # fmt: skip
    timed = [t for t in targets.found.values() if t["group"] != "floor" and t["strategy"] not in PICK_STRATEGIES]
    fastest = min(timed, key=lambda t: t["vs_floor"]) if timed else None
    name = "" if fastest is None else (
        f" (fastest: {fastest['group']} {fastest['library']} {fastest['layout']} {fastest['strategy']}"
        + ("" if fastest.get("threads") is None else f" at {fastest['threads']} thread") + ")"
    )  # fmt: skip
    targets.add(f"nothing beats the floor: every full-read candidate >= {FLOOR_SLACK}x floor{name}",
                None if fastest is None else fastest["vs_floor"], FLOOR_SLACK, "x", at_most=False)  # fmt: skip


def _packed_target(targets: _Targets, layouts: list[dict[str, Any]]) -> None:
    """pool_packed no slower than pool: the worst ratio of the two calls' medians, timed alternating
    (`tokenpool.bench.pooling.time_layouts`); without those pairs, the ratio of the two rows' x-floor figures
    (each from its own floor block, whose drift it carries: ±15% within one run here, stop 53)."""
    ratios = [row["ratio"] for row in layouts]
    how = "the two calls alternating"
    if not ratios:
        how = "x floor of each"
        for (group, library, layout, strategy, threads), t in targets.found.items():
            twin = targets.get(group, library, "padded", strategy, threads)
            if group == "tokenpool" and layout == "packed" and threads is None and twin is not None:
                ratios.append(t["vs_floor"] / twin["vs_floor"])
    targets.add(f"pool_packed no slower than pool (worst packed/padded ratio, {how}; <= {PACKED_SLACK} for timer "
                "noise)", max(ratios) if ratios else None, PACKED_SLACK, "x", at_most=True)  # fmt: skip


def _sentence_transformers_targets(targets: _Targets) -> None:
    for strategy in ST_STRATEGIES:
        t = targets.get("tokenpool", "torch", "packed", strategy)
        value = None if t is None else t["speedup_vs_st"]
        targets.add(f"torch packed {strategy} >= {ST_PACKED_SPEEDUP}x faster than sentence-transformers' packed path",
                    value, ST_PACKED_SPEEDUP, "x", at_most=False)  # fmt: skip
    for strategy, limit in ST_PADDED_SPEEDUPS.items():
        t = targets.get("tokenpool", "torch", "padded", strategy)
        value = None if t is None else t["speedup_vs_st"]
        targets.add(f"torch padded {strategy} >= {limit:g}x faster than sentence-transformers", value, limit, "x",
                    at_most=False)  # fmt: skip


def _thread_targets(targets: _Targets, threads: int | None, floor_speedup: float | None) -> None:
    """1 -> N threads on every full-read strategy: the worst speed-up per library and layout (and the floor's
    own in the name: a floor that does not scale means memory bandwidth, not the kernels, is the limit); each
    1-thread row's ``speedup`` (`tokenpool.bench.pooling`: drifts between the two phases cancel)."""
    floor = "" if floor_speedup is None else f"; the floor's own: {floor_speedup:.2f}x"
    for library in FLOOR_LIMITS:
        for layout in ("padded", "packed"):
            speedups = {}
            for strategy in FULL_READ:
                one = targets.get("tokenpool", library, layout, strategy, 1)
                if one is not None and one.get("speedup") is not None:
                    speedups[strategy] = one["speedup"]
            worst = min(speedups, key=speedups.get) if speedups else None
            name = f"{library} {layout} 1 -> {threads or 'N'} threads >= {THREAD_SPEEDUP}x on every full-read strategy"
            name += "" if worst is None else f" (worst: {worst}{floor})"
            targets.add(name, None if worst is None else speedups[worst], THREAD_SPEEDUP, "x", at_most=False)


def _memory_targets(targets: _Targets, report: dict[str, Any]) -> None:
    config = report["config"]
    for row in report["memory"]:
        row["budget_bytes"] = memory_budget(config, row["output_bytes"])
    small = [r for r in report["memory"] if r["library"] == "numpy" and r["strategy"] in SMALL_PEAK_STRATEGIES]
    worst = max(small, key=lambda r: r["peak_bytes"]) if small else None
    targets.add(f"numpy mean/max/weightedmean peak extra memory <= {SMALL_PEAK_BYTES // 1024} KiB"
                + ("" if worst is None else f" (worst: {worst['layout']} {worst['strategy']})"),
                None if worst is None else worst["peak_bytes"], SMALL_PEAK_BYTES, "bytes", at_most=True)  # fmt: skip
    for library in ("torch", "torch-own", "numpy"):
        mine = [row for row in report["memory"] if row["library"] == library]
        if mine:
            row = max(mine, key=lambda r: r["peak_bytes"] / r["budget_bytes"])
            targets.add(f"{library} peak extra memory <= 2x output + {MASK_BYTES}*B*L + {FIXED_BYTES // 1024} KiB "
                        f"(worst: {row['layout']} {row['strategy']})", row["peak_bytes"], row["budget_bytes"], "bytes",
                        at_most=True)  # fmt: skip
