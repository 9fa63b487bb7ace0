"""Stop 62, the command line's plumbing shared by every command and the docs' claims about it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize(("args", "prog"), [
    (("--help",), "tokenpool"), (("--version",), "tokenpool"), (("embed", "--help"), "tokenpool embed"),
    (("bench", "--help"), "tokenpool bench"),
])  # fmt: skip
def test_help_and_version_on_a_full_disk_are_one_error_line(args, prog):
    """``tokenpool --help > /dev/full`` printed "Exception ignored ... OSError: [Errno 28]" and exited 120 (the
    interpreter's exit flush), and ``tokenpool embed --help`` (longer than stdout's buffer) exited 0 with nothing
    written: argparse drops a failed write of its help. Now as ``tokenpool inspect > /dev/full`` (and
    ``tokenpool bench --help``): the one error line, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as for a user
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "tokenpool", *args], env=env, timeout=300,
                              stdout=full, stderr=subprocess.PIPE, text=True)
    assert (done.returncode, done.stderr) == (2, f"{prog}: error: [Errno 28] No space left on device\n")


def test_a_long_help_to_a_reader_that_went_away_is_still_exit_0():
    """The write above may fail on a broken pipe too (``tokenpool embed --help | head -1``: a help longer than
    stdout's buffer): that stays a clean exit 0, as in tests/test_cli61.py."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        done = subprocess.run([sys.executable, "-m", "tokenpool", "embed", "--help"], env=env, timeout=300,
                              stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")
