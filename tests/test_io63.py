"""Stop 63, follow-up fixes in io, jobs and evaluate's input: each test failed on the code before its fix."""

from __future__ import annotations

import json

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.io.readers import iter_records

TEXTS = {"txt": "a cat\nthe dog\n", "jsonl": '{"text": "a cat"}\n', "csv": "text,id\na cat,1\n", "tsv": "text\tid\na\t1\n"}
NUL_HINT = "it looks like UTF-16 or UTF-32 without a byte-order mark: save it as UTF-8"


@pytest.mark.parametrize("fmt", list(TEXTS))
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_utf16_or_utf32_file_without_a_byte_order_mark_is_refused_not_read_as_nuls(tmp_path, fmt, encoding):
    """A UTF-32 LE .txt "a\\nb\\n" was read as the texts 'a\\x00\\x00\\x00' and '\\x00\\x00\\x00b\\x00\\x00\\x00',
    exit 0 (UTF-16 LE alike: what many Windows tools write without a mark); a .csv/.tsv said "no column 'text'" and
    a .jsonl "invalid JSON". The reference is Python's codec, which reads the file as the text it holds: a raw NUL
    byte is now refused naming the file, line and column, with the hint. Ray reads these formats through the same
    lines."""
    from tokenpool.integrations import ray as tp_ray

    src = tmp_path / f"in.{fmt}"
    src.write_bytes(TEXTS[fmt].encode(encoding))
    assert src.read_bytes().decode(encoding) == TEXTS[fmt] and b"\0" in src.read_bytes()
    column = 2 if encoding.endswith("le") else 1  # the first character's first NUL
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(src), fmt))
    assert str(caught.value) == f"{src}, line 1: a NUL byte (column {column}), which is not text; {NUL_HINT}"
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("ray")
    with pytest.raises(CorpusError) as by_ray:  # the per-file reads of `--ray` (no cluster needed for them)
        if fmt == "txt":
            tp_ray._text_lines({"bytes": src.read_bytes(), "path": str(src)})
        else:
            tp_ray._file_table(pa.table({"bytes": [src.read_bytes()], "path": [str(src)]}), fmt, "text")
    assert str(by_ray.value) == str(caught.value)


def test_a_nul_escape_in_json_stays_text_and_a_raw_nul_later_is_named_by_its_line(tmp_path, run):
    """A JSON ``"\\u0000"`` escape is text (json reads it so) and stays accepted; a raw NUL byte on a later line of
    a UTF-8 .csv (which gave a text holding it, exit 0) is refused naming that line and column; the CLI says it
    in one line, exit 2, before writing anything."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "a\\u0000b", "id": "x"}\n')
    assert [text for _, text, _ in iter_records(str(src), "jsonl")] == [json.loads(src.read_bytes())["text"]]
    table = tmp_path / "in.csv"
    table.write_bytes(b"text,id\na cat,1\nthe\x00dog,2\n")
    out = tmp_path / "out.npy"
    code, _, err = run("embed", table, "-o", out, "-q")
    assert_one_error_line(code, err, f"{table}, line 3: a NUL byte (column 4), which is not text")
    assert "UTF-16" not in err  # (a UTF-8 file with one stray NUL: stop 64)
    assert not out.exists()


@pytest.mark.parametrize("rows", [["--token-vectors"], ["--chunks", "tokens:4"]])
@pytest.mark.parametrize(("id_field", "record"), [("docid", {"docid": [1]}), ("id", {"id": [1]})])
def test_a_list_id_is_refused_before_the_model_loads_by_token_and_chunk_jobs_alike(run, tmp_path, rows, id_field, record):
    """A --token-vectors job with an id that is a list (``{"docid": [1]}`` with --id-field docid, or ``{"id":
    [1]}``) was refused only in the run, after the model had loaded, where a --chunks job refuses it before: one
    check now serves both. The model named here does not exist, so only a check before loading can answer."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "a cat", id_field: "x1"}) + "\n" + json.dumps({"text": "a dog", **record}) + "\n")
    out = tmp_path / "out.parquet"
    argv = ["embed", src, "-o", out, *rows, "--id-field", id_field, "--model", tmp_path / "no-model", "-q"]
    code, _, err = run(*argv)
    assert_one_error_line(code, err, f"{src}, line 2: the id must be a string or an integer, got list [1]")
    assert not out.exists() and not list(tmp_path.glob("*partial*"))


def test_evaluate_reads_its_pairs_from_stdin_for_dash(run, tmp_path, monkeypatch):
    """``tokenpool evaluate - < pairs.tsv`` exited 2 with "-: no such file": the readability check took '-' for
    stdin, the pairs reader opened a file named '-'. It now reads stdin, as ``embed -`` does: the same scores as
    the file itself gives, and errors name ``<stdin>`` and the line."""
    import io
    import sys
    from pathlib import Path

    sample = Path(__file__).parents[1] / "examples" / "sts-sample.tsv"

    def stdin(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    monkeypatch.chdir(tmp_path)  # (no file named '-' here)
    code, want, err = run("evaluate", sample, "--pooling", "mean", "--json")
    assert code == 0, err
    stdin(sample.read_bytes())
    code, out, err = run("evaluate", "-", "--pooling", "mean", "--json")
    assert code == 0, err
    assert json.loads(out)["spearman_x100"] == json.loads(want)["spearman_x100"]
    stdin(b"score,s1,s2\n1,a,b\nx,c,d\n")
    code, _, err = run("evaluate", "-", "--pooling", "mean")
    assert_one_error_line(code, err, "<stdin>, line 3: score 'x' is not a number")
    stdin(b"score,s1,s2\n1,a,b\n")
    code, _, err = run("evaluate", "-", "--pooling", "mean")
    assert_one_error_line(code, err, "<stdin>: need at least 2 pairs")
