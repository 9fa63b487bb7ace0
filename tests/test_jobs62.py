"""Stop 62, corpus jobs, io and Ray: defects found at the edges of options, inputs and the docs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tokenpool.errors import CorpusError
from tokenpool.jobs import EmbedJob, check_job


@pytest.mark.parametrize(("name", "value"), [("chunk_size", 0), ("block_size", -1), ("checkpoint_seconds", -1.0)])
def test_a_python_jobs_bad_size_is_named_as_its_parameter(tmp_path, name, value):
    """docs/cli.md: "A message names an option as you typed it ..., where Python callers see the parameter". Only
    Python callers reach these checks (the command line refuses its flags' bad values first), yet a bad
    ``EmbedJob(chunk_size=0)`` was named ``--chunk-size`` (``checkpoint_seconds`` likewise)."""
    source = tmp_path / "in.txt"
    source.write_text("a cat\n", encoding="utf-8")
    job = EmbedJob(str(source), str(tmp_path / "out.npy"), **{name: value})
    with pytest.raises(CorpusError) as caught:
        check_job(job)
    assert str(caught.value).startswith(f"{name} must be "), caught.value
    assert "--" not in str(caught.value), caught.value


@pytest.mark.parametrize("seconds", [np.int64(5), np.float32(0.5)])
def test_a_numpy_checkpoint_seconds_is_a_number(tmp_path, seconds):
    """``EmbedJob(checkpoint_seconds=np.int64(5))`` was refused as not "a number >= 0" (only Python's int and
    float passed), where ``chunk_size=np.int64(…)`` is taken: numpy's real numbers are numbers too."""
    source = tmp_path / "in.txt"
    source.write_text("a cat\n", encoding="utf-8")
    check_job(EmbedJob(str(source), str(tmp_path / "out.npy"), checkpoint_seconds=seconds))


def _jsonl(path, rows: list[str]) -> str:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return str(path)


_MIXED = {  # a field whose JSON type changes between records, by the field's kind
    "id": ['{"text": "a cat", "id": 1}', '{"text": "a dog", "id": "x-2"}'],  # ids: numbers and strings
    "meta": ['{"text": "a cat", "meta": {"k": 1}}', '{"text": "a dog", "meta": {"k": "s"}}'],  # a nested field
    "tags": ['{"text": "a cat", "tags": []}', '{"text": "a dog", "tags": {}}'],
}


def _read_in_process(source: str):
    """`_json_table`, the function of the Ray job's read task that reads and checks a .jsonl (run here)."""
    import io
    from pathlib import Path

    from tokenpool.integrations.ray import _json_table

    return _json_table(io.BytesIO(Path(source).read_bytes()), source, "text")


def test_ray_refuses_a_jsonl_field_of_mixed_types_rather_than_writing_pickles(ray_session, tiny_bert_folder, tmp_path):
    """`embed_parquet(in.jsonl)` (`tokenpool embed in.jsonl --ray`) passes every field on to the output. A field
    whose JSON type changes between records (ids that are numbers in some records and strings in others) was
    written as Ray's pickled Python objects: a `large_binary` column of pickle bytes for pandas, DuckDB or
    pyarrow, exit 0. pyarrow's own JSON reader refuses such a file; the job now refuses it too, naming the file
    and the field, and writes no part file. (One whole job, for ids; the nested fields, checked by the same read
    function: `test_a_jsonl_field_of_mixed_types_is_refused_by_the_read_whatever_its_kind`.)"""
    pytest.importorskip("transformers")
    from pyarrow import ArrowInvalid
    from pyarrow import json as pa_json

    from tokenpool.integrations.ray import embed_parquet

    source = _jsonl(tmp_path / "in.jsonl", _MIXED["id"])
    with pytest.raises(ArrowInvalid):  # the independent reference: pyarrow reads no such file either
        pa_json.read_json(source)
    with pytest.raises(CorpusError, match=r"in\.jsonl: field 'id' ") as caught:
        embed_parquet(source, str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1, max_length=16)
    assert "\n" not in str(caught.value)
    assert not list(tmp_path.glob("out/*.parquet"))


@pytest.mark.parametrize("field", sorted(_MIXED))
def test_a_jsonl_field_of_mixed_types_is_refused_by_the_read_whatever_its_kind(tmp_path, field):
    """The Ray job's .jsonl read task (`_json_table`, whose error the job raises: the test above) refuses a
    field of mixed JSON types, ids, nested objects and lists alike, naming the file and the field on one line,
    where pyarrow's own JSON reader refuses the file too."""
    from pyarrow import ArrowInvalid
    from pyarrow import json as pa_json

    source = _jsonl(tmp_path / "in.jsonl", _MIXED[field])
    with pytest.raises(ArrowInvalid):
        pa_json.read_json(source)
    with pytest.raises(CorpusError, match=rf"in\.jsonl: field {field!r} ") as caught:
        _read_in_process(source)
    assert "\n" not in str(caught.value)


def test_ray_writes_jsonl_fields_as_pyarrows_json_reader_types_them(ray_session, tiny_bert_folder, tmp_path):
    """The other side of the refusal: fields of one type per column (numbers, missing ones as null, nested
    objects and lists) are written as native columns, the types and values `pyarrow.json.read_json` gives.
    Also the other side of `test_ray_refuses_a_jsonl_field_parquet_cannot_store` (formerly a job of its own,
    test_ray_keeps_a_jsonl_field_with_some_empty_objects): ``{}`` beside an object with a key (field ``m``) is a
    struct parquet holds, its fields null there."""
    pytest.importorskip("transformers")
    import pyarrow.parquet as pq
    from pyarrow import json as pa_json

    from tokenpool.integrations.ray import embed_parquet

    rows = ['{"text": "a cat", "id": 1, "meta": {"k": 1}, "tags": ["x"], "m": {}}',
            '{"text": "a dog", "id": 2.5, "meta": {"k": 2}, "tags": [], "m": {"k": 1}}', '{"text": "a newt", "id": 3}']
    source = _jsonl(tmp_path / "in.jsonl", rows)
    embed_parquet(source, str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1, max_length=16)
    written = pq.read_table(tmp_path / "out").drop_columns(["embedding"])
    assert written.to_pylist() == pa_json.read_json(source).to_pylist()
    assert written.schema.equals(pa_json.read_json(source).schema), written.schema
    assert written.column("m").to_pylist() == [{"k": None}, {"k": 1}, None]


def test_ray_names_an_integer_outside_int64_as_such(ray_session, tiny_bert_folder, tmp_path):
    """review: a .jsonl id of one JSON type in every record, a number past int64 (a uint64 hash), was refused as
    "holds values that no one parquet column type holds (Python int too large to convert to C long); give it one
    JSON type in every record" - advice it already follows. Now the message says what is wrong: an integer
    outside int64's range (the reference: numpy's int64 limits)."""
    pytest.importorskip("transformers")
    from tokenpool.integrations.ray import embed_parquet

    big = int(np.iinfo(np.uint64).max)
    source = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": "a cat", "id": big}), '{"text": "a dog", "id": 7}'])
    with pytest.raises(CorpusError, match=r"in\.jsonl: field 'id' holds an integer outside int64") as caught:
        embed_parquet(source, str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1, max_length=16)
    limits = np.iinfo(np.int64)
    assert f"({limits.min}..{limits.max})" in str(caught.value), caught.value
    assert "one JSON type" not in str(caught.value), caught.value


_ROW_FILES = {  # name: (the file's first line, how row i is written)
    "in.jsonl": (None, lambda i: json.dumps({"text": f"word {i}", "id": i})),
    "in.csv": ("text,id", lambda i: f"word {i},{i}"),
    "in.tsv": ("text\tid", lambda i: f"word {i}\t{i}"),
}


def _read_file_of_rows(tmp_path, name: str):
    """`_read` of a 20-row file ``name`` (`_ROW_FILES`), checked to warn of nothing deprecated."""
    from tokenpool.integrations.ray import _read

    head, line = _ROW_FILES[name]
    rows = ([head] if head else []) + [line(i) for i in range(20)]
    with warnings.catch_warnings(record=True) as said:  # (Ray 2.60 warned of the first fix's ray_remote_args_fn)
        warnings.simplefilter("always")
        read = _read(_jsonl(tmp_path / name, rows), "text")
    assert not [w for w in said if "deprecated" in str(w.message)], [str(w.message) for w in said]
    return read


def test_ray_reads_a_file_of_rows_outside_the_embedding_actors(ray_session, tiny_bert_folder, tmp_path):
    """review: reading a .jsonl as one table per file (map_batches) let Ray fuse the read into the embedding
    actors' operator (Ray fuses a map_batches into a CPU actor pool), so the one input file went to one actor as
    one task and the other actors idled (seen with 3 CPUs, 2 actors, 4 KiB blocks: 1 actor task, 10 before).
    The rows are read in a task of their own again (the reference: Ray's own per-operator stats; 2 actors and a
    read task do not fit the test session's 2 CPUs). Stop 62: .csv/.tsv files were read the same fused way:
    they share this read's operator (`test_csv_and_tsv_files_are_read_by_the_jsonl_files_operator`)."""
    pytest.importorskip("transformers")
    from tokenpool.integrations.ray import embed_dataset

    read = _read_file_of_rows(tmp_path, "in.jsonl")
    ds = embed_dataset(read, model=str(tiny_bert_folder), concurrency=1, max_length=16).materialize()
    assert ds.count() == 20
    embedding = [line for line in ds.stats().splitlines() if "EmbedBatch" in line and "tasks executed" in line]
    fused = {op for line in embedding for op in line.split(" ", 2)[2].split(":")[0].split("->")}
    assert fused <= {"MapBatches(_refuse_reserved)", "MapBatches(EmbedBatch)"}, ds.stats()


def _read_calls(tmp_path, name: str) -> list[tuple]:
    """The Ray Data calls by which `_read` builds the read of file ``name`` ((name, positional arguments but a
    Dataset's own, keyword arguments) of `ray.data.read_binary_files` and `Dataset.map_batches`): Ray's public
    API, whose arguments Ray fuses by, not its logical plan (private; the operators' ``fn``, ``fn_args``,
    ``ray_remote_args`` were ``_fn``, ... in the Ray versions before 2.4x that pyproject allows)."""
    import ray.data

    calls: list[tuple] = []

    def spy(patch: pytest.MonkeyPatch, owner: object, attribute: str, own: int) -> None:
        original = getattr(owner, attribute)

        def recorded(*args, **kwargs):
            calls.append((attribute, args[own:], kwargs))
            return original(*args, **kwargs)

        patch.setattr(owner, attribute, recorded)

    with pytest.MonkeyPatch.context() as patch:
        spy(patch, ray.data, "read_binary_files", 0)
        spy(patch, ray.data.Dataset, "map_batches", 1)
        _read_file_of_rows(tmp_path, name)
    return calls


@pytest.mark.parametrize("name", ["in.csv", "in.tsv"])
def test_csv_and_tsv_files_are_read_by_the_jsonl_files_operator(ray_session, tmp_path, name):
    """Stop 62: .csv/.tsv files were read in an operator Ray fused into the embedding actors. Their read is the
    .jsonl's operator (the one a whole job shows unfused, the test above): the same binary-file read, then the
    same map_batches call (function, batch size and format, remote args: Ray fuses by these) but the format's
    name among the function's arguments; its table holds the 20 rows."""
    import pyarrow as pa

    from tokenpool.integrations.ray import _file_table

    jsonl, other = _read_calls(tmp_path, "in.jsonl"), _read_calls(tmp_path, name)
    assert [call[0] for call in other] == [call[0] for call in jsonl] == ["read_binary_files", "map_batches"]
    assert other[0][1:] == ((str(tmp_path / name),), jsonl[0][2]), other[0]
    (args, kwargs), (jsonl_args, jsonl_kwargs) = other[1][1:], jsonl[1][1:]
    assert args == jsonl_args == (_file_table,), (args, jsonl_args)
    assert kwargs.pop("fn_args") == (name[3:], "text") and jsonl_kwargs.pop("fn_args") == ("jsonl", "text")
    assert kwargs == jsonl_kwargs and kwargs.get("batch_size") == 1, kwargs
    source = tmp_path / name
    batch = pa.table({"bytes": [source.read_bytes()], "path": [str(source)]})
    assert _file_table(batch, name[3:], "text").num_rows == 20


@pytest.mark.parametrize("value", ["{}", '{"a": {}}', "[{}]"])
def test_a_jsonl_field_parquet_cannot_store_is_refused_by_the_read(tmp_path, value):
    """The Ray job's .jsonl read task (`_json_table`, whose error the job raises: the test below) refuses a field
    that no parquet column holds (``{}`` in every record, nested or in a list), naming the file and the field."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import json as pa_json

    source = _jsonl(tmp_path / "in.jsonl", [f'{{"text": "a cat", "m": {value}}}', f'{{"text": "a dog", "m": {value}}}'])
    with pytest.raises(pa.ArrowNotImplementedError):
        pq.write_table(pa_json.read_json(source), pa.BufferOutputStream())
    with pytest.raises(CorpusError, match=r"in\.jsonl: field 'm' is of a type parquet cannot store") as caught:
        _read_in_process(source)
    assert "\n" not in str(caught.value)


def test_ray_refuses_a_jsonl_field_parquet_cannot_store(ray_session, tiny_bert_folder, tmp_path):
    """`tokenpool embed x.jsonl --ray` with ``"m": {}`` in every record exited 1 after embedding: "the Ray job
    failed: ArrowNotImplementedError: Cannot write struct type 'm' with no child field to Parquet". Ray passes
    every field on (`tokenpool embed` without Ray writes none but the ids, and refuses such an ``--id-field``
    naming the line); a field that no parquet column holds is refused as bad input before the model runs, naming
    the file and the field (the reference: pyarrow's own JSON reader reads it, and parquet refuses the table).
    One whole job; the nested cases, by the same read function: the test above."""
    pytest.importorskip("transformers")
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import json as pa_json

    from tokenpool.integrations.ray import embed_parquet

    source = _jsonl(tmp_path / "in.jsonl", ['{"text": "a cat", "m": {}}', '{"text": "a dog", "m": {}}'])
    with pytest.raises(pa.ArrowNotImplementedError):
        pq.write_table(pa_json.read_json(source), pa.BufferOutputStream())
    with pytest.raises(CorpusError, match=r"in\.jsonl: field 'm' ") as caught:
        embed_parquet(source, str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1, max_length=16)
    assert "\n" not in str(caught.value)
    assert not list(tmp_path.glob("out/*.parquet"))
