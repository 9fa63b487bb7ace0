"""Stop 62, reported items outside core: each test failed on the code before its fix."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line

from tokenpool import cli


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--threads", "2147483648"], "--threads must be <= 4096, got 2147483648"),
        (["--batch", "99999999999999999999"], "--batch must be <= 2147483647, got 99999999999999999999"),
        (["--dim", "99999999999999999999"], "--dim must be <= 2147483647, got 99999999999999999999"),
    ],
)
def test_bench_names_an_option_too_large_and_its_limit(capsys, argv, words):
    """``--threads 2147483648`` said "Overflow when unpacking long" (torch's set_num_threads) and ``--batch
    99999999999999999999`` "Maximum allowed dimension exceeded" (numpy), naming no option; ``--threads
    2147483647`` ended in libgomp's "Out of memory". Now the option and its limit are named."""
    code = cli.main(["bench", "--batch", "2", "--length", "4", "--dim", "4", "--no-st", *argv])
    assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error:", words)
