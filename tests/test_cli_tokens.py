"""``tokenpool embed --token-vectors``: every token's vector per record, in .parquet/.jsonl/.npy, checked against
`Encoder.encode(output="tokens")` bit for bit and the tokenizer's own ids and offsets; bad options; resume after
SIGKILL."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("transformers")

from clitools import assert_one_error_line, kill_after_chunks, run_forked  # noqa: E402

from tokenpool import Encoder  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
RECORDS = [
    {"id": "a", "text": "Cats purr softly 😀 near the café."},  # the emoji is [UNK] in MiniLM's vocabulary
    {"id": "b", "text": ""},
    {"id": "c", "text": "日本語のテキスト and a literal [SEP] inside"},
    {"id": 7, "text": "The committee discussed the budget, the schedule and the remote control design in detail."},
]
TEXTS = [r["text"] for r in RECORDS]


@pytest.fixture(scope="module")
def bundled():
    return Encoder(device="cpu")


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    """The rows of a --token-vectors output, whatever its format: fields plus ``vectors`` (float32 n × D)."""
    fmt = path.suffix[1:]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        width = table.schema.field("token_embeddings").type.value_type.list_size
        assert table.schema.field("token_embeddings").type == pa.list_(pa.list_(pa.float32(), width))
        rows = []
        for i in range(table.num_rows):
            row = {name: table[name][i].as_py() for name in table.column_names if name != "token_embeddings"}
            flat = table["token_embeddings"][i].values.flatten().to_numpy(zero_copy_only=False)
            row["vectors"] = flat.reshape(-1, width)
            rows.append(row)
        return rows
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        width = next(len(row["token_embeddings"][0]) for row in rows if row["n_tokens"])
        for row in rows:
            row["vectors"] = np.array(row.pop("token_embeddings"), dtype=np.float32).reshape(row["n_tokens"], width)
        return rows
    vectors = np.load(path)
    rows = [json.loads(line) for line in Path(f"{path}.tokens.jsonl").read_text().splitlines()]
    assert sum(r["n_tokens"] for r in rows) == len(vectors)
    for row in rows:
        start = row.pop("offset")
        row["vectors"] = vectors[start : start + row["n_tokens"]]
    return rows


def _reference_ids_and_spans(encoder: Encoder, text: str, special_tokens: bool) -> tuple[list, list]:
    """The tokenizer's own ids and offsets for a text that fits the window; [-1, -1] for the added tokens."""
    encoded = encoder.tokenizer(text, add_special_tokens=special_tokens, return_offsets_mapping=True,
                                return_special_tokens_mask=True)  # fmt: skip
    spans = [[-1, -1] if special else list(pair)
             for pair, special in zip(encoded["offset_mapping"], encoded["special_tokens_mask"], strict=True)]  # fmt: skip
    return encoded["input_ids"], spans


@pytest.mark.parametrize("special", [True, False])
@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "npy"])
def test_rows_equal_encode_tokens_exactly(run, bundled, tmp_path, fmt, special):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / f"out.{fmt}"
    flags = [] if special else ["--no-special-tokens"]
    code, _, err = run("embed", src, "-o", out, "--token-vectors", *flags, "-q")
    assert code == 0, err
    rows = _read(out)
    want = bundled.encode(TEXTS, output="tokens", special_tokens=special)
    assert [r["doc"] for r in rows] == [0, 1, 2, 3]
    assert [r["id"] for r in rows] == ["a", "b", "c", "7"]  # ids as strings, as --chunks writes them
    for row, text, vectors in zip(rows, TEXTS, want, strict=True):
        assert row["vectors"].dtype == np.float32
        np.testing.assert_array_equal(row["vectors"], vectors)  # exactly the library's per-token output
        ids, spans = _reference_ids_and_spans(bundled, text, special)
        assert row["token_ids"] == ids and row["token_spans"] == spans and row["n_tokens"] == len(ids)
    assert rows[1]["n_tokens"] == (2 if special else 0)  # an empty text: [CLS] [SEP], as embed reads it
    assert 100 in rows[0]["token_ids"]  # the emoji's [UNK] is a text token: kept without special tokens
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.jsonl", out.name] + ([f"{out.name}.tokens.jsonl"] if fmt == "npy" else [])
    )


def test_chunks_and_skip_empty(run, bundled, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])  # no ids: no id column
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", src, "-o", out, "--token-vectors", "--chunk-size", 2, "--skip-empty", "-q")
    assert code == 0, err
    import pyarrow.parquet as pq

    assert pq.ParquetFile(out).metadata.num_row_groups == 2  # one per work chunk: written as it goes
    rows = _read(out)
    assert "id" not in rows[0] and [r["doc"] for r in rows] == [0, 2, 3]  # record 1 was empty
    # each work chunk's texts are encoded together: compare with the same calls
    want = bundled.encode(TEXTS[:1], output="tokens") + bundled.encode(TEXTS[2:], output="tokens")
    for row, vectors in zip(rows, want, strict=True):
        np.testing.assert_array_equal(row["vectors"], vectors)


def test_a_token_budget_batches_as_encode_does(run, bundled, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--token-vectors", "--max-batch-tokens", 20, "-q")
    assert code == 0, err
    want = bundled.encode(TEXTS, output="tokens", max_batch_tokens=20)
    for row, vectors in zip(_read(tmp_path / "out.npy"), want, strict=True):
        np.testing.assert_array_equal(row["vectors"], vectors)


def test_windows_read_a_long_text_whole(run, tmp_path):
    text = RECORDS[3]["text"] * 3
    src = _jsonl(tmp_path / "in.jsonl", [{"text": text}, {"text": "short"}])
    common = ["--max-length", 16, "--token-vectors", "-q"]
    code, _, err = run("embed", src, "-o", tmp_path / "w.jsonl", "--long-documents", "windows", "--window-stride", 5,
                       *common)  # fmt: skip
    assert code == 0, err
    windows = Encoder(max_length=16, long_documents="windows", window_stride=5, device="cpu")
    rows = _read(tmp_path / "w.jsonl")
    for row, vectors in zip(rows, windows.encode([text, "short"], output="tokens"), strict=True):
        np.testing.assert_array_equal(row["vectors"], vectors)
    ids, spans = _reference_ids_and_spans(windows, text, True)
    assert len(ids) > 16 and rows[0]["token_ids"] == ids and rows[0]["token_spans"] == spans  # no truncation
    code, _, err = run("embed", src, "-o", tmp_path / "t.jsonl", *common)
    assert code == 0, err
    truncated = _read(tmp_path / "t.jsonl")[0]
    assert truncated["n_tokens"] == 16 and truncated["token_ids"] == ids[:15] + [ids[-1]]  # [CLS] 14 [SEP]


def test_prompt_tokens_have_no_span(run, bundled, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"text": "cats purr"}])
    code, _, err = run("embed", src, "-o", tmp_path / "out.jsonl", "--token-vectors", "--prompt", "query: ", "-q")
    assert code == 0, err
    (row,) = _read(tmp_path / "out.jsonl")
    np.testing.assert_array_equal(row["vectors"], bundled.encode("cats purr", output="tokens", prompt="query: "))
    ids = bundled.tokenizer("query: cats purr")["input_ids"]
    assert row["token_ids"] == ids
    text_spans = bundled.tokenizer("cats purr", add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    # [CLS] query : | cats pu rr | [SEP]: the prompt's tokens are not from the text
    assert row["token_spans"] == [[-1, -1]] * 3 + [list(pair) for pair in text_spans] + [[-1, -1]]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--dim", "8"], ["--dim", "--token-vectors"]),
        (["--precision", "int8"], ["--precision", "--token-vectors"]),
        (["--precision", "float16"], ["--precision", "--token-vectors"]),
        (["--chunks", "tokens:8"], ["--chunks", "--token-vectors"]),
        (["--no-normalize"], ["--no-normalize", "--token-vectors"]),
    ],
)
def test_bad_combinations_exit_2_and_write_nothing(run, tmp_path, args, needles):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", "--token-vectors", *args)
    assert_one_error_line(code, err, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_special_tokens_flag_needs_token_vectors(run, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--no-special-tokens")
    assert_one_error_line(code, err, "--no-special-tokens", "--token-vectors")


def test_a_foreign_sidecar_is_never_replaced(run, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    foreign = tmp_path / "out.npy.tokens.jsonl"
    foreign.write_text('{"note": "mine"}\n')
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--token-vectors")
    assert_one_error_line(code, err, "out.npy.tokens.jsonl", "not a tokenpool token index")
    assert foreign.read_text() == '{"note": "mine"}\n' and not (tmp_path / "out.npy").exists()
    code, _, err = run("embed", foreign, "-o", tmp_path / "out.npy", "--token-vectors", "--field", "note")
    assert_one_error_line(code, err, "the input is named like the output's token index")


def test_resume_refuses_other_token_options(run, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", RECORDS * 3)
    out = tmp_path / "out.npy"
    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

    class Stop(Exception):
        pass

    bundled = Encoder(device="cpu")
    calls = []
    original, run_request = bundled.encode, bundled.run

    def encode_then_stop(*args, **kwargs):  # the second work chunk fails: one chunk stays in the work folder
        calls.append(1)
        if len(calls) == 2:
            raise Stop
        return run_request(*args, **kwargs)

    bundled.run = encode_then_stop
    with pytest.raises(Stop):
        embed_corpus(bundled, EmbedJob(str(src), str(out), EncodeRequest(output="tokens"), chunk_size=4), log=lambda m: None)
    code, _, err = run("embed", src, "-o", out, "--token-vectors", "--no-special-tokens", "--chunk-size", 4,
                       "--resume")  # fmt: skip
    assert_one_error_line(code, err, "refusing to resume", "special_tokens")
    code, _, err = run("embed", src, "-o", out, "--token-vectors", "--chunk-size", 4, "--resume")
    assert code == 0, err
    assert "chunks computed 2, reused 1" in err
    rows = _read(out)
    assert [r["doc"] for r in rows] == list(range(12))
    want = [v for k in range(0, 12, 4) for v in original((TEXTS * 3)[k : k + 4], output="tokens")]
    assert all(np.array_equal(r["vectors"], w) for r, w in zip(rows, want, strict=True))


def test_sigkill_then_resume_gives_identical_files(tmp_path):
    text = "The committee discussed the budget, the schedule and the remote control design in detail. "
    src = _jsonl(tmp_path / "in.jsonl", [{"id": f"m{i}", "text": f"{i} " + text * (1 + i % 2)} for i in range(60)])
    cmd = [sys.executable, "-m", "tokenpool.cli", "embed", str(src), "--token-vectors", "--chunk-size", "3",
           "--long-documents", "windows", "--window-stride", "20", "--max-length", "32", "-q"]  # fmt: skip
    # the uninterrupted and the resumed runs: processes forked as the killed one is (`run_forked`)
    code, err = run_forked([*cmd, "-o", str(tmp_path / "ref.npy")], ENV, tmp_path / "ref.err")
    assert code == 0, err
    out = tmp_path / "out.npy"
    done = kill_after_chunks([*cmd, "-o", str(out)], out, ENV)
    assert done["options"]["output"] == "tokens" and done["options"]["long_documents"] == "windows"
    assert 2 <= done["chunks_done"] < 20
    code, err = run_forked([*cmd, "-o", str(out), "--resume"], ENV, tmp_path / "resume.err")
    assert code == 0, err
    assert out.read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert Path(f"{out}.tokens.jsonl").read_bytes() == (tmp_path / "ref.npy.tokens.jsonl").read_bytes()
    assert not Path(f"{out}.tokenpool-partial").exists()


@settings(max_examples=200)
@given(
    counts=st.lists(st.integers(0, 40), max_size=60),
    block_size=st.integers(1, 9),
    chunk_size=st.integers(1, 12),
    block_tokens=st.integers(1, 80),
    resume_at=st.integers(0, 60),
)
def test_blocks_depend_on_the_records_alone(counts, block_size, chunk_size, block_tokens, resume_at):
    from tokenpool.jobs.skeleton import EmbedJob, Kind, blocks

    job = EmbedJob("in.txt", "out.npy", block_size=block_size, chunk_size=chunk_size)

    class Weighed(Kind):  # records weigh their token counts, as token rows' do
        block_weight = block_tokens

        def weight(self, item):
            return len(item[3][0])

    kind = Weighed(None, job, "npy")
    items = [(i, "t", (None,), (np.zeros(n), None)) for i, n in enumerate(counts)]

    def _blocks(records, job, done):
        return (block for block, _ in blocks(records, job, kind, done))

    blocks_ = list(_blocks(iter(items), job, 0))
    assert [item for block in blocks_ for item in block] == items  # every record once, in order
    start = 0
    for block in blocks_:
        tokens = sum(len(item[3][0]) for item in block)
        assert len(block) == 1 or tokens <= block_tokens  # over the budget only as a record of its own
        for size in (block_size, chunk_size):  # never across a multiple of block_size or chunk_size
            assert (start // size) == ((start + len(block) - 1) // size)
        start += len(block)
    # resumed at any block boundary, the rest of the blocks are the same (so are the batches)
    ends = np.cumsum([0] + [len(block) for block in blocks_])
    at = int(ends[np.searchsorted(ends, min(resume_at, len(items)))]) if len(items) else 0
    assert list(_blocks(iter(items[at:]), job, at)) == [b for b, s in zip(blocks_, ends, strict=False) if s >= at]


def test_a_chunk_closes_at_the_token_budget(bundled, tmp_path):
    import pyarrow.parquet as pq

    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out.parquet"
    job = EmbedJob(str(src), str(out), EncodeRequest(output="tokens"), block_tokens=20)
    result = embed_corpus(bundled, job, log=lambda m: None)
    sizes = [len(bundled.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert sizes == [11, 2, 15, 18] and result.items == sum(sizes) and [r["n_tokens"] for r in _read(out)] == sizes
    # blocks [11 2] [15] [18] (none over 20 tokens); a chunk closes once it holds 20: [11 2 15] [18]
    meta = pq.ParquetFile(out).metadata
    assert result.chunks == meta.num_row_groups == 2
    assert [meta.row_group(g).num_rows for g in range(2)] == [3, 1]


def test_an_earlier_runs_index_of_another_kind_is_removed(run, tmp_path):
    """OUT.tokens.jsonl of an earlier --token-vectors run stayed beside a pooled (or --chunks) OUT.npy written
    over it, its offsets pointing into an array that no longer holds token vectors; a user's file of that name
    stays, and an input named like it is refused (the job may remove that file)."""
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    out, index = tmp_path / "out.npy", tmp_path / "out.npy.tokens.jsonl"
    assert run("embed", src, "-o", out, "--token-vectors", "-q")[0] == 0 and index.exists()
    assert run("embed", src, "-o", out, "--chunks", "tokens:4", "--skip-empty", "-q")[0] == 0
    assert not index.exists() and (tmp_path / "out.npy.chunks.jsonl").exists()
    assert run("embed", src, "-o", out, "-q")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.npy"]
    index.write_text('{"note": "mine"}\n')
    assert run("embed", src, "-o", out, "-q")[0] == 0 and index.read_text() == '{"note": "mine"}\n'
    code, _, err = run("embed", index, "-o", out, "--field", "note")
    assert_one_error_line(code, err, "the input is named like the output's token index")


@pytest.mark.parametrize("flags", [["--token-vectors"], ["--chunks", "tokens:8"]])
def test_row_jobs_refuse_other_output_formats(run, tmp_path, flags):
    """--token-vectors / --chunks write .npy, .parquet or .jsonl; an .npz output is refused, not written as
    parquet under the wrong name."""
    src = _jsonl(tmp_path / "in.jsonl", RECORDS)
    code, _, err = run("embed", src, "-o", tmp_path / "out.npz", *flags)
    assert_one_error_line(code, err, flags[0], ".npy, .parquet or .jsonl", "not .npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_long_first_row_is_still_recognised_as_our_token_index(tmp_path):
    """The sidecar check reads a bounded prefix of the first line: a record of a million tokens is still ours."""
    from tokenpool.errors import CorpusError
    from tokenpool.jobs.rows import token_rows
    from tokenpool.jobs.skeleton import check_replaceable, row_head_of

    index = tmp_path / "out.npy.tokens.jsonl"
    row = {"doc": 0, "offset": 0, "n_tokens": 10**6, "token_ids": [2023] * 10**6}
    index.write_text(json.dumps(row) + "\n")
    assert index.stat().st_size > 1 << 22
    check_replaceable(index, row_head_of(token_rows(4)), "token index")
    index.write_text('{"note": "doc offset n_tokens"}\n')
    with pytest.raises(CorpusError, match="is not a tokenpool token index"):
        check_replaceable(index, row_head_of(token_rows(4)), "token index")
