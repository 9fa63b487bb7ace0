"""The bugs of issue 18 where the copies of the job code had drifted apart; each test failed before the jobs/
skeleton (commit c402641), through the command line or Ray's batch class, and passes with it:

- every job names a bad record by file and line, as ``embed`` does (the chunk job said ``texts[1]``);
- ``--checkpoint-seconds`` and ``--progress`` reach the chunk job (it read ``--chunk-size`` records at once);
- Ray's chunk and token rows carry the command line's columns (``doc``; ``n_tokens``, ``token_ids``,
  ``token_spans``), with the same values;
- a manifest edited between a kill and ``--resume`` is refused, whatever field was edited (the int8
  calibration's ``maximum[0]`` was used silently).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line
from test_jobs_fixtures import MODEL, TXT, sigkill_after_chunks

pytest.importorskip("torch")
pytest.importorskip("transformers")

FAST = ["--model", MODEL, "--device", "cpu"]


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", [["--chunks", "tokens:4"], ["--token-vectors"]], ids=["chunks", "tokens"])
def test_a_bad_record_is_named_by_file_and_line_as_embed_names_it(run, tmp_path, mode):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine words"}\n{"text": "a lone \\ud800 surrogate"}\n', encoding="utf-8")
    code, _, pooled = run("embed", src, "-o", tmp_path / "p.npy", *FAST)
    assert_one_error_line(code, pooled, f"{src}, line 2: field 'text' holds a lone surrogate (U+D800")
    code, _, err = run("embed", src, "-o", tmp_path / "r.npy", *FAST, *mode)
    assert code == 2 and err == pooled


@pytest.mark.parametrize("mode", [["--chunks", "tokens:4"], ["--token-vectors"]], ids=["chunks", "tokens"])
def test_checkpoint_seconds_close_row_job_chunks_by_time(run, tmp_path, mode):
    """600 records (three blocks of at most 256) in one --chunk-size: closed by time after each block, and the
    files are those of a run closed by records; --progress shows a bar."""
    lines = TXT.read_text(encoding="utf-8").split("\n")[:-1]
    src = tmp_path / "in.txt"
    src.write_text("".join(f"{lines[i % len(lines)] or 'empty'} {i}\n" for i in range(600)), encoding="utf-8")
    code, _, err = run("embed", src, "-o", tmp_path / "t.npy", *FAST, *mode, "--checkpoint-seconds", 0, "--progress")
    assert code == 0, err
    assert "chunks computed 3, reused 0" in err and "texts/s" in err
    code, _, err = run("embed", src, "-o", tmp_path / "r.npy", *FAST, *mode, "-q")
    assert code == 0, err
    suffix = ".chunks.jsonl" if "--chunks" in mode else ".tokens.jsonl"
    for name in ("{}.npy", "{}.npy" + suffix):
        assert (tmp_path / name.format("t")).read_bytes() == (tmp_path / name.format("r")).read_bytes()


RECORDS = [{"id": f"doc-{i}", "text": text} for i, text in enumerate(TXT.read_text(encoding="utf-8").split("\n")[:5])]


@pytest.mark.parametrize("mode", ["chunks", "tokens"])
def test_ray_rows_have_the_command_lines_columns_and_values(run, tmp_path, mode):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("ray")
    from tokenpool.integrations.ray import EmbedBatch
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    flags, options, array = {
        "chunks": (["--chunks", "tokens:6:2"], {"chunks": "tokens:6:2"}, "embedding"),
        "tokens": (["--token-vectors"], {"output": "tokens"}, "token_embeddings"),
    }[mode]
    out = tmp_path / "cli.parquet"
    code, _, err = run("embed", _jsonl(tmp_path / "in.jsonl", RECORDS), "-o", out, *FAST, *flags, "-q")
    assert code == 0, err
    cli = pq.read_table(out)
    embed = EmbedBatch("text", array, EncoderOptions(model=str(MODEL), device="cpu"), EncodeRequest(**options))
    ray = embed(pa.table({"id": [r["id"] for r in RECORDS], "text": [r["text"] for r in RECORDS]}))
    assert [c for c in cli.column_names if c not in ray.column_names] == []
    for name in cli.column_names:
        got, want = ray.column(name).to_pylist(), cli.column(name).to_pylist()
        if name == array:
            np.testing.assert_allclose(_flat(got), _flat(want), atol=1e-6)
        else:
            assert got == want, name


def _flat(rows: list) -> np.ndarray:
    return np.array([value for row in rows for value in np.ravel(np.array(row, dtype=np.float64))])


def _leaves(value: object, path: tuple = ()) -> list[tuple]:
    """The path of every number, string and boolean inside a JSON value."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))]
    return [] if value is None else [path]


def _edited(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 0.5 if isinstance(value, float) else value + 1
    return value + "x"


def test_a_manifest_edited_after_a_kill_is_refused_whatever_the_field(run, tmp_path):
    """An int8 job SIGKILLed after two chunks; then every value of its manifest in turn (the calibration's
    ranges, the options, the counts, each chunk's checksums) is edited and --resume must refuse, touching
    nothing; the unedited manifest resumes."""
    args = ["embed", str(TXT), "-o", str(tmp_path / "out.npy"), *map(str, FAST), "--chunk-size", "4",
            "--checkpoint-seconds", "3600", "--precision", "int8", "--calibration-size", "20", "-q"]  # fmt: skip
    assert sigkill_after_chunks([args]) == [True]
    path = tmp_path / "out.npy.tokenpool-partial" / "manifest.json"
    original = path.read_bytes()
    manifest = json.loads(original)
    leaves = [p for p in _leaves(manifest) if p[0] != "manifest_sha256"]
    assert ("calibration", "maximum", 0) in leaves and len(leaves) > 40
    for leaf in leaves:
        edited = json.loads(original)
        *parents, last = leaf
        holder = edited
        for key in parents:
            holder = holder[key]
        holder[last] = _edited(holder[last])
        path.write_text(json.dumps(edited, indent=1, sort_keys=True))
        code, _, err = run(*args, "--resume")
        assert code == 2 and "Traceback" not in err, (leaf, err)
        assert not (tmp_path / "out.npy").exists(), leaf
    path.write_bytes(original)
    code, _, err = run(*args, "--resume")
    assert code == 0, err


@pytest.mark.parametrize(
    "request_", [{}, {"chunks": "tokens:4"}, {"output": "tokens"}], ids=["vectors", "chunks", "tokens"]
)
def test_time_checkpoints_and_resume_keep_the_parquet_bytes(tmp_path, monkeypatch, request_):
    """Parquet row groups followed the work chunks, so chunks closed by --checkpoint-seconds (which depends on
    the machine's speed), and a run resumed after one, wrote other parquet bytes than a run closed by size;
    token rows also moved their later closes by weight (it restarted at a close by time, and at --resume)."""
    from tokenpool import Encoder
    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus, skeleton

    src = tmp_path / "in.txt"
    src.write_text("".join(f"line {i} " + "word " * (i % 7) + "\n" for i in range(40)), encoding="utf-8")
    encoder = Encoder(MODEL, device="cpu")

    def run_job(name: str, seconds: float, resume: bool = False) -> Path:
        out = tmp_path / name
        sizes = {"chunk_size": 16, "block_size": 5, "block_tokens": 60}
        request = EncodeRequest(**request_)
        job = EmbedJob(str(src), str(out), request, checkpoint_seconds=seconds, resume=resume, **sizes)
        embed_corpus(encoder, job, log=lambda m: None)
        return out

    reference = run_job("ref.parquet", 3600).read_bytes()
    assert run_job("timed.parquet", 0).read_bytes() == reference
    stored = skeleton.store_chunk

    def killed_after_three(*args, **kwargs):
        stored(*args, **kwargs)
        if args[1]["chunks_done"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(skeleton, "store_chunk", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_job("resumed.parquet", 0)
    monkeypatch.setattr(skeleton, "store_chunk", stored)
    assert run_job("resumed.parquet", 3600, resume=True).read_bytes() == reference
