"""``python -m tokenpool``: the ``tokenpool`` command (as ``python -m tokenpool.cli``)."""

import sys

from .cli import main

sys.exit(main())
