"""Stop 67, corpus jobs and io: each test failed on the code before its fix (references: the bytes a user's file
held, an uninterrupted run's output)."""

from __future__ import annotations

import os
import sys
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


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded")


def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_the_model_loads(run, tmp_path, monkeypatch):
    """OUT in a folder the job cannot write (a read-only file system, a folder of another user's) was found only
    once the model had loaded (minutes, for a large one) and the work folder could not be made. The check before
    the model loads refuses it now, naming the folder, as it refuses a folder that does not exist."""

    from tokenpool.cli import common
    from tokenpool.errors import CorpusError
    from tokenpool.jobs import EmbedJob, check_job

    src, folder = tmp_path / "in.txt", tmp_path / "shelf"
    src.write_text("hello\nworld\n")
    folder.mkdir()
    out = folder / "out.npy"
    access = os.access
    # the OS's answer for a read-only mount (EROFS: root too) or a folder without write permission
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: access(path, mode, **kw) and not (
        Path(path) == folder and mode & os.W_OK))  # fmt: skip
    monkeypatch.setattr(common, "build_encoder", _no_model)
    code, _, err = run("embed", src, "-o", out, "-q")
    assert_one_error_line(code, err, str(out), f"folder {folder}", "cannot be written")
    with pytest.raises(CorpusError, match="cannot be written"):
        check_job(EmbedJob(str(src), str(out)))
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes a folder of mode 0o555")
def test_an_output_in_a_read_only_folder_is_refused_before_the_model_loads(tmp_path):
    """The same, with a real folder of mode 0o555 (not as root, who may write it)."""
    from tokenpool.errors import CorpusError
    from tokenpool.jobs import EmbedJob, check_job

    src, folder = tmp_path / "in.txt", tmp_path / "shelf"
    src.write_text("hello\n")
    folder.mkdir(mode=0o555)
    try:
        with pytest.raises(CorpusError, match="cannot be written"):
            check_job(EmbedJob(str(src), str(folder / "out.npy")))
    finally:
        folder.chmod(0o755)


def test_a_partial_run_without_resume_is_refused_before_the_model_loads(run, tmp_path, monkeypatch):
    """A rerun that forgot --resume (or met another program's folder at OUT.tokenpool-partial) loaded the model
    first, then was refused; it is refused before, with the same line, the folder untouched."""
    from tokenpool.cli import common

    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_bytes(b"".join(b"line %d of the corpus\n" % i for i in range(6)) + b"\xff bad\n")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "-q")
    assert code == 2 and "line 7" in err, err
    work = Path(f"{out}.tokenpool-partial")
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    monkeypatch.setattr(common, "build_encoder", _no_model)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "-q")
    assert_one_error_line(code, err, f"{work} holds a partial run (6 records done); pass --resume")
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before

    other = Path(f"{tmp_path / 'other.npy'}.tokenpool-partial")
    other.mkdir()
    code, _, err = run("embed", src, "-o", tmp_path / "other.npy", "-q")
    assert_one_error_line(code, err, f"{other} exists but is not a tokenpool work folder")
    assert list(other.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="no advisory lock on Windows")
def test_a_second_job_on_an_output_being_written_is_refused_before_the_model_loads(run, tmp_path, monkeypatch):
    """Two jobs on one output: the second loaded its model, then met the first one's lock. It meets it before
    now (one line, exit 2), and the first job's folder is untouched."""
    from tokenpool.cli import common
    from tokenpool.io.workdir import WorkDir

    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("hello\nworld\n")
    monkeypatch.setattr(common, "build_encoder", _no_model)
    with WorkDir(out) as first:  # what the first job holds while it runs
        before = sorted(p.name for p in first.path.iterdir())
        for resume in ([], ["--resume"]):
            code, _, err = run("embed", src, "-o", out, "-q", *resume)
            assert_one_error_line(code, err, f"another tokenpool process is writing {out}")
        assert sorted(p.name for p in first.path.iterdir()) == before
