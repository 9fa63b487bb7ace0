"""``python -m tokenpool.cli``: the ``tokenpool`` command."""

import sys

from . import main

sys.exit(main())
