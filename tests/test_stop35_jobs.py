"""Job corners found at stop 34's hunt: a user's empty file named like a side file of the output was removed
as "stale" (or replaced); ``--chunks tokens:4`` and ``tokens:4:0`` refused each other's resume; the Ray job read
.csv/.tsv with pyarrow's rules, not the command line's, and named no file or row for a null text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def test_a_skip_empty_run_that_keeps_nothing_writes_no_line_numbers_and_runs_again(run, tmp_path):
    """Every text empty: no OUT.lines.txt (an empty one could not be told from a user's file, so the same
    command run again was refused); an earlier run's line numbers no longer describe OUT and are removed."""
    src, out = _jsonl(tmp_path / "in.jsonl", ["a", "", "b"]), tmp_path / "out.npy"
    lines = tmp_path / "out.npy.lines.txt"
    assert run("embed", src, "-o", out, "-q", "--skip-empty")[0] == 0
    assert lines.read_text() == "1\n3\n"
    _jsonl(src, ["", " "])
    for _ in range(2):
        code, _, err = run("embed", src, "-o", out, "-q", "--skip-empty")
        assert (code, err) == (0, "")
        assert np.load(out).shape == (0, 384) and not lines.exists()


# ---------------------------------------------------------------------------------- 2. the chunk spec on resume


def _chunk_job(tmp_path: Path, spec: str, name: str = "out.npy", resume: bool = False):
    from tokenpool.jobs import EmbedJob, EncodeRequest

    src = _jsonl(tmp_path / "in.jsonl", [f"{t} and then some more words to cut" for t in TEXTS])
    return EmbedJob(str(src), str(tmp_path / name), EncodeRequest(chunks=spec), chunk_size=2, resume=resume)


def _embed(encoder, job) -> int:
    from tokenpool.jobs import embed_corpus

    return embed_corpus(encoder, job, lambda message: None).reused_chunks


def _partial_chunk_run(small, monkeypatch, tmp_path: Path, spec: str) -> None:
    """A ``--chunks spec`` run of chunks of two records stopped by a failure in the third chunk's encode."""
    calls, encode = [], small.run

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stopped")
        return encode(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(small, "run", failing)
        with pytest.raises(RuntimeError, match="stopped"):
            _embed(small, _chunk_job(tmp_path, spec))
    manifest = json.loads((tmp_path / "out.npy.tokenpool-partial" / "manifest.json").read_text())
    assert manifest["chunks_done"] == 2


@pytest.mark.parametrize(("first", "then"), [("tokens:4", "tokens:4:0"), ("tokens:4:0", " TOKENS:4 ")])
def test_the_same_chunk_spec_spelled_otherwise_resumes(small, monkeypatch, tmp_path, first, then):
    """``tokens:4`` and ``tokens:4:0`` are one chunking: the resume goes on, and writes what an uninterrupted run
    writes (was: refused, "options differ from the partial run (chunks: 'tokens:4' then, 'tokens:4:0' now)")."""
    import numpy as np

    _partial_chunk_run(small, monkeypatch, tmp_path, first)
    assert _embed(small, _chunk_job(tmp_path, then, resume=True)) == 2
    assert _embed(small, _chunk_job(tmp_path, first, "ref.npy")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.load(tmp_path / "ref.npy"))
    assert (tmp_path / "out.npy.chunks.jsonl").read_bytes() == (tmp_path / "ref.npy.chunks.jsonl").read_bytes()


def test_a_chunk_spec_stored_as_spelled_by_an_earlier_version_still_resumes(small, monkeypatch, tmp_path):
    """A manifest written before the spec was stored canonically holds it as the user spelled it: compared in
    canonical form, an equal spec resumes and another is still refused."""
    from tokenpool.errors import CorpusError
    from tokenpool.io.workdir import WorkDir

    _partial_chunk_run(small, monkeypatch, tmp_path, "tokens:4")
    work = WorkDir(tmp_path / "out.npy")
    manifest = work.read_manifest()
    assert manifest["options"]["chunks"] == "tokens:4:0"  # stored canonically now
    manifest["options"]["chunks"] = "Tokens:4"  # as an earlier version stored it
    work.write_manifest(manifest)
    with pytest.raises(CorpusError, match=r"chunks: 'tokens:4:0' then, 'tokens:5:0' now"):
        _embed(small, _chunk_job(tmp_path, "tokens:5", resume=True))
    assert _embed(small, _chunk_job(tmp_path, "tokens:4:0", resume=True)) == 2


# ------------------------------------------------------------------------------ 3. Ray reads .csv/.tsv as the CLI

BAD_TABLES = {
    "quote.csv": 'id,text\n1,"a"b\n',  # pyarrow read it as the text ab
    "header.csv": "text,text\nx,y\n",  # pyarrow: a raw KeyError
    "short.csv": "id,text\n1,a\n2\n",
    "utf8.tsv": b"id\ttext\n1\ta\xffb\n",
}


def _cli_error(path: Path, fmt: str) -> str:
    """What `tokenpool embed` (its reader) says about the file: the reference."""
    from tokenpool.errors import CorpusError
    from tokenpool.io.readers import iter_records

    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(path), fmt))
    return str(caught.value)


@pytest.mark.parametrize("name", sorted(BAD_TABLES))
def test_ray_refuses_a_bad_csv_as_the_command_line_does(ray_session, tiny_bert_folder, tmp_path, name):
    from tokenpool.errors import classify
    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / name
    data = BAD_TABLES[name]
    source.write_bytes(data if isinstance(data, bytes) else data.encode())
    expected = _cli_error(source, source.suffix[1:])
    assert str(source) in expected
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below
        embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1)
    assert classify(caught.value) == "bad_input", caught.value
    assert str(caught.value) == f"the Ray job failed: {expected}"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("multiline.csv", 'id,text,note\n1,"two\nlines",x\n2,"a ""quoted"" word",\n\n3,plain,"y,z"\n'),
        ("returns.tsv", 'id\ttext\n1\tlone\rreturn\n2\t"quoted"\n3\t\n'),
        ("short.tsv", "id\ttext\tnote\n1\ta\n2\tb\tn\n"),
    ],
)
def test_ray_reads_csv_rows_as_the_command_line_does(ray_session, tmp_path, name, data):
    """Texts (quotes, newlines inside quotes, a lone "\\r", a blank line) are those `tokenpool embed` reads, row
    for row; other columns keep pyarrow's types (ids stay numbers)."""
    from tokenpool.integrations.ray import _read
    from tokenpool.io.readers import iter_records

    source = tmp_path / name
    source.write_bytes(data.encode())
    rows = sorted(_read(str(source), "text").take_all(), key=lambda row: row["id"])
    assert [row["text"] for row in rows] == [text for _, text, _ in iter_records(str(source), source.suffix[1:])]
    assert [row["id"] for row in rows] == [1, 2, 3][: len(rows)]


def test_ray_refuses_a_column_named_twice(ray_session, tmp_path):
    """Every column of a .csv becomes a column of the Ray dataset: one named twice is refused, naming it (was: a
    raw KeyError)."""
    from tokenpool.errors import CorpusError
    from tokenpool.integrations.ray import _read, _user_error

    source = tmp_path / "in.csv"
    source.write_text("id,id,text\n1,2,a\n")
    with pytest.raises(Exception) as caught:  # noqa: PT011 - Ray's wrapper, unwrapped below as embed_parquet does
        _read(str(source), "text").take_all()
    error = _user_error(caught.value)
    assert isinstance(error, CorpusError)
    assert str(error) == f"the Ray job failed: {source}: 2 columns are named 'id'; which one is meant?"


# ------------------------------------------------------------------------------- 4. Ray: a null text, named


def _parquet_with_null(path: Path, statistics: bool = True) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 3, 4, 5], "text": ["a", "b", "c", None, "e"]})
    pq.write_table(table, path, row_group_size=2, write_statistics=statistics)
    return path


@pytest.mark.parametrize(("statistics", "precision"), [(True, "float32"), (False, "float32"), (True, "int8")])
def test_ray_names_the_file_and_row_of_a_null_text(ray_session, tiny_bert_folder, tmp_path, statistics, precision):
    """`tokenpool embed`'s message, whether an actor met the null or the int8 calibration's sample held it (was:
    "column 'text' has 1 null value(s) in a batch", or "row 3 holds None", naming no file)."""
    from tokenpool.errors import CorpusError
    from tokenpool.integrations.ray import embed_parquet

    source = _parquet_with_null(tmp_path / "in.parquet", statistics)
    expected = _cli_error(source, "parquet")
    assert expected == f"{source}, row 4: column 'text' is null"
    with pytest.raises(CorpusError) as caught:
        embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1,
                      precision=precision)  # fmt: skip
    assert str(caught.value) == expected


def test_ray_names_the_file_of_a_folder_that_holds_a_null_text(run, ray_session, tiny_bert_folder, tmp_path):
    """A folder of parquet files: the file with the null and its row; from the command line, one line, exit 2."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": [0], "text": ["fine"]}), folder / "a.parquet")
    bad = _parquet_with_null(folder / "b.parquet")
    code, _, err = run("embed", folder, "-o", tmp_path / "out", "--ray", "--model", tiny_bert_folder)
    assert_one_error_line(code, err, f"{bad}, row 4: column 'text' is null")


# ------------------------------------------------------------------------------ 5. durable and atomic renames


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


def test_numpy_integer_sizes_run_a_job(tmp_path):
    """Whole numbers are Python or numpy integers (errors.is_int): ``chunk_size=np.int64(2)`` runs the job (its
    manifest held the numpy value: "Object of type int64 is not JSON serializable") with the plain-int output."""
    from tokenpool import Encoder
    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

    src = str(_jsonl(tmp_path / "in.jsonl"))
    encoder = Encoder()
    embed_corpus(encoder, EmbedJob(src, str(tmp_path / "a.npy"), EncodeRequest(), chunk_size=np.int64(2)), log=lambda m: None)
    embed_corpus(encoder, EmbedJob(src, str(tmp_path / "b.npy"), EncodeRequest(), chunk_size=2), log=lambda m: None)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
