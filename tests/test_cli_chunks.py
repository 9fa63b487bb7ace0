"""``tokenpool embed --chunks``: one row per chunk, its columns, bad input, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from clitools import assert_one_error_line, kill_after_chunks, run_forked  # noqa: E402
from test_encoder import _bert_weights  # noqa: E402

from tokenpool import Encoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

RECORDS = [
    {"id": "a", "text": "Cats purr softly. Dogs bark at night and the moon rises over the hill.", "spans": [[18, 40], [0, 17]]},
    {"id": "b", "text": "日本語のテキスト 😀 emoji here, and café façade", "spans": [[0, 8], [11, 21]]},
    {"id": "c", "text": "short one", "spans": [[0, 9]]},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert-cli")
    _bert_weights(folder)
    return folder


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("chunking", ["late", "naive"])
def test_parquet_rows_match_encode_chunks(run, tiny, tmp_path, chunking):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.parquet"
    common = ["--model", tiny, "--max-length", 16, "--chunking", chunking]
    code, _, err = run("embed", src, "-o", out, "--chunks", "tokens:6:2", "--chunk-size", 2, *common, "-q")
    assert code == 0, err
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pydict()
    assert list(table) == ["doc", "id", "chunk", "start", "end", "embedding"]
    encoder = Encoder(tiny, max_length=16, device="cpu")
    want = encoder.encode_chunks([r["text"] for r in RECORDS], chunks="tokens:6:2", chunking=chunking)
    assert table["doc"] == want.doc.tolist() and table["chunk"] == want.chunk.tolist()
    assert table["start"] == want.start.tolist() and table["end"] == want.end.tolist()
    assert table["id"] == [RECORDS[d]["id"] for d in want.doc.tolist()]
    np.testing.assert_allclose(np.array(table["embedding"]), want.vectors, rtol=1e-5, atol=1e-6)


def test_spans_to_npy_with_a_sidecar_index_and_jsonl(run, tiny, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{k: v for k, v in r.items() if k != "id"} for r in RECORDS])
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--chunks", "spans", "--model", tiny, "-q")
    assert code == 0, err
    vectors = np.load(tmp_path / "out.npy")
    index = [json.loads(line) for line in (tmp_path / "out.npy.chunks.jsonl").read_text().splitlines()]
    assert [(r["doc"], r["chunk"], r["start"], r["end"]) for r in index] == [
        (0, 0, 18, 40), (0, 1, 0, 17), (1, 0, 0, 8), (1, 1, 11, 21), (2, 0, 0, 9)
    ]  # fmt: skip
    assert "id" not in index[0] and vectors.shape == (5, 32)
    code, _, err = run("embed", src, "-o", tmp_path / "out.jsonl", "--chunks", "spans", "--model", tiny, "-q")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [list(r) for r in rows][0] == ["doc", "chunk", "start", "end", "embedding"]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), vectors, rtol=1e-6)


@pytest.mark.parametrize(
    ("records", "args", "needles"),
    [
        ([RECORDS[0], {"text": "abc", "spans": [[0, 9]]}], ["--chunks", "spans"], ["line 2", "span [0, 9]"]),
        ([RECORDS[0], {"text": "   "}], ["--chunks", "tokens:4"], ["line 2", "only whitespace"]),
        ([{"text": ""}], ["--chunks", "tokens:4"], ["line 1", "empty"]),
        ([RECORDS[0], {"text": "a   b", "spans": [[1, 4]]}], ["--chunks", "spans"], ["line 2", "covers no token"]),
        ([RECORDS[0], {"text": "ab", "spans": [[0, 1, 2]]}], ["--chunks", "spans"], ["line 2", "pair of integers"]),
        ([RECORDS[0]], ["--chunks", "tokens:15"], ["chunk size 15 exceeds the 14 text tokens"]),
        (  # a 14-token chunk cut inside words is more tokens alone: refused, not truncated
            [RECORDS[0], {"text": "unbelievably antidisestablishmentarianism electroencephalography " * 3}],
            ["--chunks", "tokens:14", "--chunking", "naive"],
            ["line 2", "over max_length 16", "naive chunking would truncate it"],
        ),
        ([RECORDS[0]], ["--chunks", "words:4"], ["--chunks must be", "tokens:SIZE", "'words:4'"]),
        ([RECORDS[0]], ["--long-documents", "windows", "--window-stride", "14"], ["--window-stride 14", "smaller"]),
    ],
)
def test_bad_input_exits_2_naming_the_record_and_writes_nothing(run, tiny, tmp_path, records, args, needles):
    src = _jsonl(tmp_path / "in.jsonl", records)
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", "--model", tiny, "--max-length", 16, *args)
    assert_one_error_line(code, err, *needles)
    assert _leftovers(tmp_path, {"in.jsonl"}) == []


def test_spans_need_jsonl_or_parquet(run, tiny, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("cats\n")
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--chunks", "spans", "--model", tiny)
    assert_one_error_line(code, err, "needs .jsonl or .parquet")


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="needs /dev/fd")
def test_a_pipe_input_is_refused_not_read_twice(run, tiny, tmp_path):
    """--chunks reads its input once to check it and again to embed it: a pipe (``<(...)``, /dev/stdin) was
    drained by the check, so the run found no records and wrote an empty output with exit status 0."""
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(json.dumps(r) + "\n" for r in RECORDS).encode())
    os.close(write_end)
    src = f"/dev/fd/{read_end}"  # what a shell's <(cat in.jsonl) passes
    try:
        out = tmp_path / "out.npy"
        code, _, err = run("embed", src, "--format", "jsonl", "-o", out, "--chunks", "tokens:4", "--model", tiny)
    finally:
        os.close(read_end)
    assert_one_error_line(code, err, src, "--chunks reads its input twice", "regular file")
    assert _leftovers(tmp_path, set()) == []


def test_resume_refuses_another_chunking(run, tiny, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.npy"
    from tokenpool.io.workdir import MANIFEST_VERSION, WorkDir

    with WorkDir(out) as work:  # a work folder of tokenpool's own, left by a naive-chunking run
        work.write_manifest({
            "version": MANIFEST_VERSION, "options": {"chunking": "naive"}, "chunk_size": 1, "dimension": 32,
            "chunks_done": 1, "records_done": 1, "rows_done": 2, "items_done": 2, "has_ids": False,
            "prefix_sha256": "", "runs": 1, "chunks": [{"records": [0, 1], "files": {}}],
        })  # fmt: skip
    written = (work.path / "manifest.json").read_bytes()
    code, _, err = run("embed", src, "-o", out, "--chunks", "tokens:4", "--model", tiny, "--resume")
    assert_one_error_line(code, err, "refusing to resume", "chunking")
    assert (work.path / "manifest.json").read_bytes() == written  # the earlier run's work is untouched


def test_a_bad_record_keeps_finished_chunks_for_resume(run, tiny, tmp_path):
    """A record found bad while encoding stops the job with no output; the chunks before it are kept, and a
    --resume after the record is fixed reuses them and gives the rows of an uninterrupted run."""
    bad = {"id": "z", "text": "a   b", "spans": [[1, 4]]}  # a span over whitespace only: covers no token
    fixed = {"id": "z", "text": "a   b", "spans": [[0, 5]]}
    src = _jsonl(tmp_path / "in.jsonl", RECORDS + [bad])
    out = tmp_path / "out.npy"
    options = ["--chunks", "spans", "--model", tiny, "--max-length", 16, "--chunk-size", 1, "-q"]
    code, _, err = run("embed", src, "-o", out, *options)
    assert_one_error_line(code, err, "line 4", "covers no token")
    assert not out.exists() and not (tmp_path / "out.npy.chunks.jsonl").exists()
    work = tmp_path / "out.npy.tokenpool-partial"
    assert json.loads((work / "manifest.json").read_text())["chunks_done"] == 3
    _jsonl(src, RECORDS + [fixed])
    code, _, err = run("embed", src, "-o", out, *options, "--resume")
    assert code == 0, err
    reference = tmp_path / "ref.npy"
    code, _, err = run("embed", src, "-o", reference, *options[:-1])
    assert code == 0, err
    np.testing.assert_array_equal(np.load(out), np.load(reference))
    assert (tmp_path / "out.npy.chunks.jsonl").read_text() == (tmp_path / "ref.npy.chunks.jsonl").read_text()
    assert not work.exists()


def test_a_foreign_chunk_sidecar_is_never_replaced(run, tiny, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    foreign = tmp_path / "out.npy.chunks.jsonl"
    foreign.write_text('{"note": "mine"}\n')
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--chunks", "tokens:4", "--model", tiny)
    assert_one_error_line(code, err, "out.npy.chunks.jsonl", "not a tokenpool chunk index")
    assert foreign.read_text() == '{"note": "mine"}\n' and not (tmp_path / "out.npy").exists()
    # a parquet output writes no sidecar, and leaves a file of that name alone
    mine = tmp_path / "out.parquet.chunks.jsonl"
    mine.write_text("keep me\n")
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", "--chunks", "tokens:4", "--model", tiny, "-q")
    assert code == 0, err
    assert mine.read_text() == "keep me\n"


def test_sigkill_then_resume_gives_identical_chunk_rows(tmp_path):
    text = "The committee discussed the budget, the schedule and the remote control design in detail. "
    src = _jsonl(tmp_path / "in.jsonl", [{"id": f"m{i}", "text": f"{i} " + text * (3 + i % 4)} for i in range(60)])
    cmd = [sys.executable, "-m", "tokenpool.cli", "embed", str(src), "--chunks", "tokens:32:8", "--chunk-size", "3",
           "--long-documents", "windows", "--window-stride", "40", "--max-length", "64", "-q"]  # fmt: skip
    # the uninterrupted and the resumed runs: processes forked as the killed one is (`run_forked`)
    code, err = run_forked([*cmd, "-o", str(tmp_path / "ref.parquet")], ENV, tmp_path / "ref.err")
    assert code == 0, err
    done = kill_after_chunks([*cmd, "-o", str(tmp_path / "out.parquet")], tmp_path / "out.parquet", ENV)
    assert done["options"]["chunks"] == "tokens:32:8" and done["options"]["long_documents"] == "windows"
    code, err = run_forked([*cmd, "-o", str(tmp_path / "out.parquet"), "--resume"], ENV, tmp_path / "resume.err")
    assert code == 0, err
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out.parquet").equals(pq.read_table(tmp_path / "ref.parquet"))


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_embed_long_documents_windows_reads_every_token(run, tiny, tmp_path, fmt):
    """``embed --long-documents windows`` (no --chunks): the Encoder's windows vectors, not truncation."""
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / f"out.{fmt}"
    options = ["--model", tiny, "--max-length", 16, "--long-documents", "windows", "--window-stride", 5]
    code, _, err = run("embed", src, "-o", out, "--field", "text", *options, "-q")
    assert code == 0, err
    if fmt == "npy":
        got = np.load(out)
    else:
        import pyarrow.parquet as pq

        got = np.array(pq.read_table(out).column("embedding").to_pylist(), dtype=np.float32)
    texts = [r["text"] for r in RECORDS]
    windows = Encoder(tiny, max_length=16, long_documents="windows", window_stride=5).encode(texts)
    truncated = Encoder(tiny, max_length=16).encode(texts)
    np.testing.assert_allclose(got, windows, rtol=1e-5, atol=1e-6)
    assert np.abs(got[0] - truncated[0]).max() > 1e-3  # the first record is longer than one window


def test_iter_token_batches_refuses_windows_mode_and_vector_batches_follow_it(tiny):
    from tokenpool.errors import OptionError

    texts = [r["text"] for r in RECORDS]
    encoder = Encoder(tiny, max_length=16, long_documents="windows", window_stride=5)
    with pytest.raises(OptionError, match="long_documents='windows'"):
        next(iter(encoder.iter_token_batches(texts)))
    got = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
    for indices, vectors in encoder.iter_vector_batches(texts, batch_size=2):
        got[indices] = vectors
    np.testing.assert_array_equal(got, encoder.encode(texts, batch_size=2))


def test_chunks_honour_max_batch_tokens(run, tiny, tmp_path, monkeypatch):
    """--max-batch-tokens reaches the chunk job: every forward pass stays within it, rows as without it."""
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    shapes = []
    from tokenpool.model.runners import TorchRunner

    original = TorchRunner.forward

    def recording(self, input_ids, attention_mask):
        shapes.append(tuple(input_ids.shape))
        return original(self, input_ids, attention_mask)

    options = ["--chunks", "tokens:6:2", "--model", tiny, "--max-length", 16, "-q"]
    code, _, err = run("embed", src, "-o", tmp_path / "free.npy", *options)
    assert code == 0, err
    monkeypatch.setattr(TorchRunner, "forward", recording)
    code, _, err = run("embed", src, "-o", tmp_path / "budget.npy", *options, "--max-batch-tokens", 32)
    assert code == 0, err
    assert shapes and all(rows * width <= 32 for rows, width in shapes), shapes
    np.testing.assert_allclose(np.load(tmp_path / "budget.npy"), np.load(tmp_path / "free.npy"), atol=1e-6)
