"""Stop 61, the command line's plumbing shared by every command and the docs' claims about it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _with_reader_gone(stream: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m tokenpool ARGS`` with ``stream`` (stdout or stderr) a pipe whose reader has gone
    (``tokenpool ... | head -1`` once head exited), stdout block-buffered as for any user (no PYTHONUNBUFFERED)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        return subprocess.run([sys.executable, "-m", "tokenpool", *args], env=env, timeout=300,
                              **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: write_end})
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("bench", "--help"), ("inspect", "--json")])
def test_a_stdout_reader_that_went_away_is_a_clean_exit_0(args):
    """``tokenpool inspect | head -1``: a broken pipe counts as success (`run_command`), but the output waited in
    stdout's buffer until the interpreter's exit flush, which printed "Exception ignored ... BrokenPipeError"
    and exited 120 (any command that prints, and --help / --version)."""
    done = _with_reader_gone("stdout", *args)
    assert (done.returncode, done.stderr.decode()) == (0, "")


@pytest.mark.parametrize("args", [("nosuch",), ("inspect", "/nonexistent-folder-61")])
def test_a_stderr_reader_that_went_away_keeps_the_exit_status(args):
    """``tokenpool ... 2>&1 | head -c0``: the one error line could not be written, and the command exited 120
    (the exit flush of stderr failed) instead of 2, so a script could not tell bad input from anything else."""
    assert _with_reader_gone("stderr", *args).returncode == 2
