"""Stop 67 review of the corpus jobs' early work-folder checks: each test failed on the merged code before its
fix (references: the refusal the same job gives without the work folder, the one `WorkDir` gives when the job
opens its folder, a job that takes its lock once a probe has let go)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from tokenpool.errors import CorpusError
from tokenpool.io.workdir import WorkDir
from tokenpool.jobs import EmbedJob, check_job
from tokenpool.model.request import EncodeRequest

needs_flock = pytest.mark.skipif(sys.platform == "win32", reason="no advisory lock on Windows")


def _refusal(job: EmbedJob) -> str:
    with pytest.raises(CorpusError) as caught:
        check_job(job)
    return str(caught.value)


def _partial_run(out: Path) -> None:
    """A work folder holding a partial run (a manifest of 3 records, no chunk), as a killed job leaves one."""
    with WorkDir(out) as work:
        work.write_manifest({
            "version": 3, "options": {}, "chunk_size": 3, "dimension": 4, "chunks_done": 0, "records_done": 3,
            "rows_done": 0, "items_done": 0, "has_ids": False, "prefix_sha256": "", "runs": [], "chunks": [],
        })  # fmt: skip


@needs_flock
@pytest.mark.parametrize("folder", ["foreign", "partial", "locked"])
@pytest.mark.parametrize("request_", [EncodeRequest(decoded_tokens=True), EncodeRequest(output="tokens")],
                         ids=["tokens", "token-vectors"])  # fmt: skip
def test_an_option_refused_before_the_model_loads_comes_before_the_work_folders_refusal(tmp_path, folder,
                                                                                     request_):
    """A job with an option its output cannot hold (.npz) was refused for that option whatever lay at
    OUT.tokenpool-partial (the folder's refusals came once the model had loaded); the early work-folder checks
    came first, naming the folder instead. The option is named first again, as without any folder there."""
    src = tmp_path / "in.txt"
    src.write_text("hello\nworld\n")
    reference = _refusal(EmbedJob(str(src), str(tmp_path / "fresh.npz"), request_))
    out = tmp_path / "out.npz"
    if folder == "foreign":
        Path(f"{out}.tokenpool-partial").mkdir()
    elif folder == "partial":
        _partial_run(out)
    with WorkDir(out) if folder == "locked" else open(os.devnull):
        assert _refusal(EmbedJob(str(src), str(out), request_)) == reference.replace("fresh.npz", "out.npz")


def _enter_refusal(out: Path) -> str:
    with pytest.raises(CorpusError) as caught, WorkDir(out):
        pass
    return str(caught.value)


@needs_flock
@pytest.mark.parametrize("name", ["lock", "manifest.json"])
@pytest.mark.parametrize("thing", ["fifo", "folder", "symlink"])
def test_a_name_of_the_work_folder_that_is_no_file_of_its_own_is_refused_not_opened(tmp_path, name, thing):
    """The early check opened the folder's lock and read its manifest before looking at what they are: a named
    pipe there hung the job forever (a symlink to /dev/zero read without end), a folder was an IsADirectoryError,
    a symlink was followed. Each is refused now, before the model loads, with the line the job gives when it
    opens its folder, and nothing is opened through it."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("hello\n")
    _partial_run(out)
    path = Path(f"{out}.tokenpool-partial") / name
    path.unlink()
    if thing == "fifo":
        os.mkfifo(path)
    elif thing == "folder":
        path.mkdir()
    else:
        (tmp_path / "elsewhere").write_bytes(b"{}")
        path.symlink_to(tmp_path / "elsewhere")
    reference = _enter_refusal(out)
    assert "is a symlink or not a regular file" in reference
    outcome: list = []

    def check() -> None:
        try:
            check_job(EmbedJob(str(src), str(out), resume=True))
            outcome.append("accepted")
        except Exception as exc:  # noqa: BLE001 - the test compares what was raised
            outcome.append(exc)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # blocked opening the pipe: a writer lets it go, then it is failed below
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(30)
        pytest.fail("the check blocked opening a named pipe in the work folder")
    assert isinstance(outcome[0], CorpusError) and str(outcome[0]) == reference, outcome
    assert (tmp_path / "elsewhere").read_bytes() == b"{}" if thing == "symlink" else True


@needs_flock
def test_a_job_taking_its_lock_while_another_run_probes_it_is_not_refused(tmp_path):
    """Another run's check before its model loads takes the lock shared for an instant (`check_unlocked`); a job
    starting in that instant was refused ("another tokenpool process is writing"): with a resume-less rerun
    probing, neither ran. The job waits that instant out now; a job's own lock is still refused."""
    import fcntl

    out = tmp_path / "out.npy"
    with WorkDir(out):
        pass
    probe = open(Path(f"{out}.tokenpool-partial") / "lock", "rb")  # noqa: SIM115 - closed by the timer
    fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    timer = threading.Timer(0.2, probe.close)
    timer.start()
    try:
        with WorkDir(out) as work:
            assert work.read_manifest() is None
    finally:
        timer.cancel()
        probe.close()
    with WorkDir(out), pytest.raises(CorpusError, match="another tokenpool process is writing"), WorkDir(out):
        pass


@pytest.mark.parametrize("case", ["missing input", "chunk size", "tokens in npz"])
def test_a_refusal_before_the_model_loads_comes_before_the_unwritable_folders(tmp_path, monkeypatch, case):
    """An output folder that cannot be written was found only once the model had loaded, after every other
    refusal; the early check came before the input's, the sizes' and the options' refusals, naming the folder
    instead. Those come first again: the line is the one the same job gets in a folder it may write."""
    src, shelf, free = tmp_path / "in.txt", tmp_path / "shelf", tmp_path / "free"
    src.write_text("hello\nworld\n")
    shelf.mkdir()
    free.mkdir()

    def job(folder: Path) -> EmbedJob:
        if case == "missing input":
            return EmbedJob(str(tmp_path / "missing.txt"), str(folder / "out.npy"))
        if case == "chunk size":
            return EmbedJob(str(src), str(folder / "out.npy"), chunk_size=0)
        return EmbedJob(str(src), str(folder / "out.npz"), EncodeRequest(decoded_tokens=True))

    reference = _refusal(job(free))
    access = os.access  # the OS's answer for a read-only mount or a folder without write permission
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: access(path, mode, **kw) and not (
        Path(path) == shelf and mode & os.W_OK))  # fmt: skip
    assert "cannot be written" in _refusal(EmbedJob(str(src), str(shelf / "out.npy")))
    assert _refusal(job(shelf)) == reference.replace(str(free), str(shelf))
