"""Stop 63, the command line's plumbing shared by every command and the docs' claims about it."""

from __future__ import annotations

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
