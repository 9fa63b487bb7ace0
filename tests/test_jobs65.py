"""Stop 65, corpus jobs and io: output paths named in job messages as input paths are (`errors.shown_name`)."""

from __future__ import annotations

import pytest

from tokenpool.errors import CorpusError
from tokenpool.io.workdir import WorkDir, work_dir_for
from tokenpool.jobs import EmbedJob, check_job

NAMES = ("a\nb", "a\\nb")  # a line break, and a typed backslash and n: they must read apart


def _refusal(call) -> str:
    with pytest.raises(CorpusError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_job_names_its_output_as_python_writes_it(tmp_path, name):
    """``-o $'a\\nb.npy'`` (a folder there) said "a<line break>b.npy: is a directory" and ``-o 'a\\nb.npy'`` said
    "a\\nb.npy: is a directory": after `one_line` both printed alike. Output paths, and the folders and side
    files named after them, are now quoted as Python writes them where they hold a backslash or a line break,
    as stop 64 quotes input paths."""
    src = tmp_path / "in.txt"
    src.write_text("a cat\n", encoding="utf-8")
    out = tmp_path / f"{name}.npy"
    out.mkdir()
    assert _refusal(lambda: check_job(EmbedJob(str(src), str(out)))) == f"{str(out)!r}: is a directory; name an output file"
    missing = tmp_path / name / "out.npy"
    message = _refusal(lambda: check_job(EmbedJob(str(src), str(missing))))
    assert message == f"{str(missing)!r}: folder {str(missing.parent)!r} does not exist"
    work = work_dir_for(tmp_path / f"{name}.jsonl")
    inside = work / "in.txt"
    work.mkdir()
    inside.write_text("a cat\n", encoding="utf-8")
    message = _refusal(lambda: check_job(EmbedJob(str(inside), str(tmp_path / f"{name}.jsonl"))))
    assert message.startswith(f"{str(inside)!r}: the input lies inside the output's work folder {str(work)!r};")


@pytest.mark.parametrize("name", NAMES)
def test_a_work_folder_in_the_way_is_named_as_python_writes_it(tmp_path, name):
    """A file where the work folder goes, and a partial run without --resume, named the folder raw."""
    from tokenpool.jobs.skeleton import open_manifest

    out = tmp_path / f"{name}.npy"
    work = work_dir_for(out)
    work.write_text("mine", encoding="utf-8")
    assert _refusal(WorkDir(out).__enter__).startswith(f"{str(work)!r} exists and is not a tokenpool work folder")
    work.unlink()
    with WorkDir(out) as folder:
        manifest = {"options": {}, "chunk_size": 1, "dimension": 1, "chunks_done": 0, "records_done": 0,
                    "rows_done": 0, "items_done": 0, "has_ids": False, "prefix_sha256": "", "runs": 1,
                    "chunks": [], "version": 3}  # fmt: skip
        folder.write_manifest(manifest)
        job = EmbedJob(str(tmp_path / "in.txt"), str(out))
        message = _refusal(lambda: open_manifest(folder, job, None, {}, {}, print))
    assert message.startswith(f"{str(work)!r} holds a partial run (0 records done);")
    assert message.endswith("or delete that folder to start over")


def test_a_printable_output_path_is_shown_as_it_is(tmp_path):
    """A name that prints as typed is not quoted."""
    out = tmp_path / "out.npy"
    out.mkdir()
    src = tmp_path / "in.txt"
    src.write_text("a cat\n", encoding="utf-8")
    assert _refusal(lambda: check_job(EmbedJob(str(src), str(out)))) == f"{out}: is a directory; name an output file"


def test_a_parquet_column_named_twice_names_the_file_as_python_writes_it(tmp_path):
    """A parquet input with two columns named ``text`` named its file raw (`read_parquet` passed the bare path
    where every other reader message passes `where`'s): ``a\\nb.parquet`` read like ``a<line break>b.parquet``."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from tokenpool.io.readers import iter_records

    src = tmp_path / "a\\nb.parquet"
    pq.write_table(pa.table([pa.array(["x"]), pa.array(["y"])], names=["text", "text"]), src)
    message = _refusal(lambda: list(iter_records(str(src), "parquet")))
    assert message == f"{str(src)!r}: 2 columns are named 'text'; which one is meant?"


@pytest.mark.parametrize("name", NAMES)
def test_side_files_and_read_calibration_name_the_output_as_python_writes_it(tmp_path, name):
    """A user's file where --skip-empty writes its line numbers, and `read_calibration` of an output without
    one, named the output's side file raw."""
    from tokenpool.io.storage import read_calibration

    src = tmp_path / "in.txt"
    src.write_text("a cat\n", encoding="utf-8")
    out = tmp_path / f"{name}.npy"
    lines = tmp_path / f"{name}.npy.lines.txt"
    lines.write_text("mine\n", encoding="utf-8")
    message = _refusal(lambda: check_job(EmbedJob(str(src), str(out), skip_empty=True)))
    assert message.startswith(f"{str(lines)!r} exists and is not a tokenpool line-numbers file (--skip-empty);")
    with pytest.raises(FileNotFoundError) as caught:
        read_calibration(out)
    sidecar = f"{name}.npy.calibration.json"
    assert str(caught.value) == f"{str(out)!r}: no calibration beside it ({sidecar!r}) or in its metadata"
