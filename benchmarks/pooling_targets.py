"""The performance targets of issues 3 and 14 for the pooling benchmark, checked on a finished ``tokenpool bench``
report. Issue 14 redefined the floor (``tokens.sum()`` over the real tokens with all intra-op threads) and set
its limits: torch ≤ 1.3×, numpy ≤ 1.5×, and nothing timed may beat the floor.

They are defined for the reference shape (B=64, L=512, D=768, float32, CPU); on other shapes they are still
evaluated, and the report says so. `benchmarks/bench_pooling.py` passes `evaluate_targets` to
`tokenpool.bench.pooling.main`.
"""

from __future__ import annotations

from typing import Any

FLOOR_LIMITS = {"torch": 1.3, "numpy": 1.5}  # padded time / floor time, per library (issue 14)
FLOOR_SLACK = 0.95  # "nothing beats the floor": every other candidate >= 0.95x (timer noise on a shared machine)
FLOOR_STRATEGIES = ("mean", "mean_sqrt_len_tokens", "weightedmean", "max")
ST_SPEEDUPS = {"mean": 10.0, "max": 30.0}  # sentence-transformers' time / tokenpool's (torch, padded)
PICK_STRATEGIES = ("cls", "lasttoken")
PICK_LIMIT_MS = 0.5
MASK_BYTES = 32  # the O(B×L) allowance of the memory target, bytes per mask element
FIXED_BYTES = 64 * 1024  # Python objects (tracemalloc counts them too), independent of the shapes
PACKED_SLACK = 1.05  # "no slower": medians within 5% count as equal (timer noise on a shared machine)
REFERENCE_SHAPE = {"batch": 64, "length": 512, "dim": 768, "dtype": "float32", "device": "cpu"}


def memory_budget(config: dict[str, Any], output_bytes: int) -> int:
    """Bytes one pooling call may allocate: twice its output, 32 bytes per mask element, 64 KiB of objects."""
    return 2 * output_bytes + MASK_BYTES * config["batch"] * config["length"] + FIXED_BYTES


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and met True / False (None when it was not measured).

    Also writes into ``report``: each memory row's ``budget_bytes``, ``reference_shape`` and, off the reference
    shape, a ``targets_note`` saying where the targets are defined.
    """
    config = report["config"]
    found = {(t["group"], t["library"], t["layout"], t["strategy"]): t for t in report["timings"]}
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, met: bool | None, unit: str) -> None:
        targets.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": met})

    def padded(library: str, strategy: str) -> dict[str, Any] | None:
        return found.get(("tokenpool", library, "padded", strategy))

    for library, limit in FLOOR_LIMITS.items():
        for strategy in FLOOR_STRATEGIES:
            t = padded(library, strategy)
            value = None if t is None else t["vs_floor"]
            add(f"{library} {strategy} <= {limit}x floor", value, limit, None if t is None else value <= limit, "x")
    for strategy, limit in ST_SPEEDUPS.items():
        t = padded("torch", strategy)
        value = None if t is None else t["speedup_vs_st"]
        add(f"torch {strategy} >= {limit:g}x faster than sentence-transformers", value, limit,
            None if value is None else value >= limit, "x")  # fmt: skip
    for library in FLOOR_LIMITS:
        for strategy in PICK_STRATEGIES:
            t = padded(library, strategy)
            value = None if t is None else t["median_ms"]
            add(f"{library} {strategy} <= {PICK_LIMIT_MS} ms", value, PICK_LIMIT_MS,
                None if t is None else value <= PICK_LIMIT_MS, "ms")  # fmt: skip
    # every candidate that reads all real tokens (cls / lasttoken read one token per row: not comparable)
    others = [t for t in report["timings"] if t["group"] != "floor" and t["strategy"] not in PICK_STRATEGIES]
    fastest = min(others, key=lambda t: t["vs_floor"]) if others else None
    value = None if fastest is None else fastest["vs_floor"]
    name = "" if fastest is None else f" (fastest: {fastest['group']} {fastest['library']} {fastest['layout']} {fastest['strategy']})"
    add(f"nothing beats the floor: every full-read candidate >= {FLOOR_SLACK}x floor{name}", value, FLOOR_SLACK,
        None if value is None else value >= FLOOR_SLACK, "x")  # fmt: skip
    ratios = []
    for (group, library, layout, strategy), t in found.items():
        twin = found.get((group, library, "padded", strategy))
        if group == "tokenpool" and layout == "packed" and twin is not None:
            ratios.append(t["median_ms"] / twin["median_ms"])
    worst = max(ratios) if ratios else None
    add(f"pool_packed no slower than pool (worst packed/padded ratio, <= {PACKED_SLACK} for timer noise)",
        worst, PACKED_SLACK, None if worst is None else worst <= PACKED_SLACK, "x")  # fmt: skip
    for row in report["memory"]:
        row["budget_bytes"] = memory_budget(config, row["output_bytes"])
    for library in ("torch", "torch-own", "numpy"):
        mine = [row for row in report["memory"] if row["library"] == library]
        if mine:
            worst_row = max(mine, key=lambda row: row["peak_bytes"] / row["budget_bytes"])
            add(f"{library} peak extra memory <= 2x output + {MASK_BYTES}*B*L + {FIXED_BYTES // 1024} KiB (worst: "
                f"{worst_row['layout']} {worst_row['strategy']})", worst_row["peak_bytes"],
                worst_row["budget_bytes"], all(r["peak_bytes"] <= r["budget_bytes"] for r in mine), "bytes")  # fmt: skip
    report["reference_shape"] = all(config[key] == value for key, value in REFERENCE_SHAPE.items())
    if not report["reference_shape"]:
        report["targets_note"] = "defined for B=64 L=512 D=768 float32 cpu"
    return targets
