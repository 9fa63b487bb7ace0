"""Review of stop 68's jobs/io work (s68-jobs): the .npz read-back check, int64 indices on resume, read errors,
locks and the work-folder race. References: the bytes the writer was given (re-encoded independently here),
scipy's own load_npz, an uninterrupted run's output, the documented behaviour in docs/cli.md."""

from __future__ import annotations

import errno
import io
import os
import struct
import sys
import zipfile

import numpy as np
import pytest

from tokenpool.errors import CorpusError
from tokenpool.io import readers, writers
from tokenpool.io.writers import WRITERS, RowStream
from tokenpool.jobs.rows import sparse_rows

# three sparse rows, 3,000 non-zeros: members over zipfile's 4 KiB first read (a header read reads no more)
PARTS = {"doc": np.arange(3), "nnz": np.array([1000, 0, 2000]), "line": np.arange(1, 4),
         "indices": (np.arange(3000, dtype=np.int32) * 7) % 10,
         "values": np.linspace(0.5, 3.5, 3000, dtype=np.float32)}  # fmt: skip
INDPTR = np.array([0, 1000, 1000, 3000])


def _write(path) -> None:
    WRITERS["npz"].write(path, RowStream(sparse_rows(10), lambda: [PARTS], 3, 3000), None)


def _npy(array: np.ndarray, descr: str | None = None) -> bytes:
    """An .npy file of ``array``; ``descr``: the dtype its header claims instead of the array's own."""
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=False)
    data = out.getvalue()
    if descr is not None:
        data = data.replace(repr(array.dtype.str).encode(), repr(descr).encode(), 1)
    return data


def _replaced(path, name: str, data: bytes) -> None:
    """``path`` rewritten with member ``name`` holding ``data`` (a consistent zip: its CRC matches)."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for member, value in members.items():
            zf.writestr(member, value)


def _flipped(path, name: str, at: int) -> None:
    """Byte ``at`` of member ``name``'s array data inverted in place (what a lying disk returns: a bad CRC)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
        with zf.open(name) as fh:
            np.lib.format.read_magic(fh)
            np.lib.format.read_array_header_1_0(fh)
            header = fh.tell()
    raw = bytearray(path.read_bytes())
    names, extra = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    raw[info.header_offset + 30 + names + extra + header + at] ^= 0xFF
    path.write_bytes(bytes(raw))


CORRUPTIONS = {
    "truncated file": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "truncated indices": lambda p: _replaced(p, "indices.npy", _npy(PARTS["indices"])[:-4]),
    "indices header of another dtype": lambda p: _replaced(p, "indices.npy", _npy(PARTS["indices"], "<i8")),
    "wrong shape": lambda p: _replaced(p, "shape.npy", _npy(np.array([4, 10]))),
    "indptr not ending at nnz": lambda p: _replaced(p, "indptr.npy", _npy(INDPTR - [0, 0, 0, 1])),
    "indptr of another dtype": lambda p: _replaced(p, "indptr.npy", _npy(INDPTR.astype(np.int32))),
    "indices bit flip": lambda p: _flipped(p, "indices.npy", 9000),
    "indptr bit flip": lambda p: _flipped(p, "indptr.npy", 9),
    "data bit flip": lambda p: _flipped(p, "data.npy", 9000),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_the_npz_read_back_catches_a_file_that_does_not_hold_what_was_written(tmp_path, monkeypatch, corruption):
    """The .npz read-back check (now reading headers, not whole arrays) must still refuse every file that does
    not hold what the writer was given, before it is renamed onto OUT: a member cut short or whose header claims
    another dtype (np.load failed on them; the header-only check passed both), changed bytes (a bad CRC: a full
    read failed on it), a wrong shape, an indptr not ending at the non-zeros."""
    synced = writers.sync_path

    def corrupted(path):
        synced(path)
        CORRUPTIONS[corruption](path)

    monkeypatch.setattr(writers, "sync_path", corrupted)
    with pytest.raises(RuntimeError, match="out.npz"):
        _write(tmp_path / "out.npz")


def test_an_intact_npz_passes_its_read_back_and_loads_as_written(tmp_path):
    """(The check above refuses no good file: scipy loads the matrix the parts describe.)"""
    import scipy.sparse

    _write(tmp_path / "out.npz")
    want = scipy.sparse.csr_matrix((PARTS["values"], PARTS["indices"], INDPTR), shape=(3, 10))
    got = scipy.sparse.load_npz(tmp_path / "out.npz")
    assert (got != want).nnz == 0 and got.shape == (3, 10)


def test_index_bytes_do_not_depend_on_the_chunks_index_dtypes(tmp_path, monkeypatch):
    """Chunks holding int32 or int64 indices (mixed) write the same .npz, int32 or int64 by the total alone."""
    halves = [{**PARTS, "nnz": PARTS["nnz"][:2], "indices": PARTS["indices"][:1000], "values": PARTS["values"][:1000]},
              {**PARTS, "nnz": PARTS["nnz"][2:], "indices": PARTS["indices"][1000:].astype(np.int64),
               "values": PARTS["values"][1000:]}]  # fmt: skip
    for bound, index in ((2**31, np.int32), (3000, np.int64)):
        monkeypatch.setattr(writers, "NPZ_INT32_ITEMS", bound)
        _write(tmp_path / "whole.npz")
        WRITERS["npz"].write(tmp_path / "mixed.npz", RowStream(sparse_rows(10), lambda: halves, 3, 3000), None)
        assert (tmp_path / "mixed.npz").read_bytes() == (tmp_path / "whole.npz").read_bytes()
        with np.load(tmp_path / "mixed.npz") as data:
            assert data["indices"].dtype == index and np.array_equal(data["indices"], PARTS["indices"])


def test_a_resumed_sparse_job_crossing_the_int64_bound_writes_an_uninterrupted_runs_bytes(run, tmp_path, monkeypatch):
    """A SPLADE job stopped (bad line) below the non-zeros from which indices are int64, resumed past them, writes
    the bytes of a run never stopped (int64 indices), and scipy loads the matrix an int32 .npz holds."""
    import json

    import scipy.sparse
    from tinymodels import splade_tiny

    model = splade_tiny()
    if model is None:
        pytest.skip("no SPLADE-tiny")
    good = [f"line {i} of a sparse corpus about {'cats' if i % 2 else 'dogs'}".encode() for i in range(6)]
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join([*good[:4], b"\xff", *good[5:]]) + b"\n")
    common = ["--model", model, "--pooling", "splade", "--top-k", "8", "--chunk-size", "2", "-q"]
    out = tmp_path / "out.npz"
    assert run("embed", src, "-o", out, *common)[0] == 2
    done = json.loads((tmp_path / "out.npz.tokenpool-partial" / "manifest.json").read_text())["items_done"]
    src.write_bytes(b"\n".join(good) + b"\n")
    assert run("embed", src, "-o", tmp_path / "int32.npz", *common)[0] == 0
    assert 0 < done < scipy.sparse.load_npz(tmp_path / "int32.npz").nnz
    monkeypatch.setattr(writers, "NPZ_INT32_ITEMS", done + 1)
    assert run("embed", src, "-o", tmp_path / "int64.npz", *common)[0] == 0
    assert run("embed", src, "-o", out, *common, "--resume")[0] == 0
    assert out.read_bytes() == (tmp_path / "int64.npz").read_bytes()
    with np.load(out) as data:
        assert data["indices"].dtype == np.int64
    want, got = scipy.sparse.load_npz(tmp_path / "int32.npz"), scipy.sparse.load_npz(out)
    assert (got != want).nnz == 0 and got.shape == want.shape


class _DiskFailingAt(io.RawIOBase):
    """``data`` read as a raw file whose bytes from ``fail`` on cannot be read (EIO): a bad sector mid-file."""

    def __init__(self, data: bytes, fail: int):
        self.data, self.fail, self.at = data, fail, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.at >= self.fail:
            raise OSError(errno.EIO, "Input/output error")
        piece = self.data[self.at : min(self.fail, self.at + len(buffer))]
        buffer[: len(piece)] = piece
        self.at += len(piece)
        return len(piece)


LINES = {"txt": ["a", "bb", "ccc", "dddd"], "jsonl": ['{"text": "a"}', '{"text": "bb"}', '{"text": "ccc"}', "{}"],
         "csv": ["text", "a\rb", '"cc\r\ncc"', "d"], "tsv": ["text", "a", "b", "c"]}  # fmt: skip


@pytest.mark.parametrize("stdin", [False, True])
@pytest.mark.parametrize("fmt", list(LINES))
def test_a_read_error_names_the_line_it_fell_in_for_every_reader(tmp_path, monkeypatch, fmt, stdin):
    """A disk error at the 2nd byte of the third line (.csv: the fourth, in the csv module's count, where a
    lone ``\\r`` ends a line too) is "line 3 (4) or after", read through a buffered file as `open` gives one,
    from a file or from stdin."""
    import types

    lines = [line.encode() for line in LINES[fmt]]
    data = b"\n".join(lines) + b"\n"
    start, line = {"csv": (len(b"text\na\rb\n"), 4)}.get(fmt, (len(lines[0] + lines[1]) + 2, 3))
    def failing() -> io.BufferedReader:
        return io.BufferedReader(_DiskFailingAt(data, start + 1), buffer_size=4)

    src = tmp_path / f"in.{fmt}"
    src.write_bytes(data)
    if stdin:
        src = readers.STDIN
        monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=failing()))
    else:
        monkeypatch.setattr(readers, "open_readable", lambda path: failing())
    with pytest.raises(CorpusError) as info:
        list(readers.iter_records(str(src), fmt))
    name = "<stdin>" if stdin else str(src)
    assert str(info.value) == f"{name}, line {line} or after: cannot read it (Input/output error)"


@pytest.mark.skipif(sys.platform == "win32", reason="no advisory lock on Windows")
def test_a_lock_held_by_another_process_is_still_another_job_and_nfs_eacces_is_waited_out(tmp_path, monkeypatch):
    """The ENOLCK fix must leave a real lock alone: held by another process (EWOULDBLOCK) the job and the probe
    say "another tokenpool process", folder untouched; NFS's EACCES for a held lock is retried like EWOULDBLOCK
    (a probe's instant passes); ENOLCK is said at once, not after the retries."""
    import fcntl
    import subprocess

    import tokenpool.io.workdir as workdir
    from tokenpool.io.workdir import WorkDir

    monkeypatch.setattr(workdir, "_LOCK_WAIT", 0)
    out = tmp_path / "out.npy"
    with WorkDir(out) as work:
        lock = work.path / "lock"
    before = sorted((p.name, p.read_bytes()) for p in work.path.iterdir())
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a+b'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", lock],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        for take in (lambda: WorkDir(out).__enter__(), lambda: WorkDir(out).check_unlocked()):
            with pytest.raises(CorpusError, match=f"another tokenpool process is writing {out}"):
                take()
    finally:
        holder.communicate("")
    assert sorted((p.name, p.read_bytes()) for p in work.path.iterdir()) == before
    real, calls = fcntl.flock, []

    def flock(fd, flags, fail=errno.EACCES, times=3):
        calls.append(fail)
        if len(calls) <= times:
            raise OSError(fail, os.strerror(fail)) if fail != errno.EACCES else PermissionError(fail, "denied")
        real(fd, flags)

    monkeypatch.setattr(fcntl, "flock", flock)
    with WorkDir(out):  # EACCES three times, then the lock: taken
        assert len(calls) == 4
    calls.clear()
    monkeypatch.setattr(fcntl, "flock", lambda fd, flags: flock(fd, flags, errno.ENOLCK, 99))
    with pytest.raises(CorpusError, match="No locks available"):
        WorkDir(out).__enter__()
    assert calls == [errno.ENOLCK]


@pytest.mark.parametrize("code", [errno.ENOTEMPTY, errno.EEXIST])
def test_the_work_folder_race_deletes_nothing_of_the_other_job(tmp_path, monkeypatch, code):
    """Another job's work folder made in the instant before this job's rename (Linux: ENOTEMPTY; POSIX allows
    EEXIST): "appeared ...; rerun", its files byte for byte as they were, this job's staging folder gone."""
    import tokenpool.io.workdir as workdir
    from tokenpool.io.workdir import OWNER_FILE, WorkDir, work_dir_for

    out, rename = tmp_path / "out.npy", os.rename
    theirs = {OWNER_FILE: b'{"kind": "tokenpool work folder", "pid": 1}', "lock": b"",
              "chunk-000000.embedding.npy": b"their chunk", "manifest.json": b"{}"}  # fmt: skip

    def other_job_first(src, dst):
        if str(dst) == str(work_dir_for(out)):
            os.mkdir(dst)
            for name, data in theirs.items():
                (work_dir_for(out) / name).write_bytes(data)
            if code == errno.EEXIST:
                raise FileExistsError(code, os.strerror(code))
        rename(src, dst)

    monkeypatch.setattr(workdir.os, "rename", other_job_first)
    with pytest.raises(CorpusError, match="appeared while this job was creating it; rerun"):
        WorkDir(out).__enter__()
    assert [p.name for p in tmp_path.iterdir()] == [work_dir_for(out).name]
    assert {p.name: p.read_bytes() for p in work_dir_for(out).iterdir()} == theirs


@pytest.mark.parametrize(("code", "fix"), [(errno.EROFS, "once it can be written, rerun"),
                                           (errno.EIO, "once it can be written, rerun"),
                                           (errno.ENOSPC, "make room, then rerun")])  # fmt: skip
def test_a_disk_gone_read_only_names_the_work_folder_as_a_failing_or_full_one(tmp_path, code, fix):
    """(b3008e94 cut the CLI round of EROFS: `removed_when_done` itself still names the folder and what stays for
    each, and keeps the finished chunk.)"""
    from tokenpool.io.workdir import WorkDir
    from tokenpool.jobs.skeleton import removed_when_done

    with WorkDir(tmp_path / "out.npy") as work, pytest.raises(OSError) as info, removed_when_done(work, {"chunks_done": 1}):
        raise OSError(code, os.strerror(code))
    assert info.value.errno == code and work.path.is_dir()
    assert str(info.value).endswith(f"{os.strerror(code)} while writing in {work.path}; its 1 finished chunk(s) "
                                    f"stay there: {fix} with --resume")  # fmt: skip
