"""``tokenpool bench``: the pooling benchmark (its own argument parser: ``tokenpool bench --help``)."""

from __future__ import annotations

from typing import Any


def add_parser(commands: Any) -> None:
    commands.add_parser(
        "bench", help="benchmark the pooling kernels (tokenpool bench --help for options)", add_help=False
    )


def run_bench(argv: list[str]) -> int:
    from ..bench.pooling import main as bench_main

    return int(bench_main(argv) or 0)
