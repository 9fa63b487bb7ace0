"""Job corners found at stop 34's hunt: a user's empty file named like a side file of the output was removed
as "stale" (or replaced); ``--chunks tokens:4`` and ``tokens:4:0`` refused each other's resume; the Ray job read
.csv/.tsv with pyarrow's rules, not the command line's, and named no file or row for a null text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import assert_one_error_line

TEXTS = [f"sentence {i} about topic {i % 3}" for i in range(6)]


def _jsonl(path: Path, texts: list[str] = TEXTS) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


# ------------------------------------------------------------------------------------- 1. a user's empty file


@pytest.mark.parametrize("suffix", [".lines.txt", ".chunks.jsonl", ".tokens.jsonl"])
def test_a_users_empty_file_named_like_a_side_file_is_left_alone(run, tmp_path, suffix):
    """A run that writes no such side file leaves a user's empty ``OUT<suffix>`` where it is (was: removed as a
    stale side file of an earlier run: an empty file passed for tokenpool's line numbers or row index)."""
    src, out = _jsonl(tmp_path / "in.jsonl"), tmp_path / "out.npy"
    mine = tmp_path / f"out.npy{suffix}"
    mine.write_bytes(b"")
    code, _, err = run("embed", src, "-o", out, "-q")
    assert code == 0, err
    assert mine.is_file() and mine.read_bytes() == b""
    assert out.is_file()


@pytest.mark.parametrize(
    ("suffix", "flags"),
    [(".lines.txt", ("--skip-empty",)), (".chunks.jsonl", ("--chunks", "tokens:4"))],
)
def test_a_users_empty_file_the_job_would_write_is_refused_untouched(run, tmp_path, suffix, flags):
    """A run that writes ``OUT<suffix>`` refuses, before any work, to replace a user's empty file of that name
    (was: replaced, as if an earlier run's)."""
    src, out = _jsonl(tmp_path / "in.jsonl"), tmp_path / "out.npy"
    mine = tmp_path / f"out.npy{suffix}"
    mine.write_bytes(b"")
    code, _, err = run("embed", src, "-o", out, "-q", *flags)
    assert_one_error_line(code, err, str(mine), "is empty", "refusing to replace it")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.jsonl", mine.name])


def test_an_earlier_runs_side_file_is_still_replaced_and_removed(run, tmp_path):
    """What tokenpool wrote (non-empty line numbers) is still recognised: replaced by a --skip-empty rerun,
    removed by a rerun without it."""
    src, out = _jsonl(tmp_path / "in.jsonl", ["a", "", "b"]), tmp_path / "out.npy"
    lines = tmp_path / "out.npy.lines.txt"
    assert run("embed", src, "-o", out, "-q", "--skip-empty")[0] == 0
    assert lines.read_text() == "1\n3\n"
    assert run("embed", src, "-o", out, "-q", "--skip-empty")[0] == 0
    assert lines.read_text() == "1\n3\n"
    _jsonl(src, ["a", "b"])
    assert run("embed", src, "-o", out, "-q")[0] == 0
    assert not lines.exists()
