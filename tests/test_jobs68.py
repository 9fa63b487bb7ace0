"""Stop 68, corpus jobs and io: each test failed on the code before its fix (references: the documented
behaviour in docs/cli.md, an uninterrupted run's output)."""

from __future__ import annotations

import errno
import os

import pytest

from tokenpool.errors import CorpusError
from tokenpool.io import readers
from tokenpool.io.workdir import WorkDir, work_dir_for
from tokenpool.jobs import EmbedJob, check_job


class _FailingDisk:
    """A file whose first line reads, then every read fails with EIO (a disk or network file system error)."""

    def __init__(self, fh):
        self.fh = fh

    def __iter__(self):
        yield self.fh.readline()
        raise OSError(errno.EIO, "Input/output error")

    def read(self, *args):
        raise OSError(errno.EIO, "Input/output error")

    def close(self):
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize(("fmt", "data"), [("txt", "a\nb\n"), ("jsonl", '{"text": "a"}\n{"text": "b"}\n'),
                                           ("csv", "text\na\nb\n"), ("tsv", "text\na\nb\n")])  # fmt: skip
def test_a_read_error_names_the_file_and_the_line(tmp_path, monkeypatch, fmt, data):
    """An I/O error while reading the input (EIO from a failing disk or a network mount) ended the job with
    Python's bare "[Errno 5] Input/output error", naming no file: it names the input and where it was read."""
    src = tmp_path / f"corpus.{fmt}"
    src.write_text(data)
    opened = readers.open_readable
    monkeypatch.setattr(readers, "open_readable", lambda path: _FailingDisk(opened(path)))
    with pytest.raises(CorpusError) as info:
        list(readers.iter_records(str(src), fmt))
    assert str(info.value) == f"{src}, line 2 or after: cannot read it (Input/output error)"


@pytest.mark.parametrize("exclusive", [True, False])
def test_a_file_system_without_locks_is_named_not_taken_for_another_job(tmp_path, monkeypatch, exclusive):
    """Where flock fails for want of locks (ENOLCK: NFS without its lock service), the job said "another
    tokenpool process is writing OUT", which no process was: it names the lock file and the system's reason."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out.npy"
    with WorkDir(out):  # a work folder with its lock file, as a killed run leaves it
        pass

    def no_locks(fd, flags):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(CorpusError) as info:
        if exclusive:
            WorkDir(out).__enter__()
        else:
            WorkDir(out).check_unlocked()
    assert f"cannot lock {work_dir_for(out) / 'lock'} (No locks available)" in str(info.value)
    assert "another tokenpool process" not in str(info.value)


def test_an_unsupported_output_given_as_a_path_is_a_corpus_error(tmp_path):
    """`EmbedJob` takes `pathlib.Path`s (every check and the run read them), but an output of an unknown
    suffix given as one raised AttributeError ('PosixPath' object has no attribute 'isprintable') instead of
    the CorpusError a str gets."""
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    with pytest.raises(CorpusError) as info:
        check_job(EmbedJob(src, tmp_path / "out.xyz"))
    assert str(info.value).startswith(f"{tmp_path / 'out.xyz'}: unsupported output type")


def test_a_sparse_npz_is_checked_without_loading_its_arrays(tmp_path):
    """The .npz writer streams its chunks (memory does not grow with the corpus), but its read-back check
    loaded the whole ``indices`` and ``indptr`` arrays: 4 bytes per non-zero at once (4 GiB for a billion of a
    SPLADE corpus). It reads their headers and the last ``indptr`` value now; scipy reads the file as written."""
    import tracemalloc

    import numpy as np
    import scipy.sparse

    from tokenpool.io.writers import WRITERS, RowStream
    from tokenpool.jobs.rows import sparse_rows

    rows, nnz, vocabulary = 64, 16384, 30522  # 1M non-zeros (4 MiB of indices), one row per chunk
    indices = np.tile(np.arange(nnz, dtype=np.int32), rows)
    values = np.random.default_rng(0).random(rows * nnz, dtype=np.float32)

    def chunks():  # one chunk in memory at a time, as the work folder's chunks are read
        for k in range(rows):
            part = slice(k * nnz, (k + 1) * nnz)
            yield {"doc": np.array([k]), "nnz": np.array([nnz]), "line": np.array([k + 1]),
                   "indices": indices[part].copy(), "values": values[part].copy()}  # fmt: skip

    stream = RowStream(sparse_rows(vocabulary), chunks, rows, rows * nnz)
    tracemalloc.start()  # (the arrays above are made before: not counted)
    try:
        WRITERS["npz"].write(tmp_path / "out.npz", stream, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < indices.nbytes / 4  # a few chunks' worth, not the whole file's indices read back
    got = scipy.sparse.load_npz(tmp_path / "out.npz")
    want = scipy.sparse.csr_matrix((values, indices, np.arange(rows + 1) * nnz), (rows, vocabulary))
    assert (got != want).nnz == 0 and got.shape == want.shape


def test_a_disk_failing_under_the_work_folder_names_it_and_resumes(run, tmp_path, monkeypatch):
    """A disk that failed (EIO) or went read-only (EROFS) while a chunk was written ended an hours-long job with
    the bare "[Errno 5] Input/output error", naming no file and not saying that the finished chunks stay: the
    line names the work folder and its chunks as a full disk's does, and --resume writes an uninterrupted run's
    bytes."""
    import json
    from pathlib import Path

    from clitools import assert_one_error_line

    import tokenpool.io.workdir as workdir

    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("".join(f"line {i} of the corpus\n" for i in range(6)))
    write, code, strerror = workdir.write_atomic, errno.EIO, "Input/output error"  # (EROFS: the same path)

    def failing(path: Path, data: bytes) -> None:
        if path.name.startswith("chunk-000001."):
            raise OSError(code, strerror)
        write(path, data)

    monkeypatch.setattr(workdir, "write_atomic", failing)
    status, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "-q")
    work = Path(f"{out}.tokenpool-partial")
    assert_one_error_line(status, err, strerror, str(work), "its 1 finished chunk(s) stay there", "--resume")
    assert json.loads((work / "manifest.json").read_text())["chunks_done"] == 1 and not out.exists()
    monkeypatch.setattr(workdir, "write_atomic", write)
    assert run("embed", src, "-o", out, "--chunk-size", 2, "--resume", "-q")[0] == 0
    assert run("embed", src, "-o", tmp_path / "whole.npy", "--chunk-size", 2, "-q")[0] == 0
    assert out.read_bytes() == (tmp_path / "whole.npy").read_bytes() and not work.exists()


def test_a_sparse_npz_of_over_2_31_non_zeros_is_written_as_scipy_saves_one(tmp_path, monkeypatch):
    """A SPLADE job of 2**31 non-zeros or more (15M passages of ~150) was refused at the very end, after every
    chunk was computed ("exceed the int32 indices a scipy .npz holds; use .parquet": a rerun to another OUT
    starts over): it writes int64 column indices, the layout scipy's own save_npz gives such a matrix, and
    scipy loads it. (The bound is lowered here; the rule is the same.)"""
    import numpy as np
    import scipy.sparse

    from tokenpool.io import writers
    from tokenpool.io.writers import WRITERS, RowStream
    from tokenpool.jobs.rows import sparse_rows

    monkeypatch.setattr(writers, "NPZ_INT32_ITEMS", 6)
    parts = {"doc": np.arange(3), "nnz": np.array([2, 0, 5]), "line": np.arange(1, 4),
             "indices": np.array([3, 9, 0, 1, 2, 5, 9], dtype=np.int32),
             "values": np.linspace(0.5, 3.5, 7, dtype=np.float32)}  # fmt: skip
    WRITERS["npz"].write(tmp_path / "out.npz", RowStream(sparse_rows(10), lambda: [parts], 3, 7), None)
    want = scipy.sparse.csr_matrix((parts["values"], parts["indices"], [0, 2, 2, 7]), shape=(3, 10))
    got = scipy.sparse.load_npz(tmp_path / "out.npz")
    assert (got != want).nnz == 0 and got.shape == (3, 10) and got.dtype == np.float32
    with np.load(tmp_path / "out.npz") as data:
        assert data["indices"].dtype == np.int64 and data["indptr"].dtype == np.int64


def test_a_work_folder_made_by_another_job_in_the_last_instant_is_named_so(tmp_path, monkeypatch):
    """Two jobs starting on one OUT at once: the second's staging folder was renamed onto the folder the first
    had just made, which fails with ENOTEMPTY; the job said "cannot create the work folder (Directory not
    empty)". It says what happened, as when it sees the folder before its rename, and leaves both alone."""
    import tokenpool.io.workdir as workdir

    out = tmp_path / "out.npy"
    rename = os.rename

    def first_job_wins(src, dst):
        if str(dst) == str(work_dir_for(out)):  # the other job's folder, with its owner marker, appears
            os.mkdir(dst)
            (work_dir_for(out) / workdir.OWNER_FILE).write_text(f'{{"kind": "{workdir.OWNER_KIND}"}}')
        rename(src, dst)

    monkeypatch.setattr(workdir.os, "rename", first_job_wins)
    with pytest.raises(CorpusError) as info:
        WorkDir(out).__enter__()
    assert str(info.value) == f"{work_dir_for(out)} appeared while this job was creating it; rerun"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy.tokenpool-partial"]
