"""Stop 56 (corpus jobs, second pass): a resume that reopens the last chunk (input appended after a partial run
that read its whole input) is checked whole before the work folder changes, and the end of the input is
recorded in the same manifest write as the last chunk (no kill between them can lose it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobkill import run_killed_in

from tokenpool.errors import CorpusError
from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

pytest.importorskip("transformers")


def _texts(start: int, stop: int) -> list[str]:
    return [f"record {i} {'with several more words ' * (i % 5)}end" for i in range(start, stop)]


def _write(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


def test_a_refused_resume_onto_appended_records_leaves_the_work_folder_as_it_was(small, tmp_path, monkeypatch):
    """int8 calibrated on the whole input (22 records < --calibration-size 100), killed while the output was
    written; records appended; the resume is refused (the calibration no longer covers the whole input) and
    the manifest is as it was, its last chunk still counted (was: rewritten without it before the refusal)."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.npy"
    _write(src, _texts(0, 22))
    job = EmbedJob(str(src), str(out), EncodeRequest(batch_size=3, precision="int8", calibration_size=100),
                   chunk_size=8, block_size=4)  # fmt: skip
    run_killed_in(small, job, monkeypatch)
    manifest = tmp_path / "out.npy.tokenpool-partial" / "manifest.json"
    kept = manifest.read_bytes()
    _write(src, _texts(0, 29))
    job.resume = True
    with pytest.raises(CorpusError, match="from the whole input, 22 records, and the input now has more"):
        embed_corpus(small, job, log=lambda m: None)
    assert manifest.read_bytes() == kept


@pytest.mark.parametrize(("rows", "seconds"), [("vectors", 30), ("vectors", 0), ("tokens", 30)])
def test_a_kill_right_after_the_last_chunk_still_reopens_it(small, tmp_path, monkeypatch, rows, seconds):
    """Killed just after the chunk the end of the input closed was counted (closed after the loop, or by time
    with ``checkpoint_seconds=0``); records appended; the resume writes a fresh run's bytes (was: the end of
    the input was a manifest write of its own after that chunk's, lost to such a kill: one more row group)."""
    pytest.importorskip("pyarrow")
    src, out, fresh = tmp_path / "in.jsonl", tmp_path / "out.parquet", tmp_path / "fresh.parquet"
    _write(src, _texts(0, 22))
    sizes = {"chunk_size": 8, "block_size": 4, "checkpoint_seconds": seconds, "block_tokens": 40}
    request = EncodeRequest(batch_size=3, output="tokens" if rows == "tokens" else "vectors")
    job = EmbedJob(str(src), str(out), request, **sizes)
    run_killed_in(small, job, monkeypatch, "store_chunk", after=lambda args: args[4] == 22)  # (stop)
    _write(src, _texts(0, 29))
    job.resume = True
    embed_corpus(small, job, log=lambda m: None)
    embed_corpus(small, EmbedJob(str(src), str(fresh), request, **sizes), log=lambda m: None)
    assert out.read_bytes() == fresh.read_bytes()


@pytest.mark.parametrize(("count", "cut"), [(22, True), (24, False), (20, False), (0, False)])
def test_blocks_say_whether_the_end_of_the_input_cut_them(count, cut):
    """Blocks of 4 in chunks of 8: only a last block the input ended inside (before its multiple of 4) is
    reported cut; one that ends at its multiple is whole, as a longer input would have it."""
    from tokenpool.jobs.skeleton import Kind, blocks

    job = EmbedJob("in.txt", "out.npy", chunk_size=8, block_size=4)
    items = [(i, "t", ()) for i in range(count)]
    found = list(blocks(iter(items), job, Kind(None, job, "npy"), 0))
    assert [item for block, _ in found for item in block] == items
    assert [ended for _, ended in found] == [False] * (len(found) - 1) + [cut] * bool(found)


def test_a_reopened_run_that_shrank_back_to_a_chunk_boundary_then_grew_again(small, tmp_path, monkeypatch):
    """22 records, killed while the output was written; 7 appended; the resume reopens the last chunk and is
    killed before it stores one; the input cut back to 16 records (a chunk boundary), resumed, killed while the
    output was written; 13 appended: the output is a fresh run's (was: that resume, which stored no chunk, marked
    the end of the input with the counts of the chunk reopened before: the next reopen counted 37 rows of 29)."""
    src, out, fresh = tmp_path / "in.jsonl", tmp_path / "out.npy", tmp_path / "fresh.npy"
    job = EmbedJob(str(src), str(out), EncodeRequest(batch_size=3), chunk_size=8, block_size=4)
    for count, killed_in in [(22, "assemble"), (29, "store_chunk"), (16, "assemble")]:
        _write(src, _texts(0, count))
        run_killed_in(small, job, monkeypatch, killed_in)
        job.resume = True
    _write(src, _texts(0, 29))
    assert embed_corpus(small, job, log=lambda m: None).rows == 29
    embed_corpus(small, EmbedJob(str(src), str(fresh), EncodeRequest(batch_size=3), chunk_size=8, block_size=4),
                 log=lambda m: None)  # fmt: skip
    assert out.read_bytes() == fresh.read_bytes()
