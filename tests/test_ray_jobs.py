"""Ray jobs read, refuse and write as `tokenpool embed` does: .jsonl/.csv/.tsv/.txt rows, null texts, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenpool.errors import CorpusError, classify
from tokenpool.io.readers import iter_records

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tokenpool.integrations import ray as tp_ray  # noqa: E402

# ------------------------------------------------------------ .jsonl rows and bad lines; the parquet metadata


BAD = {
    "invalid": '{"text": "a"}\nnot json\n',
    "not-object": '{"text": "a"}\n[1, 2]\n',
    "number": '{"text": "a"}\n\n{"text": 5}\n',
    "missing": '{"body": "a"}\n',
    "twice": '{"text": "a", "text": "b"}\n',
    "surrogate": '{"text": "a\\ud800"}\n',
}


@pytest.fixture(scope="module")
def ray_data(ray_session):
    return pytest.importorskip("ray.data")


def _cli_error(path, fmt: str = "jsonl") -> str:
    """What `tokenpool embed` (its reader) says about the file: the reference."""
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(path), fmt))
    return str(caught.value)


def _ray_error(source: Path, tiny_bert_folder: Path, whole: bool) -> Exception:
    """The error a Ray job raises for the bad input file ``source``: from a whole `embed_parquet` job (``whole``),
    else from the job's reading tasks alone (`_read`, the tasks where the file is read and refused, unwrapped by
    `_users_errors` as `embed_parquet` unwraps them): the same message without an actor that loads a model."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked by the callers
        if whole:
            tp_ray.embed_parquet(str(source), str(source.parent / "out"), model=str(tiny_bert_folder), concurrency=1)
        else:
            with tp_ray._users_errors(str(source)):
                tp_ray._read(str(source), "text").take_all()
    return caught.value


@pytest.mark.parametrize("name", sorted(BAD))
def test_ray_refuses_a_bad_jsonl_line_as_the_command_line_does(ray_data, tiny_bert_folder, tmp_path, name):
    """Each bad line is refused with `tokenpool embed`'s message (file and line). One case runs a whole
    `embed_parquet` job (the wiring: reading tasks, then `_users_errors`); the others only the job's reading
    tasks, which meet every one of them on the same path."""
    source = tmp_path / f"{name}.jsonl"
    source.write_text(BAD[name], encoding="utf-8")
    expected = _cli_error(source)
    assert ", line " in expected
    error = _ray_error(source, tiny_bert_folder, whole=name == "invalid")
    assert classify(error) == "bad_input", error
    assert str(error) == f"the Ray job failed: {expected}"


def test_ray_reads_jsonl_rows_as_the_command_line_does(ray_data, tmp_path):
    """Blank lines skipped, every field kept as a column (None where a record lacks it), texts in order."""
    from tokenpool.integrations.ray import _read

    records = [{"id": 1, "text": "first", "meta": {"n": 1}}, {"text": "second ünïcode", "extra": [1, 2]},
               {"id": 3, "text": ""}]  # fmt: skip
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + "\r\n\n".join(json.dumps(r) for r in records).encode() + b"\n \n")
    rows = _read(str(source), "text").take_all()
    assert [row["text"] for row in rows] == [text for _, text, _ in iter_records(str(source), "jsonl")]
    assert [row["id"] for row in rows] == [1, None, 3]
    assert rows[1]["extra"] == [1, 2] and rows[0]["meta"] == {"n": 1}


def _ray_job(tiny_bert_folder, folder: Path, precision: str) -> tuple[Path, object]:
    """A Ray job (``precision``; int8 calibrated on the first 4 texts) over six lines of ``folder/in.txt``, written
    to ``folder/ray``: (the input, the calibration `embed_parquet` returned)."""
    from tokenpool.integrations.ray import embed_parquet

    source = folder / "in.txt"
    source.write_text("".join(f"text number {i} of the corpus\n" for i in range(6)), encoding="utf-8")
    calibration = embed_parquet(str(source), str(folder / "ray"), model=str(tiny_bert_folder), precision=precision,
                                calibration_size=4 if precision == "int8" else 1000, concurrency=1)  # fmt: skip
    return source, calibration


@pytest.fixture(scope="module")
def int8_ray_job(ray_data, tiny_bert_folder, tmp_path_factory) -> tuple[Path, object]:
    """One int8 `_ray_job` for the metadata and the calibration tests, which only read it (each Ray job starts an
    actor that loads the model)."""
    return _ray_job(tiny_bert_folder, tmp_path_factory.mktemp("int8-ray-job"), "int8")


@pytest.mark.parametrize("precision", ["int8", "ubinary"])
def test_ray_parquet_carries_the_metadata_the_command_line_writes(
    ray_data, tiny_bert_folder, tmp_path, precision, int8_ray_job
):
    """Codes name their precision, dimension and (int8) calibration in the parquet schema metadata, from Ray as
    from `tokenpool embed` (Ray's files had none: a reader could not tell ubinary bytes from uint8 codes)."""
    import pyarrow.parquet as pq

    from tokenpool import Encoder
    from tokenpool.jobs import EmbedJob, EncodeRequest, check_job, embed_corpus

    if precision == "int8":
        source, calibration = int8_ray_job
    else:
        source, calibration = _ray_job(tiny_bert_folder, tmp_path, precision)
    request = EncodeRequest(precision=precision, calibration=calibration)
    job = EmbedJob(str(source), str(tmp_path / "cli.parquet"), request)
    embed_corpus(Encoder(str(tiny_bert_folder)), job, formats=check_job(job))
    expected = pq.read_schema(tmp_path / "cli.parquet").metadata
    assert b"tokenpool.precision" in expected
    ray_files = sorted((source.parent / "ray").glob("*.parquet"))
    assert ray_files
    for path in ray_files:
        found = pq.read_schema(path).metadata or {}
        assert {k: v for k, v in found.items() if k.startswith(b"tokenpool.")} == expected
    ray_rows = pq.read_table(source.parent / "ray").column("embedding").to_pylist()
    assert ray_rows == pq.read_table(tmp_path / "cli.parquet").column("embedding").to_pylist()


def test_ray_calibration_is_the_command_lines(int8_ray_job, tiny_bert_folder, tmp_path):
    """An int8 calibration computed by `embed_parquet` equals `tokenpool embed`'s on the same first records, its
    recorded source too ("first 4 texts of in.txt"; Ray's had none, so the parquet metadata differed); the job
    returns it and writes it beside its output folder. (Merged with test_storage_ray's
    test_embed_parquet_calibrates_on_the_first_rows_and_writes_the_sidecar, which ran the same kind of job to
    check the sidecar, the first rows' calibration and the codes: the codes are
    `test_ray_parquet_carries_the_metadata_the_command_line_writes`'s, equal to the command line's.)"""
    from tokenpool import Encoder
    from tokenpool.core.quantize import Calibration
    from tokenpool.io.storage import read_calibration
    from tokenpool.jobs import EmbedJob, EncodeRequest, check_job, embed_corpus

    source, ray_calibration = int8_ray_job
    assert Calibration.load(f"{source.parent / 'ray'}.calibration.json") == ray_calibration
    job = EmbedJob(str(source), str(tmp_path / "cli.npy"), EncodeRequest(precision="int8", calibration_size=4))
    embed_corpus(Encoder(str(tiny_bert_folder)), job, formats=check_job(job))
    cli_calibration = read_calibration(tmp_path / "cli.npy")
    assert ray_calibration.to_dict() == cli_calibration.to_dict()
    assert "first 4 texts of in.txt" in str(ray_calibration.to_dict())


# ------------------------------------------------------- .csv/.tsv/.txt: rows, bad files, columns named twice


BAD_TABLES = {
    "quote.csv": 'id,text\n1,"a"b\n',  # pyarrow read it as the text ab
    "header.csv": "text,text\nx,y\n",  # pyarrow: a raw KeyError
    "short.csv": "id,text\n1,a\n2\n",
    "utf8.tsv": b"id\ttext\n1\ta\xffb\n",
}


@pytest.mark.parametrize("name", sorted(BAD_TABLES))
def test_ray_refuses_a_bad_csv_as_the_command_line_does(ray_session, tiny_bert_folder, tmp_path, name):
    """Refused with `tokenpool embed`'s message, by the job's reading tasks (`_ray_error`; a whole job's wiring of
    a bad file is `test_ray_refuses_a_bad_jsonl_line_as_the_command_line_does`'s, the same `_file_table` task)."""
    source = tmp_path / name
    data = BAD_TABLES[name]
    source.write_bytes(data if isinstance(data, bytes) else data.encode())
    expected = _cli_error(source, source.suffix[1:])
    assert str(source) in expected
    error = _ray_error(source, tiny_bert_folder, whole=False)
    assert classify(error) == "bad_input", error
    assert str(error) == f"the Ray job failed: {expected}"


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


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_texts_that_look_like_numbers_stay_texts(ray_session, tmp_path, suffix):
    """A .csv/.tsv text column is read as strings, as `tokenpool embed` reads it: "123", "4.5", "true" and an
    empty field are texts (was: pyarrow's inference made the column int64/double/bool or null, and every actor
    refused it: "must hold strings, got int64")."""
    from tokenpool.io.readers import READERS

    sep = "\t" if suffix == ".tsv" else ","
    for name, texts in (("numbers", ["123", "45"]), ("mixed", ["1.5", "true", ""]), ("empty", ["", ""])):
        path = tmp_path / f"{name}{suffix}"
        path.write_text(f"id{sep}text\n" + "".join(f"{i}{sep}{t}\n" for i, t in enumerate(texts)))
        rows = sorted(tp_ray._read(str(path), "text").take_all(), key=lambda row: row["id"])
        reference = [record[1] for record in READERS[suffix[1:]].read(str(path))]
        assert [row["text"] for row in rows] == reference == texts, name


def test_txt_rows_are_the_lines_tokenpool_embed_reads(ray_session, tmp_path):
    """A .txt input is split at "\\n" only, as `tokenpool embed` splits it, so row i stays line i+1 (was: Ray's
    read_text also split at form feeds, U+2028, U+0085 and a lone "\\r", and kept a byte-order mark)."""
    from tokenpool.io.readers import READERS

    lines = ["\ufeffpage one\x0cpage two", "a\u2028b\x85c", "", "lone\rreturn", "crlf", "last"]
    path = tmp_path / "in.txt"
    path.write_bytes("\n".join(lines[:4]).encode() + b"\n" + b"crlf\r\nlast")
    reference = [record[1] for record in READERS["txt"].read(str(path))]
    assert reference == [lines[0].removeprefix("\ufeff"), *lines[1:]]
    assert [row["text"] for row in tp_ray._read(str(path), "text").take_all()] == reference
    (tmp_path / "empty.txt").write_bytes(b"")
    assert tp_ray._read(str(tmp_path / "empty.txt"), "text").take_all() == []


# ------------------------------------------------------------------------- a null text, named by file and row


def _parquet_with_null(path: Path, statistics: bool = True) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 3, 4, 5], "text": ["a", "b", "c", None, "e"]})
    pq.write_table(table, path, row_group_size=2, write_statistics=statistics)
    return path


@pytest.mark.parametrize("statistics", [True, False])
def test_the_null_text_check_names_the_file_and_row(tmp_path, statistics):
    """`_refuse_null_texts`, which `embed_parquet` calls once an actor met a null (the whole job:
    test_ci67.test_a_failed_job_ends_its_actors_before_it_raises), finds its row from the row groups' statistics
    and without them: `tokenpool embed`'s message."""
    source = _parquet_with_null(tmp_path / "in.parquet", statistics)
    expected = _cli_error(source, "parquet")
    assert expected == f"{source}, row 4: column 'text' is null"
    with pytest.raises(CorpusError) as caught:
        tp_ray._refuse_null_texts(str(source), "text")
    assert str(caught.value) == expected


def test_ray_names_the_file_and_row_of_a_null_text_in_the_calibration_sample(ray_session, tiny_bert_folder,
                                                                             tmp_path):
    """`tokenpool embed`'s message when the int8 calibration's sample held the null (was: "row 3 holds None",
    naming no file); an actor meeting it: test_ci67.test_a_failed_job_ends_its_actors_before_it_raises."""
    source = _parquet_with_null(tmp_path / "in.parquet")
    expected = _cli_error(source, "parquet")
    assert expected == f"{source}, row 4: column 'text' is null"
    with pytest.raises(CorpusError) as caught:
        tp_ray.embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1,
                             precision="int8")  # fmt: skip
    assert str(caught.value) == expected


# an actor meets the null (a folder's file named): test_ci67.test_a_failed_job_ends_its_actors_before_it_raises


# ---------------------------------------------------------------- options and columns checked before the work


def _no_calibration(*args, **kwargs):
    raise AssertionError("a calibration was computed before the job's options were checked")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a positive int"),
        ({"concurrency": (2, 1)}, "concurrency must be a positive int"),
        ({"num_gpus": -1}, "num_gpus must be >= 0"),
        ({"device": "cuda"}, "needs num_gpus > 0"),
    ],
)
def test_embed_parquet_refuses_actor_options_before_calibrating(
    tiny_bert_folder, tmp_path, monkeypatch, options, message
):
    """An int8 job's actor options (concurrency, num_gpus, a CUDA device without GPUs) are refused before Ray
    starts or a calibration is computed, as its other options are (was: only once the calibration was done — a
    CUDA device then failed inside the calibration task, not with the ValueError naming num_gpus)."""
    import ray

    monkeypatch.setattr(tp_ray, "_calibration", _no_calibration)
    if not ray.is_initialized():
        monkeypatch.setattr(ray, "init", lambda *a, **k: _no_calibration())
    pq.write_table(pa.table({"text": ["a b", "c d"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=message):
        tp_ray.embed_parquet(
            str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(tiny_bert_folder), pooling="mean",
            precision="int8", **options,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_int8_job_names_a_missing_column(tiny_bert_folder, tmp_path, ray_session):
    """An int8 job whose text column is missing says so, as a float32 job does (was: KeyError 'text' from the
    calibration sample)."""
    pq.write_table(pa.table({"body": ["a b", "c d e"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"column 'text' not in the dataset; columns: \['body'\]"):
        tp_ray.embed_parquet(
            str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(tiny_bert_folder), pooling="mean",
            precision="int8", concurrency=1,
        )  # fmt: skip


def test_a_dictionary_encoded_text_column_is_embedded(tiny_bert_folder):
    """A parquet column of a pandas categorical reaches the actors dictionary-encoded: its values are embedded,
    as `tokenpool embed` reads them (was: TypeError "must hold strings, got dictionary<values=string, ...>")."""
    import numpy as np

    from tokenpool import Encoder
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    texts = ["a b", "c d e", "a b"]
    options = EncoderOptions(model=str(tiny_bert_folder), pooling="mean", device="cpu")
    batch = pa.table({"id": [1, 2, 3], "text": pa.array(texts).dictionary_encode()})
    out = tp_ray.EmbedBatch("text", "embedding", options, EncodeRequest(batch_size=2))(batch)
    assert out.column("text").to_pylist() == texts and out.column("id").to_pylist() == [1, 2, 3]
    reference = Encoder.from_options(options).encode(texts)
    np.testing.assert_allclose(np.array(out.column("embedding").to_pylist()), reference, rtol=0, atol=1e-6)


# `embed --ray` reports the calibration file the job wrote: test_ray58.test_the_calibration_is_encoded_with_the_jobs_batch_options
