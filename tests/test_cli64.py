"""Stop 64, the command line's plumbing: its entry point, how it names arguments, how it writes to stderr."""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line

ROOT = Path(__file__).resolve().parents[1]

# a finder that interrupts the import of the command line, as Ctrl-C in its first ~0.2 s does
INTERRUPT_IMPORT = """
import importlib.abc, sys
class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tokenpool.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
"""


def _console_entry() -> tuple[str, str]:
    """The ``tokenpool`` console script's module and function, as pyproject.toml declares them."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    module, function = re.search(r'^tokenpool\s*=\s*"([\w.]+):(\w+)"', scripts, re.M).groups()
    return module, function


@pytest.mark.parametrize("how", ["console script", "python -m tokenpool"])
def test_ctrl_c_while_the_command_line_loads_is_one_line_not_a_traceback(how):
    """Ctrl-C in the first ~0.2 s of ``tokenpool embed ...`` (while ``tokenpool.cli`` and its commands import)
    printed Python's KeyboardInterrupt traceback: the console script imported ``tokenpool.cli`` before any code of
    ours ran. Now the entry point imports it inside a ``try``: one stderr line, exit status 130 (as an interrupted
    command), no traceback."""
    if how == "console script":  # what pip's generated script does: import the entry, call it
        module, function = _console_entry()
        call = f"from {module} import {function} as entry\nsys.exit(entry())"
    else:
        call = "import runpy\nrunpy.run_module('tokenpool', run_name='__main__', alter_sys=True)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", INTERRUPT_IMPORT + call, "embed", "x"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr == "tokenpool: interrupted\n" and done.returncode == 130


def test_ctrl_c_while_the_arguments_are_parsed_is_one_line(monkeypatch, capsys):
    """Ctrl-C after the import but before a command runs (building the parser, parsing) raised out of the entry point
    as a traceback; it is the same one line and exit 130 as during the import."""
    from tokenpool import cli
    from tokenpool.__main__ import main

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    monkeypatch.setattr(sys, "argv", ["tokenpool", "embed", "x"])
    assert main() == 130
    assert capsys.readouterr().err == "tokenpool: interrupted\n"


@pytest.mark.parametrize(("argv", "prog", "shown"), [
    (["embed", "in.txt", "-o", "out.npy", "--bogus", "a\\nb"], "tokenpool embed", "--bogus 'a\\\\nb'"),
    (["embed", "in.txt", "-o", "out.npy", "--bogus", "a\nb"], "tokenpool embed", "--bogus 'a\\nb'"),
    (["-x\\ty", "embed"], "tokenpool", "'-x\\\\ty'"),
    (["-x\ty", "embed"], "tokenpool", "'-x\\ty'"),
    (["inspect", "a", "C:\\models"], "tokenpool inspect", "'C:\\\\models'"),
    (["inspect", "a", "b c"], "tokenpool inspect", "arguments: b c (see"),
])  # fmt: skip
def test_an_unknown_argument_with_a_backslash_is_told_apart_from_one_with_a_line_break(argv, prog, shown, run):
    """``tokenpool embed ... --bogus 'a\\nb'`` (a typed backslash and n) and ``--bogus $'a\\nb'`` (a line break)
    both printed "unrecognized arguments: --bogus a\\nb": the message could not say which was given. An argument
    holding a backslash or a character that does not print is now quoted as Python writes it (as argparse shows an
    invalid choice), so the two read ``'a\\\\nb'`` and ``'a\\nb'``; plain arguments are shown as given."""
    code, out, err = run(*argv)
    assert_one_error_line(code, err, f"{prog}: error: unrecognized arguments: ", shown)
    assert out == ""
    for arg in argv:  # each quoted argument reads back as the argument given
        if repr(arg) in err:
            assert ast.literal_eval(repr(arg)) == arg


def _slow_reader(read_fd: int, into: list[bytes]) -> None:
    time.sleep(0.5)  # let the pipe fill first
    while chunk := os.read(read_fd, 4096):
        into.append(chunk)
        time.sleep(0.0005)


@pytest.mark.skipif(not hasattr(os, "set_blocking") or sys.platform == "win32", reason="needs POSIX pipes")
def test_stderr_on_a_non_blocking_pipe_keeps_every_line():
    """A command started with a non-blocking stderr (a parent such as Node leaves its pipes O_NONBLOCK) lost its
    diagnostics: once the pipe was full the write raised BlockingIOError and `KeptStderr` sent the rest of the run
    to the null device (1,041 of 20,001 lines arrived). It now waits for room: every line arrives, in order."""
    from tokenpool.cli.common import KeptStderr

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    got: list[bytes] = []
    reader = threading.Thread(target=_slow_reader, args=(read_fd, got))
    reader.start()
    sent = [f"line {i:05d} naïve {'x' * 40}" for i in range(5000)]
    with io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_fd, "w")), encoding="utf-8", line_buffering=True) as stream:
        kept = KeptStderr(stream)
        for line in sent:
            print(line, end="", file=kept)
            print(file=kept)
        kept.flush()
    reader.join(timeout=120)
    os.close(read_fd)
    assert b"".join(got).decode("utf-8").splitlines() == sent


@pytest.mark.parametrize("name", ["x\ny.npy", "x\ry.npy", "x\u2028y.npy"])
def test_the_summary_line_stays_one_line_for_an_output_named_with_a_line_break(name, tmp_path, run):
    """``tokenpool embed in.txt -o $'x\\ny.npy'`` wrote its summary "tokenpool: wrote x" and "y.npy: 2 x 384 ..." on
    two stderr lines (a log reader took the second for another message); the break is written as Python escapes it,
    as in the error lines, and the file under the exact name holds the rows."""
    corpus = tmp_path / "in.txt"
    corpus.write_text("a cat\nsat\n", encoding="utf-8")
    code, out, err = run("embed", corpus, "-o", tmp_path / name)
    assert code == 0 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenpool: wrote "), err
    assert repr(name)[1:-1] in lines[0]
    assert np.load(tmp_path / name).shape == (2, 384)
