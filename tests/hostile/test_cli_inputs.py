"""Hostile inputs to ``tokenpool embed``: bad corpora, side files named as the input, planted work folders,
pipes. Each row names the input, the expected exit status, and the disk state afterwards (which files exist,
byte for byte). In-process (`run` fixture, shared encoders) except where a real process is needed (stdin, FIFOs,
process substitution)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT, cli, files_under

TEXTS = ["the first line", "a second line", "", "fourth", "fifth and last"]


def _one_line_exit_2(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------------------------- bad corpora (exit 2)

BAD_CORPORA = [
    # (case, file name, bytes, extra args, message fragments)
    ("jsonl-lone-surrogate", "in.jsonl", b'{"text": "ok"}\n{"text": "bad \\ud800 here"}\n', [], ["line 2", "surrogate"]),
    ("jsonl-lone-low-surrogate", "in.jsonl", b'{"text": "\\udc00"}\n', [], ["line 1", "surrogate"]),
    ("jsonl-100k-nested-arrays", "in.jsonl", b'{"text": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
     [], ["line 1", "nested"]),
    ("jsonl-not-an-object", "in.jsonl", b'["text"]\n', [], ["line 1", "JSON object"]),
    ("jsonl-field-missing", "in.jsonl", b'{"body": "x"}\n', [], ["line 1", "no field"]),
    ("jsonl-field-a-number", "in.jsonl", b'{"text": 5}\n', [], ["line 1", "a number"]),
    ("jsonl-field-null", "in.jsonl", b'{"text": null}\n', [], ["line 1", "null"]),
    ("jsonl-truncated", "in.jsonl", b'{"text": "x"}\n{"text": "y', [], ["line 2", "invalid JSON"]),
    ("txt-invalid-utf8", "in.txt", b"fine\n\xff\xfe broken\n", [], ["line 2", "UTF-8"]),
    ("txt-utf16-bom", "in.txt", "hello\n".encode("utf-16"), [], ["line 1", "UTF-8"]),
    ("csv-no-column", "in.csv", b"a,b\n1,2\n", [], ["no column 'text'"]),
    ("csv-unclosed-quote", "in.csv", b'text\n"unclosed\n', [], ["malformed CSV"]),
    ("csv-empty", "in.csv", b"", [], ["empty file"]),
    ("tsv-short-row", "in.tsv", b"id\ttext\n1\n", [], ["line 2", "column"]),
    ("parquet-garbage", "in.parquet", b"PAR1 not really", [], ["parquet"]),
    ("unknown-suffix", "in.docx", b"x", [], ["--format"]),
]


@pytest.mark.parametrize(
    ("case", "name", "data", "extra", "fragments"), BAD_CORPORA, ids=[c[0] for c in BAD_CORPORA]
)
def test_bad_corpus_exit_2_nothing_written(run, tiny_bert, tmp_path, case, name, data, extra, fragments):
    src = tmp_path / name
    src.write_bytes(data)
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--model", tiny_bert, "-q", *extra)
    _one_line_exit_2(code, err, *fragments)
    assert files_under(tmp_path) == {name: data}  # input intact, no output, no work folder


BAD_OPTIONS = [
    ("chunk-size-0", ["--chunk-size", "0"], "positive integer"),
    ("batch-size-minus", ["--batch-size", "-3"], "positive integer"),
    ("checkpoint-seconds-negative", ["--checkpoint-seconds", "-1"], "seconds"),
    ("checkpoint-seconds-nan", ["--checkpoint-seconds", "nan"], "seconds"),
    ("checkpoint-seconds-inf", ["--checkpoint-seconds", "inf"], "seconds"),
    ("pooling-unknown", ["--pooling", "meen"], "meen"),
    ("dim-0", ["--dim", "0"], "positive integer"),
    ("dim-too-big", ["--dim", "100000"], "--dim"),
    ("max-length-too-big", ["--max-length", "100000"], "--max-length 100000"),
    ("prompt-name-unknown", ["--prompt-name", "nope"], "nope"),
    ("format-unknown", ["--format", "docx"], "docx"),
    ("output-suffix-unknown", ["-o", "{tmp}/out.docx"], "out.docx"),
    ("output-folder-missing", ["-o", "{tmp}/no/such/out.npy"], "does not exist"),
    ("output-is-a-directory", ["-o", "{tmp}/dir.npy"], "directory"),
    ("device-unknown", ["--device", "quantum"], "quantum"),
]


@pytest.mark.parametrize(("case", "extra", "fragment"), BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_bad_option_exit_2_nothing_written(run, tiny_bert, tmp_path, case, extra, fragment):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    (tmp_path / "dir.npy").mkdir()
    before = files_under(tmp_path)
    extra = [e.format(tmp=tmp_path) for e in extra]
    out = [] if "-o" in extra else ["-o", tmp_path / "out.npy"]
    code, _, err = run("embed", src, *out, "--model", tiny_bert, "-q", *extra)
    _one_line_exit_2(code, err, fragment)
    assert files_under(tmp_path) == before


def test_dictionary_encoded_parquet_strings_are_read(run, tiny_bert, tmp_path):
    """A dictionary-encoded string column is text: same vectors as the plain string column."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    plain = pa.array(TEXTS, pa.string())
    pq.write_table(pa.table({"text": plain}), tmp_path / "plain.parquet")
    pq.write_table(pa.table({"text": plain.dictionary_encode()}), tmp_path / "dict.parquet")
    assert pq.ParquetFile(tmp_path / "dict.parquet").schema_arrow.field("text").type.id == pa.dictionary(
        pa.int32(), pa.string()).id
    for name in ("plain", "dict"):
        code, _, err = run("embed", tmp_path / f"{name}.parquet", "-o", tmp_path / f"{name}.npy", "--model", tiny_bert)
        assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "dict.npy"), np.load(tmp_path / "plain.npy"))


def test_parquet_int_column_refused(run, tiny_bert, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([1, 2])}), tmp_path / "in.parquet")
    code, _, err = run("embed", tmp_path / "in.parquet", "-o", tmp_path / "o.npy", "--model", tiny_bert)
    _one_line_exit_2(code, err, "not strings")


# ------------------------------------------------------------------- side files named as the input (exit 2)


def _side_file_cases():
    def lines_txt(tmp):  # the case: the input happens to be named like OUT's lines file
        src = tmp / "notes.npy.lines.txt"
        src.write_text("my notes\nkeep them\n")
        return src, tmp / "notes.npy", []

    def lines_txt_skip_empty(tmp):
        src, out, _ = lines_txt(tmp)
        return src, out, ["--skip-empty"]

    def same_file(tmp):
        src = tmp / "in.jsonl"
        src.write_text('{"text": "a"}\n')
        return src, src, []

    def output_symlink_to_input(tmp):
        src = tmp / "in.jsonl"
        src.write_text('{"text": "a"}\n')
        (tmp / "out.jsonl").symlink_to(src)
        return src, tmp / "out.jsonl", []

    def output_hardlink_of_input(tmp):
        src = tmp / "in.jsonl"
        src.write_text('{"text": "a"}\n')
        os.link(src, tmp / "out.jsonl")
        return src, tmp / "out.jsonl", []

    def input_symlink_to_lines_file(tmp):
        real = tmp / "o.npy.lines.txt"
        real.write_text("1\n2\n")
        (tmp / "in.txt").symlink_to(real)
        return tmp / "in.txt", tmp / "o.npy", []

    def input_via_dotdot(tmp):
        (tmp / "sub").mkdir()
        src = tmp / "o.npy.lines.txt"
        src.write_text("x\n")
        return tmp / "sub" / ".." / "o.npy.lines.txt", tmp / "o.npy", ["--format", "txt"]

    return [
        ("input-named-OUT.lines.txt", lines_txt, "line-numbers file"),
        ("input-named-OUT.lines.txt-skip-empty", lines_txt_skip_empty, "line-numbers file"),
        ("input-is-output", same_file, "replace the input"),
        ("output-symlink-to-input", output_symlink_to_input, "replace the input"),
        ("output-hardlink-of-input", output_hardlink_of_input, "replace the input"),
        ("input-symlink-to-lines-file", input_symlink_to_lines_file, "line-numbers file"),
        ("input-dotdot-path-to-lines-file", input_via_dotdot, "line-numbers file"),
    ]


@pytest.mark.parametrize(("case", "make", "fragment"), _side_file_cases(), ids=[c[0] for c in _side_file_cases()])
def test_side_file_as_input_refused_untouched(run, tiny_bert, tmp_path, case, make, fragment):
    src, out, extra = make(tmp_path)
    before = files_under(tmp_path)
    links = sorted(p.name for p in tmp_path.iterdir() if p.is_symlink())
    code, _, err = run("embed", src, "-o", out, "--model", tiny_bert, "-q", *extra)
    _one_line_exit_2(code, err, fragment)
    assert files_under(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_symlink()) == links


# ------------------------------------------------------------- planted OUT.tokenpool-partial (exit 2, kept)


def _planted_cases():
    def symlink_to_dir(tmp):
        victim = tmp / "victim"
        victim.mkdir()
        (victim / "precious.txt").write_text("do not delete")
        (victim / "chunk-000000.embedding.npy").write_bytes(b"not ours")
        (tmp / "out.npy.tokenpool-partial").symlink_to(victim)

    def dangling_symlink(tmp):
        (tmp / "out.npy.tokenpool-partial").symlink_to(tmp / "nowhere")

    def foreign_dir(tmp):
        work = tmp / "out.npy.tokenpool-partial"
        work.mkdir()
        (work / "manifest.json").write_text("{}")
        (work / "mine.txt").write_text("a user's file")

    def empty_dir(tmp):
        (tmp / "out.npy.tokenpool-partial").mkdir()

    def a_file(tmp):
        (tmp / "out.npy.tokenpool-partial").write_text("a file, not a folder")

    def fake_marker_symlink(tmp):
        work = tmp / "out.npy.tokenpool-partial"
        work.mkdir()
        (tmp / "elsewhere.json").write_text('{"kind": "tokenpool work folder"}')
        (work / "tokenpool-work-folder.json").symlink_to(tmp / "elsewhere.json")

    return [
        ("symlink-to-another-dir", symlink_to_dir, "symlink"),
        ("dangling-symlink", dangling_symlink, "symlink"),
        ("foreign-directory", foreign_dir, "not a tokenpool work folder"),
        ("empty-directory", empty_dir, "not a tokenpool work folder"),
        ("a-file", a_file, "not a tokenpool work folder"),
        ("marker-is-a-symlink", fake_marker_symlink, "not a tokenpool work folder"),
    ]


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
@pytest.mark.parametrize(("case", "plant", "fragment"), _planted_cases(), ids=[c[0] for c in _planted_cases()])
def test_planted_work_folder_refused_nothing_deleted(run, tiny_bert, tmp_path, case, plant, fragment, resume):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    plant(tmp_path)
    before = files_under(tmp_path)
    links = {p.name: os.readlink(p) for p in tmp_path.rglob("*") if p.is_symlink()}
    code, _, err = run(
        "embed", src, "-o", tmp_path / "out.npy", "--model", tiny_bert, "-q", *(["--resume"] if resume else [])
    )
    _one_line_exit_2(code, err, fragment)
    assert files_under(tmp_path) == before
    assert {p.name: os.readlink(p) for p in tmp_path.rglob("*") if p.is_symlink()} == links


def test_foreign_file_inside_our_work_folder_is_kept(run, tiny_bert, tmp_path):
    """A user's file dropped into a (real) work folder survives the resumed run; only tokenpool's files go."""
    src = tmp_path / "in.jsonl"
    good = [json.dumps({"text": f"line {i}"}) for i in range(12)]
    src.write_text("\n".join([*good[:9], "{broken", *good[10:]]) + "\n")
    out = tmp_path / "out.npy"
    assert run("embed", src, "-o", out, "--model", tiny_bert, "--chunk-size", 4, "-q")[0] == 2
    work = tmp_path / "out.npy.tokenpool-partial"
    (work / "notes.md").write_text("mine")
    src.write_text("\n".join(good) + "\n")
    code, _, err = run("embed", src, "-o", out, "--model", tiny_bert, "--chunk-size", 4, "--resume", "-q")
    assert code == 0, err
    assert np.load(out).shape[0] == 12
    assert files_under(work) == {"notes.md": b"mine"}


def test_stale_lines_file_of_a_user_is_kept(run, tiny_bert, tmp_path):
    """OUT.lines.txt that is not tokenpool's format (a user's text) is not deleted by a run without --skip-empty."""
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    notes = tmp_path / "o.npy.lines.txt"
    notes.write_text("shopping list\n")
    code, _, err = run("embed", src, "-o", tmp_path / "o.npy", "--model", tiny_bert, "-q")
    assert code == 0, err
    assert notes.read_text() == "shopping list\n"


# ------------------------------------------------------------------------------------ pipes, FIFOs, stdin


def _rows(path: Path) -> int:
    return int(np.load(path).shape[0])


def test_process_substitution_with_progress_bar_reads_every_row(tiny_bert, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    command = (
        f"{sys.executable} -m tokenpool.cli embed <(cat {src}) --format txt -o {tmp_path / 'o.npy'} "
        f"--progress --model {tiny_bert}"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(["bash", "-c", command], capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _rows(tmp_path / "o.npy") == len(TEXTS)


def test_stdin_pipe_with_progress_bar_reads_every_row(tiny_bert, tmp_path):
    result = cli("embed", "-", "-o", tmp_path / "o.npy", "--progress", "--model", tiny_bert,
                 stdin=("\n".join(TEXTS) + "\n").encode())
    assert result.returncode == 0, result.stderr
    assert _rows(tmp_path / "o.npy") == len(TEXTS)


def test_named_fifo_is_opened_once_and_the_writer_finishes(tiny_bert, tmp_path):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    outcome: dict = {}

    def writer() -> None:
        try:
            with open(fifo, "w") as fh:  # blocks until the reader opens the FIFO
                for text in TEXTS * 20:
                    fh.write(text + "\n")
            outcome["ok"] = True
        except BrokenPipeError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    result = cli("embed", fifo, "--format", "txt", "-o", tmp_path / "o.npy", "--progress", "--model", tiny_bert,
                 timeout=120)
    thread.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert outcome == {"ok": True}
    assert _rows(tmp_path / "o.npy") == len(TEXTS) * 20


def test_stdin_closed_is_exit_2(tiny_bert, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = f"{sys.executable} -m tokenpool.cli embed - -o {tmp_path / 'o.npy'} --model {tiny_bert} <&-"
    result = subprocess.run(["bash", "-c", command], capture_output=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert b"stdin is closed" in result.stderr and b"Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_stdin_lone_surrogate_names_the_line(tiny_bert, tmp_path):
    result = cli("embed", "-", "--format", "jsonl", "-o", tmp_path / "o.npy", "--model", tiny_bert,
                 stdin=b'{"text": "fine"}\n{"text": "\\ud800"}\n')
    assert result.returncode == 2, result.stderr
    assert b"line 2" in result.stderr and b"Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())
