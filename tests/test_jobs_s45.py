"""Stop 45's hunt of the corpus jobs: each case a bug a user met, checked against an independent reference (the
csv module's own split of a row, a first run's outcome, the disk as it was before the command)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.io.readers import table_columns


@pytest.mark.parametrize("fmt, header, row", [
    ("csv", "id,text", "1,hello, world"),   # an unquoted comma: the text was cut to "hello"
    ("tsv", "id\ttext", "1\thello\tworld"),  # a tab in a .tsv field: the same
])  # fmt: skip
def test_a_row_with_more_fields_than_the_header_is_refused_naming_its_line(run, tmp_path, fmt, header, row):
    """A row split into more fields than the header names lost the rest of its text silently (the embedding
    was of "hello"); it is refused, one line naming the file and line, by the CLI and by Ray's table reader."""
    sep = "\t" if fmt == "tsv" else ","
    split = next(csv.reader([row], delimiter=sep))
    assert len(split) > len(header.split(sep))  # the reference: the row is longer than the header
    src, out = tmp_path / f"in.{fmt}", tmp_path / "out.jsonl"
    src.write_text(f"{header}\n0{sep}fine\n{row}\n")
    code, _, err = run("embed", src, "-o", out, "-q")
    assert_one_error_line(code, err, f"{src}, line 3", f"{len(split)} fields")
    assert not out.exists() and not Path(f"{out}.tokenpool-partial").exists()
    with pytest.raises(CorpusError, match="line 3"):  # what the Ray job reads .csv/.tsv files with
        table_columns(io.BytesIO(src.read_bytes()), str(src), "text", tab=fmt == "tsv")


def test_rows_as_long_as_the_header_and_short_ones_are_still_read(tmp_path):
    """Quoted separators stay inside their field, a row lacking a trailing column still reads (None), and so
    does one ending in an empty field past the header's (a separator ending the row): no value is lost."""
    data = b'id,text,extra\n1,"a, b",x\n2,"c"\n3,d,y,\n'
    columns = table_columns(io.BytesIO(data), "in.csv", "text", tab=False)
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert columns == {name: [row[k] if k < len(row) else None for row in rows[1:]] for k, name in enumerate(rows[0])}


@pytest.mark.parametrize("flags, suffix", [
    (["--token-vectors"], ".tokens.jsonl"),
    (["--chunks", "tokens:8", "--skip-empty"], ".chunks.jsonl"),
])  # fmt: skip
def test_an_npy_of_no_rows_writes_no_row_index_and_the_same_command_runs_again(run, tmp_path, flags, suffix):
    """An .npy of chunk or token rows with no row wrote an empty row index, which the same command then refused
    to replace ("is empty, so it cannot be told from a file of yours"): no index is written (as no lines file
    is), an earlier run's index goes, and the command runs again as it ran the first time."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("\n \n" if "--skip-empty" in flags else "")
    index = Path(f"{out}{suffix}")
    index.write_text('{"doc": 0, "id": "x", "chunk": 0, "start": 0, "end": 1, "offset": 0, "n_tokens": 0}\n')
    first = run("embed", src, "-o", out, *flags)
    assert first[0] == 0, first[2]
    assert not index.exists() and "row index" not in first[2]
    before = out.read_bytes()
    again = run("embed", src, "-o", out, *flags)
    assert again[0] == 0, again[2]
    assert out.read_bytes() == before and not index.exists()


def _int8_partial_run(run, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """An int8 run calibrated on the first 6 of 12 records, stopped by a bad line 7 with chunks of 4: one chunk
    (records 0..3) done, the calibration's records 4 and 5 beyond it."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.npy"
    good = [json.dumps({"text": f"record {i} says {'yes' if i % 2 else 'no'} {i * i}"}) for i in range(12)]
    src.write_text("\n".join([*good[:6], "{bad", *good[7:]]) + "\n")
    code, _, err = run("embed", src, "-o", out, "--precision", "int8", "--calibration-size", 6, "--chunk-size", 4, "-q")
    assert code == 2 and "line 7" in err, err
    return src, out, good


def test_resume_refuses_an_input_changed_among_the_records_its_calibration_was_computed_from(run, tmp_path):
    """The calibration a partial run stored came from records beyond those it had done: a resume checked only
    the records done, so an input changed among the others resumed with the old ranges, a file an
    uninterrupted run on that input never writes. Refused now (one line, nothing touched); the same input
    (its bad line fixed) still resumes, to the bytes of an uninterrupted run."""
    src, out, good = _int8_partial_run(run, tmp_path)
    work = Path(f"{out}.tokenpool-partial")
    changed = [*good[:4], good[4].replace("no", "a much longer and different sentence"), *good[5:]]
    src.write_text("\n".join(changed) + "\n")
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    code, _, err = run("embed", src, "-o", out, "--precision", "int8", "--calibration-size", 6, "--chunk-size", 4,
                       "--resume", "-q")  # fmt: skip
    assert_one_error_line(code, err, "refusing to resume", "calibration")
    assert not out.exists() and {p.name: p.read_bytes() for p in work.iterdir()} == before

    src.write_text("\n".join(good) + "\n")
    code, _, err = run("embed", src, "-o", out, "--precision", "int8", "--calibration-size", 6, "--chunk-size", 4,
                       "--resume", "-q")  # fmt: skip
    assert code == 0, err
    whole = tmp_path / "whole.npy"
    assert run("embed", src, "-o", whole, "--precision", "int8", "--calibration-size", 6, "--chunk-size", 4,
               "-q")[0] == 0  # fmt: skip
    assert out.read_bytes() == whole.read_bytes()
    assert Path(f"{out}.calibration.json").read_bytes() == Path(f"{whole}.calibration.json").read_bytes()


def test_token_rows_with_ray_carry_the_columns_tokenpool_embed_writes(run, tmp_path, monkeypatch):
    """``tokenpool embed --token-vectors --ray`` named the token vectors ``embedding`` (Ray's default column),
    where ``tokenpool embed --token-vectors`` names them ``token_embeddings``: a user switching to --ray found
    them under another name. The Ray job (its batch class, fed the call --ray makes) now has every column of
    the command line's parquet, with the same values."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import tokenpool.integrations.ray as ray_integration
    from tokenpool.integrations.ray import EmbedBatch
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    texts = ["a first text", "and a second, longer one"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    code, _, err = run("embed", src, "-o", tmp_path / "cli.parquet", "--token-vectors", "--device", "cpu", "-q")
    assert code == 0, err
    cli = pq.read_table(tmp_path / "cli.parquet")

    calls: list[dict] = []
    monkeypatch.setattr(ray_integration, "embed_parquet", lambda *a, **k: calls.append(k))
    code, _, err = run("embed", src, "-o", tmp_path / "ray", "--token-vectors", "--device", "cpu", "--ray", "-q")
    assert code == 0, err
    (call,) = calls
    request = EncodeRequest(output=call["output"], special_tokens=call["special_tokens"])
    batch = EmbedBatch(call["column"], call.get("output_column", "embedding"),
                       EncoderOptions(model=call["model"], device="cpu"), request)  # fmt: skip
    rows = batch(pa.table({"text": texts}))
    assert [name for name in cli.column_names if name not in rows.column_names] == []
    for name in cli.column_names:
        got, want = rows.column(name).to_pylist(), cli.column(name).to_pylist()
        if name == "token_embeddings":
            np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-6)
        else:
            assert got == want, name


def test_a_full_disk_names_the_work_folder_and_resumes_to_the_same_bytes(run, tmp_path, monkeypatch):
    """A disk that filled up while a chunk was written ended the job with the bare "[Errno 28] No space left
    on device", naming no file and not saying what to do; the line now names the work folder and the
    finished chunks kept there, and --resume (once there is room) writes the bytes an uninterrupted run does."""
    import errno

    import tokenpool.io.workdir as workdir

    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("".join(f"line {i} of the corpus\n" for i in range(8)))
    write = workdir.write_atomic

    def full(path: Path, data: bytes) -> None:
        if path.name.startswith("chunk-000002."):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(workdir, "write_atomic", full)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "-q")
    work = Path(f"{out}.tokenpool-partial")
    assert_one_error_line(code, err, "No space left on device", str(work), "2 finished chunk(s)", "--resume")
    assert json.loads((work / "manifest.json").read_text())["chunks_done"] == 2 and not out.exists()

    def manifest_full(path: Path, data: bytes) -> None:  # chunk 2's files written, its manifest not
        if path.name == "manifest.json" and json.loads(data)["chunks_done"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(workdir, "write_atomic", manifest_full)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "--resume", "-q")
    assert code == 2 and "Traceback" not in err, err  # (after the "resuming" line)
    assert err.strip().splitlines()[-1].endswith("its 2 finished chunk(s) stay there: make room, then rerun with "
                                                 "--resume")  # as the folder has them, not the 3 counted in memory
    assert json.loads((work / "manifest.json").read_text())["chunks_done"] == 2

    monkeypatch.setattr(workdir, "write_atomic", write)
    assert run("embed", src, "-o", out, "--chunk-size", 2, "--resume", "-q")[0] == 0
    assert run("embed", src, "-o", tmp_path / "whole.npy", "--chunk-size", 2, "-q")[0] == 0
    assert out.read_bytes() == (tmp_path / "whole.npy").read_bytes() and not work.exists()


@pytest.mark.parametrize("rows", [["--chunks", "tokens:4"], ["--token-vectors"]])
def test_an_id_field_a_text_file_cannot_have_is_refused_as_field_and_column_are(run, tmp_path, rows):
    """``--id-field doc_id`` on a .txt input was read from records that have no fields: the rows came out
    without ids, silently. It is refused before the model loads, as --field is for input that has no fields;
    a .csv input with that column still gives each row its id."""
    src = tmp_path / "in.txt"
    src.write_text("a first line\na second line\n")
    code, _, err = run("embed", src, "-o", tmp_path / "t.jsonl", *rows, "--id-field", "doc_id", "-q")
    assert_one_error_line(code, err, "--id-field doc_id", str(src))
    code, _, field = run("embed", src, "-o", tmp_path / "t.jsonl", *rows, "--field", "body", "-q")
    assert_one_error_line(code, field, "--field body", str(src))  # the reference: how --field is refused
    assert not (tmp_path / "t.jsonl").exists()

    table = tmp_path / "in.csv"
    table.write_text("doc_id,text\nx1,a first line\nx2,a second line\n")
    code, _, err = run("embed", table, "-o", tmp_path / "t.jsonl", *rows, "--id-field", "doc_id", "-q")
    assert code == 0, err
    ids = [json.loads(line)["id"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert sorted(set(ids)) == [row["doc_id"] for row in csv.DictReader(io.StringIO(table.read_text()))]


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs (no handler catches it)."""


def test_resume_refuses_an_input_grown_past_a_calibration_taken_from_all_of_it(run, tmp_path, monkeypatch):
    """An int8 run on a 6-record input calibrates on all 6 (fewer than --calibration-size); killed after 2
    chunks, then records appended: the resume reused the 6-record calibration where an uninterrupted run on
    the longer input calibrates on all of it (other ranges, other codes). Refused now, folder untouched; the
    input as it was still resumes to the bytes of an uninterrupted run."""
    import tokenpool.io.workdir as workdir

    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    lines = [f"line {i}: {'short' if i % 2 else 'a rather longer sentence than the others'}" for i in range(8)]
    src.write_text("\n".join(lines[:6]) + "\n")
    flags = ["--precision", "int8", "--chunk-size", 2, "-q"]
    write = workdir.write_atomic

    def killed(path: Path, data: bytes) -> None:
        if path.name.startswith("chunk-000002."):
            raise Killed
        write(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(workdir, "write_atomic", killed)
        with pytest.raises(Killed):
            run("embed", src, "-o", out, *flags)
    work = Path(f"{out}.tokenpool-partial")
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    src.write_text("\n".join(lines) + "\n")
    code, _, err = run("embed", src, "-o", out, *flags, "--resume")
    assert_one_error_line(code, err, "refusing to resume", "calibration", "whole input")
    assert not out.exists() and {p.name: p.read_bytes() for p in work.iterdir()} == before

    src.write_text("\n".join(lines[:6]) + "\n")
    assert run("embed", src, "-o", out, *flags, "--resume")[0] == 0
    assert run("embed", src, "-o", tmp_path / "whole.npy", *flags)[0] == 0
    assert out.read_bytes() == (tmp_path / "whole.npy").read_bytes()


class _ReaderGone:
    """A stderr whose reader went away after the first line (``2>&1 | head -1``): later writes break."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > 1:
            raise BrokenPipeError(32, "Broken pipe")
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_a_reader_of_stderr_that_goes_away_does_not_end_the_job(run, tmp_path, monkeypatch):
    """``tokenpool embed ... --progress 2>&1 | head -1``: the progress bar's next write broke the pipe, the job
    stopped there and the command exited 0 (a broken pipe counts as success) with no output written. The job
    now goes on without stderr and writes the output an undisturbed run writes."""
    import sys

    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("".join(f"line {i} of the corpus\n" for i in range(9)))
    assert run("embed", src, "-o", tmp_path / "whole.npy", "--chunk-size", 2, "-q")[0] == 0
    gone = _ReaderGone()
    monkeypatch.setattr(sys, "stderr", gone)
    code, _, _ = run("embed", src, "-o", out, "--chunk-size", 2, "--progress")
    assert gone.writes > 1  # the pipe did break during the job
    assert code == 0 and out.read_bytes() == (tmp_path / "whole.npy").read_bytes()
    assert not Path(f"{out}.tokenpool-partial").exists()


_SURROGATES = {  # field: a record holding a lone surrogate there
    "id": '{"text": "a", "id": "x\\ud800"}',  # an id: the CLI's token rows read it
    "meta": '{"text": "a", "meta": {"title": ["\\udc00"]}}',  # a string deep inside another field
}


def _surrogate_source(tmp_path, field: str):
    """in.jsonl: a fine record, then `_SURROGATES`' record for ``field`` (checked to be no UTF-8 text)."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine", "id": "ok"}\n' + _SURROGATES[field] + "\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):  # the reference: the record holds a string that is no UTF-8 text
        json.dumps(json.loads(_SURROGATES[field]), ensure_ascii=False).encode("utf-8")
    return src


def test_ray_refuses_a_lone_surrogate_in_any_field_it_passes_on_naming_the_line(ray_session, tmp_path):
    """Ray's .jsonl rows carry every field on to the parquet output, but only the text was checked: a lone
    surrogate elsewhere failed inside a Ray task as "the Ray job failed: UnicodeEncodeError ..." (exit 1, no
    line). It is refused as the command line refuses one in a field it reads, naming the file and line. (One
    whole job, an id; a string deep in another field, by the job's read function:
    `test_the_ray_read_refuses_a_lone_surrogate_deep_in_a_field_naming_the_line`.)"""
    pytest.importorskip("ray.data")
    from tokenpool.errors import classify
    from tokenpool.integrations.ray import embed_parquet
    from tokenpool.io.readers import iter_records

    src = _surrogate_source(tmp_path, "id")
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below
        embed_parquet(str(src), str(tmp_path / "out"), concurrency=1, device="cpu")
    assert classify(caught.value) == "bad_input", caught.value
    assert_one_error_line(2, str(caught.value), f"{src}, line 2: field 'id' holds a lone surrogate")
    with pytest.raises(CorpusError) as cli:  # a field the command line reads (token rows' --id-field)
        list(iter_records(str(src), "jsonl", extras=("id",)))
    assert str(caught.value) == f"the Ray job failed: {cli.value}"  # its very message


@pytest.mark.parametrize("field", sorted(_SURROGATES))
def test_the_ray_read_refuses_a_lone_surrogate_deep_in_a_field_naming_the_line(tmp_path, field):
    """The Ray job's .jsonl read task (`_json_table`, whose error the job raises, prefixed: the test above)
    refuses a lone surrogate in any field, an id or a string deep inside another field, naming file and line."""
    import io

    from tokenpool.errors import classify
    from tokenpool.integrations.ray import _json_table

    src = _surrogate_source(tmp_path, field)
    with pytest.raises(CorpusError) as caught:
        _json_table(io.BytesIO(src.read_bytes()), str(src), "text")
    assert classify(caught.value) == "bad_input", caught.value
    assert_one_error_line(2, str(caught.value), f"{src}, line 2: field {field!r} holds a lone surrogate")


def test_ray_refuses_a_field_given_twice_as_the_command_line_does_for_a_field_it_reads(ray_session, tmp_path):
    """``{"text": "a", "id": 1, "id": 2}``: Ray kept the last id silently (every field goes on to its output),
    where the command line's token rows, reading the id, refuse the record: which one is meant?"""
    pytest.importorskip("ray.data")
    from tokenpool.errors import classify
    from tokenpool.integrations.ray import embed_parquet
    from tokenpool.io.readers import iter_records

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine", "id": 0}\n{"text": "a", "id": 1, "id": 2}\n', encoding="utf-8")
    with pytest.raises(CorpusError) as cli:  # the reference: the command line reading the id
        list(iter_records(str(src), "jsonl", extras=("id",)))
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below
        embed_parquet(str(src), str(tmp_path / "out"), concurrency=1, device="cpu")
    assert classify(caught.value) == "bad_input", caught.value
    assert str(caught.value) == f"the Ray job failed: {cli.value}"
