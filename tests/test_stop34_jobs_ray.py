"""Ray drift found at stop 34: `embed_parquet` read .jsonl with Ray's JSON reader, so a bad line failed as
"json.decoder.JSONDecodeError: Extra data: line 2 column 1 (char 13)" (exit 1 from the command line) where
`tokenpool embed` says "FILE, line 2: invalid JSON (...)" (exit 2); now both read it with the same reader."""

from __future__ import annotations

import json

import pytest

from tokenpool.errors import CorpusError, classify
from tokenpool.io.readers import iter_records

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


def _cli_error(path) -> str:
    """What `tokenpool embed` (its reader) says about the file: the reference."""
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(path), "jsonl"))
    return str(caught.value)


@pytest.mark.parametrize("name", sorted(BAD))
def test_ray_refuses_a_bad_jsonl_line_as_the_command_line_does(ray_data, tiny_bert_folder, tmp_path, name):
    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / f"{name}.jsonl"
    source.write_text(BAD[name], encoding="utf-8")
    expected = _cli_error(source)
    assert ", line " in expected
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below
        embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1)
    assert classify(caught.value) == "bad_input", caught.value
    assert str(caught.value) == f"the Ray job failed: {expected}"


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


@pytest.mark.parametrize("precision", ["int8", "ubinary"])
def test_ray_parquet_carries_the_metadata_the_command_line_writes(ray_data, tiny_bert_folder, tmp_path, precision):
    """Codes name their precision, dimension and (int8) calibration in the parquet schema metadata, from Ray as
    from `tokenpool embed` (Ray's files had none: a reader could not tell ubinary bytes from uint8 codes)."""
    import pyarrow.parquet as pq

    from tokenpool import Encoder
    from tokenpool.integrations.ray import embed_parquet
    from tokenpool.jobs import EmbedJob, EncodeRequest, check_job, embed_corpus

    source = tmp_path / "in.txt"
    source.write_text("".join(f"text number {i} of the corpus\n" for i in range(6)), encoding="utf-8")
    folder = str(tiny_bert_folder)
    calibration = embed_parquet(str(source), str(tmp_path / "ray"), model=folder, precision=precision,
                                calibration_size=4 if precision == "int8" else 1000, concurrency=1)  # fmt: skip
    request = EncodeRequest(precision=precision, calibration=calibration)
    job = EmbedJob(str(source), str(tmp_path / "cli.parquet"), request)
    embed_corpus(Encoder(folder), job, formats=check_job(job))
    expected = pq.read_schema(tmp_path / "cli.parquet").metadata
    assert b"tokenpool.precision" in expected
    ray_files = sorted((tmp_path / "ray").glob("*.parquet"))
    assert ray_files
    for path in ray_files:
        found = pq.read_schema(path).metadata or {}
        assert {k: v for k, v in found.items() if k.startswith(b"tokenpool.")} == expected
    ray_rows = pq.read_table(tmp_path / "ray").column("embedding").to_pylist()
    assert ray_rows == pq.read_table(tmp_path / "cli.parquet").column("embedding").to_pylist()
