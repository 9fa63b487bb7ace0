"""Stop 56 (corpus jobs): a partial run that read its whole input, resumed onto records appended since, writes
the bytes a fresh run over the longer input writes (its last chunk, closed by the end of the input, is encoded
again: was a last block batched differently and one more parquet row group)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobkill import run_killed_in

from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

pytest.importorskip("transformers")


def _texts(start: int, stop: int) -> list[str]:
    return [f"record {i} {'with several more words ' * (i % 5)}end" for i in range(start, stop)]


def _write(path: Path, texts: list[str], mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as fh:
        fh.write("".join(json.dumps({"text": t, "id": f"r{k}"}) + "\n" for k, t in enumerate(texts)))


def _job(src: Path, out: Path, rows: str, **sizes) -> EmbedJob:
    asked = {"chunks": {"chunks": "tokens:6:2"}, "tokens": {"output": "tokens"},
             "int8": {"precision": "int8", "calibration_size": 6}}.get(rows, {})  # fmt: skip
    request = EncodeRequest(batch_size=3, **asked)
    extra = {"block_tokens": 40} if rows == "tokens" else {}
    return EmbedJob(str(src), str(out), request, chunk_size=8, block_size=4, **extra, **sizes)


CASES = [("vectors", "npy"), ("vectors", "parquet"), ("vectors", "jsonl"), ("int8", "parquet"), ("chunks", "parquet"),
         ("tokens", "parquet"), ("tokens", "jsonl")]  # fmt: skip


@pytest.mark.parametrize(("rows", "fmt"), CASES)
def test_resume_onto_appended_records_writes_a_fresh_runs_bytes(small, tmp_path, monkeypatch, rows, fmt):
    """22 records in chunks of 8 (blocks of 4: the last block, records 20-21, cut short by the end of the
    input), killed while the output was written; 7 records appended; resumed: the output is byte for byte a
    fresh run's over the 29 records (was: the short block's batching kept, one more parquet row group)."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    src, out = tmp_path / "in.jsonl", tmp_path / f"out.{fmt}"
    _write(src, _texts(0, 22))
    job = _job(src, out, rows)
    run_killed_in(small, job, monkeypatch)
    work = tmp_path / f"out.{fmt}.tokenpool-partial"
    assert json.loads((work / "manifest.json").read_text())["records_done"] == 22
    _write(src, _texts(0, 29))  # the same 22 records, then 7 more
    job.resume = True
    result = embed_corpus(small, job, log=lambda m: None)
    assert result.records == 29 and not work.exists()
    if rows == "vectors":  # chunks [0, 8) and [8, 16) reused; [16, 24) and [24, 29) computed
        assert (result.chunks, result.reused_chunks) == (4, 2)
    fresh = tmp_path / f"fresh.{fmt}"
    embed_corpus(small, _job(src, fresh, rows), log=lambda m: None)
    assert out.read_bytes() == fresh.read_bytes()
    if rows == "int8":
        assert Path(f"{out}.calibration.json").read_bytes() == Path(f"{fresh}.calibration.json").read_bytes()


@pytest.mark.parametrize(("rows", "seconds"), [("vectors", 0), ("tokens", 0), ("tokens", 30)])
def test_a_resume_killed_after_reopening_the_last_chunk_resumes_again(small, tmp_path, monkeypatch, rows, seconds):
    """The resume that reopened the last chunk is killed before it stores any chunk (chunks closed by time
    before it, ``checkpoint_seconds=0``, too): a second resume finishes with a fresh run's bytes."""
    pytest.importorskip("pyarrow")
    src, out = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    _write(src, _texts(0, 22))
    job = _job(src, out, rows, checkpoint_seconds=seconds)
    run_killed_in(small, job, monkeypatch)
    _write(src, _texts(0, 29))
    job.resume = True
    run_killed_in(small, job, monkeypatch, "store_chunk")
    embed_corpus(small, job, log=lambda m: None)
    fresh = tmp_path / "fresh.parquet"
    embed_corpus(small, _job(src, fresh, rows, checkpoint_seconds=seconds), log=lambda m: None)
    assert out.read_bytes() == fresh.read_bytes()


def test_a_resume_of_the_same_input_reuses_the_last_chunk(small, tmp_path, monkeypatch):
    """Nothing appended: the chunk the end of the input closed is reused, not encoded again."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.npy"
    _write(src, _texts(0, 22))
    job = _job(src, out, "vectors")
    run_killed_in(small, job, monkeypatch)
    job.resume = True
    result = embed_corpus(small, job, log=lambda m: None)
    assert (result.reused_chunks, result.chunks) == (3, 3)


# ------------------------------------------------ input messages


def test_a_byte_order_mark_starting_a_later_jsonl_line_is_named(tmp_path):
    """Two .jsonl files joined with ``cat``, each with a BOM: line 2 starts with U+FEFF; the error names the
    byte-order mark (was: ``invalid JSON (Expecting value at column 1)``); the first line's BOM is dropped."""
    from tokenpool.errors import CorpusError
    from tokenpool.io.readers import iter_records

    src = tmp_path / "joined.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n\xef\xbb\xbf{"text": "b"}\n')
    records = iter_records(str(src), "jsonl")
    assert next(records)[:2] == (1, "a")
    with pytest.raises(CorpusError, match=r"joined\.jsonl, line 2: invalid JSON \(the line starts with a byte-order mark"):
        next(records)


def test_an_explicit_null_text_is_called_null(tmp_path):
    """``"text": null`` is named as null, not as a missing field."""
    from tokenpool.errors import CorpusError
    from tokenpool.io.readers import iter_records

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"text": null}\n')
    with pytest.raises(CorpusError, match=r"line 2: field 'text' is null, not a string"):
        list(iter_records(str(src), "jsonl"))
