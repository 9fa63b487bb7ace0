"""Stop 67, corpus jobs and io: each test failed on the code before its fix (references: the bytes a user's file
held, an uninterrupted run's output)."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import assert_one_error_line

import tokenpool.jobs.skeleton as skeleton

USER_BYTES = b"my own notes, not tokenpool's\n"


@pytest.mark.parametrize(("flags", "suffix"), [
    (["--skip-empty"], ".lines.txt"),
    (["--precision", "int8", "--calibration-size", "4"], ".calibration.json"),
    (["--chunks", "tokens:8"], ".chunks.jsonl"),
    (["--token-vectors"], ".tokens.jsonl"),
])  # fmt: skip
def test_a_file_put_at_a_side_file_name_while_the_job_runs_is_not_overwritten(run, tmp_path, monkeypatch, flags,
                                                                               suffix):
    """The side files a job writes beside OUT (line numbers, calibration, row index) were checked when the job
    started; a file of the user's put there while it ran (jobs run for hours) was replaced by the job's at the
    end, silently. It is refused now, one line, untouched, before OUT is replaced; once it is moved away,
    --resume writes the bytes an uninterrupted run writes."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("".join(f"line {i} of the corpus, some words\n" if i % 3 else "\n" for i in range(1, 9))
                   if "--skip-empty" in flags else "".join(f"line {i} of the corpus\n" for i in range(8)))  # fmt: skip
    side = Path(f"{out}{suffix}")
    chunks = skeleton.run_chunks

    def meanwhile(*args, **kwargs):
        reused = chunks(*args, **kwargs)
        side.write_bytes(USER_BYTES)  # the user's file, put there while the job ran
        return reused

    monkeypatch.setattr(skeleton, "run_chunks", meanwhile)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 4, *flags, "-q")
    assert_one_error_line(code, err, str(side), "refusing to replace it")
    assert side.read_bytes() == USER_BYTES and not out.exists()

    monkeypatch.setattr(skeleton, "run_chunks", chunks)
    side.rename(tmp_path / "mine.txt")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 4, *flags, "--resume", "-q")
    assert code == 0, err
    whole = tmp_path / "whole.npy"
    code, _, err = run("embed", src, "-o", whole, "--chunk-size", 4, *flags, "-q")
    assert code == 0, err
    assert out.read_bytes() == whole.read_bytes()
    assert side.read_bytes() == Path(f"{whole}{suffix}").read_bytes() != USER_BYTES

