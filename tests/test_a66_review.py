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


def test_the_entry_point_run_in_process_leaves_the_callers_collections_alone(monkeypatch):
    """``tokenpool.__main__.main`` froze every object of the process it ran in (`gc.freeze`) once the command
    returned: a caller that runs it in process and goes on (a test, ``runpy``, a notebook's ``%run -m``) had its
    cyclic garbage of before never collected again. The freeze is for the interpreter's exit: nothing is frozen
    when ``main`` returns."""
    from tokenpool import cli
    from tokenpool.__main__ import main

    monkeypatch.setattr(cli, "main", lambda: 0)
    before = gc.get_freeze_count()
    try:
        assert main() == 0
        assert gc.get_freeze_count() == before
    finally:
        if gc.get_freeze_count() != before:  # (the old code froze this test run: undone)
            gc.unfreeze()


def test_the_entry_point_still_freezes_at_exit():
    """What the freeze is for: at the interpreter's exit (after the atexit handlers registered before ``main``),
    the objects are frozen, so its teardown collections walk few. Counted as `tests/test_serve66` counts them."""
    command = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count(), "
               "'tracked', len(gc.get_objects()), file=sys.stderr)); import tokenpool.cli as cli; "
               "cli.main = lambda: 3; from tokenpool.__main__ import main; sys.exit(main())")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    said = done.stderr.split()
    assert said[0] == "frozen" and int(said[1]) > 1000 and int(said[3]) < 1000, done.stderr


@pytest.mark.parametrize("kind", ["int8", "int16", "int32", "int64"])
def test_a_negative_numpy_device_index_is_named_without_a_numpy_warning(kind):
    """s66-encoder names a negative device index itself (`shown_value`), whose ``abs`` of numpy's most negative
    integer overflowed: a RuntimeWarning on stderr (an error under ``-W error``) before the message torch gave."""
    import warnings

    import numpy as np

    pytest.importorskip("torch")
    from tokenpool.model.options import parse_device

    device = np.iinfo(kind).min
    value = getattr(np, kind)(device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as caught:
            parse_device(value)
    assert str(caught.value) == f"unknown device {value!r}: Device index must not be negative"
