"""Stop 66 review (reviewer a): behaviour the stop's shrinks changed, restored, each test failing on the merged
main before its fix."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _embed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``tokenpool embed ARGV``: its exit status and stderr."""
    from tokenpool.cli import main

    try:
        code = main(["embed", *argv])
    except SystemExit as ended:
        code = ended.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("other", [["--id-field", "x"], ["--chunks", "tokens:bad"], ["--chunks", "tokens:0"]])
def test_a_bad_pooling_name_is_the_first_error_of_embed(tmp_path, capsys, other):
    """``tokenpool embed`` refuses a bad --pooling name before anything else is checked, read or loaded (its own
    pre-check, dropped on s66-encoder: another wrong option given with it was named first)."""
    corpus = tmp_path / "in.txt"
    corpus.write_text("one\ntwo\n")
    argv = [str(corpus), "-o", str(tmp_path / "out.npy"), "--pooling", "bogus"]
    alone = _embed(argv, capsys)  # the reference: the bad name alone
    assert alone[0] == 2 and "bogus" in alone[1], alone
    assert _embed([*argv, *other], capsys) == alone
    assert not (tmp_path / "out.npy").exists()
