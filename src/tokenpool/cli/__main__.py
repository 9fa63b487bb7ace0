"""``python -m tokenpool.cli``: the ``tokenpool`` command (the console script's entry point)."""

import sys

from tokenpool.__main__ import main

sys.exit(main())
