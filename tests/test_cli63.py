"""Stop 63, the command line's plumbing shared by every command and the docs' claims about it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from clitools import assert_one_error_line


@pytest.mark.parametrize(("argv", "prog", "shown"), [
    (["embed", "in.txt", "-o", "out.npy", "foo\nbar"], "tokenpool embed", "foo\\nbar"),
    (["-x\ny", "embed"], "tokenpool", "-x\\ny"),
    (["inspect", "a", "b\u2028c"], "tokenpool inspect", "b\\u2028c"),
    (["embed", "in.txt", "-o", "out.npy", "x\ry"], "tokenpool embed", "x\\ry"),
])  # fmt: skip
def test_an_unknown_argument_holding_a_line_break_stays_on_the_one_error_line(argv, prog, shown, run):
    """``tokenpool embed in.txt -o out.npy $'foo\\nbar'`` printed "unrecognized arguments: foo" and "bar (see ...)"
    on two stderr lines (argv as given); now the one line, the break written as Python escapes it (as argparse
    shows an invalid choice: 'em\\nbed'), so the argument is still named exactly."""
    code, out, err = run(*argv)
    assert_one_error_line(code, err, f"{prog}: error: unrecognized arguments: ", shown)
    assert out == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("progress", [["--progress"], []])
def test_a_failing_stderr_neither_ends_the_job_nor_changes_its_exit_status(progress, tmp_path, run):
    """``tokenpool embed ... --progress 2>>log`` on a full disk (or a terminal gone: EIO) ended the job at the bar's
    first write, exit 1, no output; without ``--progress`` the summary line's failed write turned a written output
    into exit 1. Diagnostics that cannot be written are dropped, as for a reader gone (``2>&1 | head``): the job
    ends as it would, exit 0, the rows of a run whose stderr works."""
    corpus = tmp_path / "in.txt"
    corpus.write_text("a cat\n\nnaïve café\n" + "words " * 300 + "\n", encoding="utf-8")
    assert run("embed", corpus, "-o", tmp_path / "ref.npy", "-q")[0] == 0
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "tokenpool", "embed", str(corpus), "-o", str(tmp_path / "out.npy"),
                               *progress], stderr=full, stdout=subprocess.PIPE, timeout=600)  # fmt: skip
    assert done.returncode == 0
    written, reference = np.load(tmp_path / "out.npy"), np.load(tmp_path / "ref.npy")  # (another thread count here)
    assert written.shape == reference.shape == (4, 384) and np.allclose(written, reference, atol=1e-6)
