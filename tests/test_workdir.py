"""Work folder safety after kills and power cuts: staging folders of killed runs, an fsync after every rename.

- A run killed while it creates its work folder leaves ``OUT.tokenpool-partial.new-PID``. The next run removes
  it when that process is gone and the folder holds only what that process wrote there (its owner marker,
  whole or as its temporary file); a folder with anything else in it, or whose process still runs, is left
  alone byte for byte and named in a note. The leftovers are made by a real child process SIGKILLed inside
  `WorkDir._create`, at each step.
- Every rename the job makes (the work folder into place, each chunk file and the manifest, the output and its
  side files) is followed by an fsync of the folder it lands in (`sync_dir`), which tolerates a platform or
  filesystem that cannot open a folder; so is the rename of the public `Calibration.save`.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tokenpool.errors import CorpusError
from tokenpool.io import writers
from tokenpool.io.workdir import OWNER_FILE, WorkDir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and os.kill(pid, 0) probes are POSIX")

# the child stops inside WorkDir._create: killed at one step (or left hanging there, as a job still running)
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from tokenpool.io import workdir

    out, step, action = sys.argv[1:]
    def stop(*args, **kwargs):
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    if step == "mkdir":  # the staging folder made, nothing in it yet
        workdir.write_atomic = stop
    elif step == "marker":  # the owner marker written to its temporary file, not yet renamed
        os.replace = stop
    else:  # the owner marker in place, the folder not yet renamed
        os.rename = stop
    workdir.WorkDir(out).__enter__()
    """
)


def files_under(folder: Path) -> dict[str, object]:
    """Every path under ``folder``: a file's bytes, a symlink's target, a folder as "dir" (empty ones count)."""
    def state(path: Path) -> object:
        if path.is_symlink():
            return f"-> {os.readlink(path)}"
        return "dir" if path.is_dir() else path.read_bytes()

    return {str(p.relative_to(folder)): state(p) for p in sorted(folder.rglob("*"))}


def _child(out: Path, step: str, action: str = "kill") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), step, action], env=env)


def _killed_in_create(out: Path, step: str) -> Path:
    """The staging folder a run SIGKILLed at ``step`` of creating the work folder of ``out`` leaves."""
    child = _child(out, step)
    assert child.wait(timeout=60) == -9
    staging = out.with_name(f"{out.name}.tokenpool-partial.new-{child.pid}")
    assert staging.is_dir()
    return staging


@pytest.mark.parametrize("step", ["mkdir", "marker", "rename"])
def test_a_staging_folder_left_by_a_killed_run_is_removed_by_the_next_run(tmp_path, step):
    out = tmp_path / "out.npy"
    staging = _killed_in_create(out, step)
    notes: list[str] = []
    with WorkDir(out, notes.append) as work:
        assert work.path.is_dir()
    assert not staging.exists()
    assert len(notes) == 1 and "removed" in notes[0] and staging.name in notes[0], notes
    work.remove()
    assert files_under(tmp_path) == {}


def _foreign_file(staging: Path) -> None:
    (staging / "notes.txt").write_text("mine")


def _edited_marker(staging: Path) -> None:
    marker = staging / OWNER_FILE
    marker.write_bytes(marker.read_bytes().replace(b'"out.npy"', b'"other.npy"'))


def _foreign_tmp(staging: Path) -> None:
    (staging / (OWNER_FILE + ".tmp")).write_text("a user's file, not a marker cut short")


def _marker_symlink(staging: Path) -> None:
    target = staging.parent / "elsewhere.json"
    target.write_bytes((staging / OWNER_FILE).read_bytes())
    (staging / OWNER_FILE).unlink()
    (staging / OWNER_FILE).symlink_to(target)


def _open_and_remove_touching_nothing(out, folder) -> list[str]:
    """Open and remove ``out``'s work folder; nothing else under ``folder`` may change. The notes it gave."""
    before = files_under(folder)
    notes: list[str] = []
    with WorkDir(out, notes.append) as work:
        pass
    work.remove()
    assert files_under(folder) == before
    return notes


@pytest.mark.parametrize("tamper", [_foreign_file, _edited_marker, _foreign_tmp, _marker_symlink])
def test_a_staging_folder_holding_anything_else_is_left_alone_and_named(tmp_path, tamper):
    out = tmp_path / "out.npy"
    staging = _killed_in_create(out, "rename")
    tamper(staging)
    notes = _open_and_remove_touching_nothing(out, tmp_path)
    assert len(notes) == 1 and "left" in notes[0] and str(staging) in notes[0], notes


def test_a_file_named_like_a_staging_folder_is_left_alone(tmp_path):
    out = tmp_path / "out.npy"
    pid = subprocess.Popen([sys.executable, "-c", ""])
    pid.wait()
    path = tmp_path / f"out.npy.tokenpool-partial.new-{pid.pid}"
    path.write_text("a user's file")
    notes: list[str] = []
    with WorkDir(out, notes.append) as work:
        pass
    work.remove()
    assert files_under(tmp_path) == {path.name: b"a user's file"}
    assert "not a folder" in notes[0], notes


def test_the_staging_folder_of_a_run_still_creating_it_is_left_alone(tmp_path):
    """Another job, alive, between writing its marker and renaming its folder: its folder is not touched (and
    once that process is gone, the next run removes it)."""
    out = tmp_path / "out.npy"
    child = _child(out, "rename", "hang")
    try:
        staging = out.with_name(f"{out.name}.tokenpool-partial.new-{child.pid}")
        deadline = time.monotonic() + 60
        while not (staging / OWNER_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        notes = _open_and_remove_touching_nothing(out, tmp_path)
        assert len(notes) == 1 and f"process {child.pid} still runs" in notes[0], notes
    finally:
        child.kill()
        child.wait()
    notes.clear()
    with WorkDir(out, notes.append) as work:
        pass
    work.remove()
    assert files_under(tmp_path) == {} and "removed" in notes[0], notes


def test_a_staging_folder_under_this_process_id_is_refused_untouched(tmp_path, capsys):
    """The name this process would stage under is taken (left by an earlier process with the same id): the run
    refuses, and deletes nothing in it (it used to delete the marker files there). Notes go to stderr by
    default."""
    out = tmp_path / "out.npy"
    staging = tmp_path / f"out.npy.tokenpool-partial.new-{os.getpid()}"
    staging.mkdir()
    (staging / OWNER_FILE).write_text("someone's file")
    before = files_under(tmp_path)
    with pytest.raises(CorpusError) as caught, WorkDir(out):
        pass
    assert files_under(tmp_path) == before
    assert "in the way" in str(caught.value)
    assert "this process's id" in capsys.readouterr().err


def test_embed_removes_the_leftover_and_says_so(run, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\nthree\n")
    out = tmp_path / "out.npy"
    staging = _killed_in_create(out, "marker")
    code, _, err = run("embed", src, "-o", out, "--model", ROOT / "tests/fixtures/jobs/model", "--device", "cpu")
    assert code == 0, err
    assert f"removed {staging}" in err
    assert sorted(files_under(tmp_path)) == ["in.txt", "out.npy"]


# ---------------------------------------------------------------------------------------------- fsync


def _record_renames_and_folder_syncs(monkeypatch) -> list[tuple]:
    """Events in order: ("rename", name, folder inode) after each os.replace/os.rename, ("sync", inode) after
    each fsync of a folder."""
    events: list[tuple] = []
    real_replace, real_rename, real_fsync = os.replace, os.rename, os.fsync

    def renamer(real):
        def rename(source, target, **kwargs):
            real(source, target, **kwargs)
            events.append(("rename", Path(target).name, os.stat(Path(target).parent).st_ino))

        return rename

    def fsync(fd: int) -> None:
        real_fsync(fd)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            events.append(("sync", info.st_ino))

    monkeypatch.setattr(os, "replace", renamer(real_replace))
    monkeypatch.setattr(os, "rename", renamer(real_rename))
    monkeypatch.setattr(os, "fsync", fsync)
    return events


def _unsynced(events: list[tuple]) -> list[str]:
    """The renames not followed by an fsync of their folder before the next rename. The calibration that
    `Calibration.save` (tokenpool.core) renames into the work folder is moved on by the next rename, which
    syncs both folders."""
    missing = []
    for i, event in enumerate(events):
        if event[0] != "rename" or event[1] == "output.calibration.json":
            continue
        after = events[i + 1 :]
        end = next((k for k, e in enumerate(after) if e[0] == "rename"), len(after))
        if ("sync", event[2]) not in after[:end]:
            missing.append(event[1])
    return missing


CASES = {
    "int8-skip-empty": ("out.npy", ["--precision", "int8", "--calibration-size", "8", "--skip-empty"],
                        {"out.npy", "out.npy.lines.txt", "out.npy.calibration.json"}),
    "tokens-npy": ("tok.npy", ["--token-vectors"], {"tok.npy", "tok.npy.tokens.jsonl"}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_every_rename_of_a_job_is_followed_by_an_fsync_of_its_folder(run, tmp_path, monkeypatch, case):
    name, options, written = CASES[case]
    src = tmp_path / "in.txt"
    texts = (ROOT / "examples/corpus.txt").read_text(encoding="utf-8").splitlines()[:12]
    src.write_text("".join(f"{t}\n" if i % 4 else "\n" for i, t in enumerate(texts)), encoding="utf-8")
    events = _record_renames_and_folder_syncs(monkeypatch)
    code, _, err = run("embed", src, "-o", tmp_path / name, "--model", ROOT / "tests/fixtures/jobs/model",
                       "--device", "cpu", "--chunk-size", 3, "-q", *options)  # fmt: skip
    assert code == 0, err
    renamed = {e[1] for e in events if e[0] == "rename"}
    assert {"manifest.json", f"{name}.tokenpool-partial", *written} <= renamed, renamed
    assert any(n.startswith("chunk-000003.") for n in renamed), renamed
    assert _unsynced(events) == []


def test_sync_dir_skips_a_folder_that_cannot_be_opened(tmp_path, monkeypatch):
    """Windows cannot open a folder (PermissionError), nor can some filesystems: the rename is kept, unsynced."""
    real_open = os.open

    def no_folders(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_folders)
    with WorkDir(tmp_path / "out.npy") as work:
        work.write_manifest({"chunks": []})
    assert (work.path / "manifest.json").is_file()


@pytest.mark.parametrize(("code", "raised"), [(errno.EINVAL, False), (errno.EIO, True)])
def test_sync_dir_skips_a_filesystem_that_cannot_sync_a_folder_and_raises_a_write_error(
    tmp_path, monkeypatch, code, raised
):
    """EINVAL: this filesystem does not sync folders (skipped); EIO: the disk failed (raised)."""

    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    if raised:
        with pytest.raises(OSError, match=os.strerror(code)):
            writers.sync_dir(tmp_path)
    else:
        writers.sync_dir(tmp_path)


def test_calibration_save_syncs_its_folder_after_the_rename(tmp_path, monkeypatch):
    """`Calibration.save` is public (README: ``calibration.save("corpus.calibration.json")``): after its rename
    the folder is fsynced, so that the file survives a power cut (was: left to its callers)."""
    import os
    import stat

    import numpy as np

    from tokenpool.core.quantize import Calibration

    calibration = Calibration(np.zeros(4), np.ones(4), model="m")
    events: list[tuple[str, int]] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(source, target, **kwargs):
        real_replace(source, target, **kwargs)
        events.append(("rename", os.stat(Path(target).parent).st_ino))

    def fsync(fd: int) -> None:
        real_fsync(fd)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            events.append(("sync", info.st_ino))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    target = calibration.save(tmp_path / "c.calibration.json")
    folder = os.stat(tmp_path).st_ino
    assert events[events.index(("rename", folder)) + 1 :].count(("sync", folder)) == 1
    assert Calibration.load(target) == calibration
