"""Stop 64 review of the command line's entry point: Ctrl-C before a command runs, by every way of starting it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli64 import INTERRUPT_IMPORT as INTERRUPT_CLI_IMPORT

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

# Ctrl-C while the parser is built: after `tokenpool.cli` imported, before a command runs
INTERRUPT_PARSER = """
import runpy, sys
import tokenpool.cli

def interrupted():
    raise KeyboardInterrupt

tokenpool.cli.build_parser = interrupted
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""

# Ctrl-C while `tokenpool.cli` imports (the console script's first ~0.2 s), then the console script's call
INTERRUPT_IMPORT = INTERRUPT_CLI_IMPORT + "from tokenpool.__main__ import main\nsys.exit(main())\n"


@pytest.mark.parametrize("module", ["tokenpool", "tokenpool.cli"])
def test_ctrl_c_while_parsing_is_one_line_for_both_module_entries(module):
    """``python -m tokenpool.cli`` (the form docs/architecture.md and the hostile tests use) still printed a
    KeyboardInterrupt traceback for a Ctrl-C while its parser was built: only ``tokenpool.__main__.main`` caught it.
    `tokenpool.cli.main` now says the one line itself, so both entries print it and exit 130 (as Python's own
    convention for SIGINT, 128 + 2)."""
    done = subprocess.run([sys.executable, "-c", INTERRUPT_PARSER, module, "embed", "x"], env=ENV,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (128 + 2, "", "tokenpool: interrupted\n")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX shell to close descriptor 2")
def test_ctrl_c_while_loading_with_stderr_closed_writes_nothing_to_stdout():
    """``tokenpool embed ... 2>&-`` interrupted while the command line imported wrote "tokenpool: interrupted" to
    stdout (``print(file=None)`` is stdout, and sys.stderr is None when descriptor 2 is closed at start), where the
    output may go. Now nothing is written to stdout and the exit status is still 130."""
    script = 'exec "$0" -c "$1" embed x 2>&-'
    done = subprocess.run(["sh", "-c", script, sys.executable, INTERRUPT_IMPORT], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (128 + 2, "")
