"""Pooling benchmark: tokenpool (numpy, torch; padded, packed) vs sentence-transformers, the seed and the floor.

``tokenpool bench`` plus the targets of issue 3 (`pooling_targets.py`): every target is printed as MET / NOT
MET, and ``--strict`` exits 1 when one is missed. Run ``python benchmarks/bench_pooling.py --help`` for the
options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pooling_targets import evaluate_targets  # next to this file: on sys.path when run as a script

from tokenpool.bench.pooling import main as bench_main


def main(argv: Sequence[str] | None = None) -> int:
    """`tokenpool bench` with issue 3's targets checked."""
    return bench_main(argv, check_targets=evaluate_targets)


if __name__ == "__main__":
    sys.exit(main())
