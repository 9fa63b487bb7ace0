"""Pooling benchmark: tokenpool (numpy, torch; padded, packed) vs sentence-transformers, the seed and the floor.

Same as ``tokenpool bench``; run ``python benchmarks/bench_pooling.py --help`` for the options.
"""

from __future__ import annotations

import sys

from tokenpool.bench.pooling import main

if __name__ == "__main__":
    sys.exit(main())
