"""Stop 68, corpus jobs and io: each test failed on the code before its fix (references: the documented
behaviour in docs/cli.md, an uninterrupted run's output)."""

from __future__ import annotations

import errno

import pytest

from tokenpool.errors import CorpusError
from tokenpool.io import readers
from tokenpool.jobs import EmbedJob, check_job
from tokenpool.io.workdir import WorkDir, work_dir_for


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
