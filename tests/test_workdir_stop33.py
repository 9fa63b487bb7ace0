"""Work folder safety after power cuts (hunt 33): every rename the job makes (the work folder into place, each
chunk file and the manifest, the output and its side files) is followed by an fsync of the folder it lands in
(`sync_dir`), which tolerates a platform or filesystem that cannot open a folder.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tokenpool.io import writers
from tokenpool.io.workdir import WorkDir

ROOT = Path(__file__).resolve().parents[1]


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
