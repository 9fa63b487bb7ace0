"""Readers' corners (.jsonl numbers and surrogates in other fields, invalid UTF-8 and twice-named columns in
.parquet/.csv/.tsv, tab-only .tsv, a lone byte-order mark) and an output inside a work folder: each test failed
before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.io.readers import iter_records


def _records(path: Path, fmt: str, **options) -> list[tuple[int, str]]:
    return [(line, text) for line, text, _ in iter_records(str(path), fmt, **options)]


def test_a_jsonl_number_json_cannot_convert_names_the_line(tmp_path, run):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "fine"}\n{"text": "hello", "n": 1' + b"0" * 5000 + b"}\n")
    with pytest.raises(CorpusError, match=r"in\.jsonl, line 2: invalid JSON"):
        list(iter_records(str(src), "jsonl"))
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "-q")
    assert_one_error_line(code, err, "in.jsonl, line 2", "invalid JSON")
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("option", [["--chunks", "tokens:8:0"], ["--token-vectors"]])
def test_a_lone_surrogate_in_the_id_field_is_refused_naming_the_line(tmp_path, run, option):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "hello world", "id": "a"}\n{"text": "more words", "id": "x\\ud800"}\n')
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", src, "-o", out, *option, "-q")
    assert_one_error_line(code, err, "in.jsonl, line 2", "'id'", "surrogate")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no output, no work folder left


def _invalid_utf8_strings(values: list[bytes]):
    import pyarrow as pa

    return pa.array(values, pa.binary()).view(pa.string())  # parquet writers need not validate UTF-8


@pytest.mark.parametrize("dictionary", [False, True])
def test_invalid_utf8_in_a_parquet_column_names_the_row(tmp_path, dictionary):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [f"row {i}".encode() for i in range(1500)]
    rows[1234] = b"bad \xff here"
    texts = _invalid_utf8_strings(rows)
    pq.write_table(pa.table({"text": texts.dictionary_encode() if dictionary else texts}), tmp_path / "in.parquet")
    with pytest.raises(CorpusError, match=r"in\.parquet, row 1235: column 'text' holds invalid UTF-8"):
        list(iter_records(str(tmp_path / "in.parquet"), "parquet"))
    ids = _invalid_utf8_strings([b"a", b"\xed\xa0\x80"])  # an encoded surrogate is not UTF-8 either
    pq.write_table(pa.table({"text": ["x", "y"], "id": ids}), tmp_path / "ids.parquet")
    with pytest.raises(CorpusError, match=r"ids\.parquet, row 2: column 'id' holds invalid UTF-8"):
        list(iter_records(str(tmp_path / "ids.parquet"), "parquet", extras=("id",)))


@pytest.mark.parametrize("extras", [(), ("id",)])
def test_a_parquet_column_name_given_twice_is_refused(tmp_path, run, extras):
    import pyarrow as pa
    import pyarrow.parquet as pq

    twice = "id" if extras else "text"
    names = ["text", "id", twice]
    pq.write_table(pa.table([pa.array(["a"]), pa.array(["b"]), pa.array(["c"])], names=names), tmp_path / "in.parquet")
    with pytest.raises(CorpusError, match=f"2 columns are named '{twice}'"):
        list(iter_records(str(tmp_path / "in.parquet"), "parquet", extras=extras))
    if not extras:
        code, _, err = run("embed", tmp_path / "in.parquet", "-o", tmp_path / "out.npy", "-q")
        assert_one_error_line(code, err, "in.parquet", "2 columns are named 'text'")


def test_tsv_fields_are_split_on_tabs_only(tmp_path):
    data = b'id\ttext\n1\ta lone \r inside\n2\t"quoted" and \\t\n\n3\tcrlf line\r\n4\tlast, no newline'
    (tmp_path / "in.tsv").write_bytes(data)
    lines = data.decode().split("\n")
    expected = [  # the documented split: each non-blank line after the header, its second tab-separated field
        (number, line.removesuffix("\r").split("\t")[1]) for number, line in enumerate(lines, 1) if number > 1 and line
    ]
    assert _records(tmp_path / "in.tsv", "tsv") == expected
    assert expected[0][1] == "a lone \r inside"
    from tokenpool.io.readers import count_records

    assert count_records(str(tmp_path / "in.tsv"), "tsv") == len(expected)


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "tsv"])
def test_a_file_holding_only_a_byte_order_mark_is_an_empty_file(tmp_path, fmt):
    from tokenpool.io.readers import count_records

    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "bom").write_bytes(b"\xef\xbb\xbf")
    for name in ("empty", "bom"):  # the same records (none) or the same error (no header row)
        try:
            found: object = _records(tmp_path / name, fmt)
        except CorpusError as exc:
            found = str(exc).replace(str(tmp_path / name), "FILE")
        if name == "empty":
            reference = found
        assert found == reference, name
    assert count_records(str(tmp_path / "bom"), fmt) == count_records(str(tmp_path / "empty"), fmt)
    (tmp_path / "bom-newline.txt").write_bytes(b"\xef\xbb\xbf\n")  # one empty line stays one record
    assert _records(tmp_path / "bom-newline.txt", "txt") == [(1, "")]


def test_an_output_inside_another_outputs_work_folder_is_refused(tmp_path, run, monkeypatch):
    """A partial run's folder is cleaned of the names its job gives files (``output.jsonl``, chunk files) when
    that job finishes: an output written there by another job would be deleted with it."""
    monkeypatch.chdir(tmp_path)
    Path("a.jsonl").write_bytes(b'{"text": "one"}\n{"text": "two"}\n{"text": "three"}\nnot json\n')
    code, _, err = run("embed", "a.jsonl", "-o", "a.npy", "--chunk-size", 1, "-q")
    assert code == 2 and Path("a.npy.tokenpool-partial/manifest.json").is_file(), err  # a partial run stays
    Path("b.txt").write_text("other\ntexts\n")
    before = sorted(p.name for p in Path("a.npy.tokenpool-partial").iterdir())
    for name in ("output.jsonl", "chunk-000000.embedding.npy", "sub/b.npy"):
        (Path("a.npy.tokenpool-partial") / name).parent.mkdir(exist_ok=True)
        code, _, err = run("embed", "b.txt", "-o", Path("a.npy.tokenpool-partial") / name, "-q")
        assert_one_error_line(code, err, "inside the tokenpool work folder")
    (Path("a.npy.tokenpool-partial") / "sub").rmdir()
    assert sorted(p.name for p in Path("a.npy.tokenpool-partial").iterdir()) == before  # nothing written there
    Path("a.jsonl").write_bytes(b'{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n')
    code, _, err = run("embed", "a.jsonl", "-o", "a.npy", "--chunk-size", 1, "--resume", "-q")
    assert code == 0 and not Path("a.npy.tokenpool-partial").exists(), err


@pytest.mark.parametrize(("fmt", "data"), [("csv", b"text,id,text\na,1,b\n"), ("tsv", b"text\tid\ttext\na\t1\tb\n")])
def test_a_table_header_naming_the_column_twice_is_refused(tmp_path, fmt, data):
    """As for .parquet: either column could be meant, and the other's texts would be dropped silently."""
    (tmp_path / f"in.{fmt}").write_bytes(data)
    with pytest.raises(CorpusError, match=rf"in\.{fmt}: 2 columns are named 'text'"):
        _records(tmp_path / f"in.{fmt}", fmt)
    assert _records(tmp_path / f"in.{fmt}", fmt, column="id") == [(2, "1")]


@pytest.mark.parametrize("option", [["--chunks", "tokens:8:0"], ["--token-vectors"]])
def test_record_ids_are_strings_or_decimal_integers_never_python_spellings(tmp_path, run, option):
    """`--id-field` values were str()'d: true became "True", 1e16 "1e+16", {"k": 1} "{'k': 1}". Strings stay as
    given, integers are written in decimal, anything else is refused naming the line (before any encoding)."""
    import json

    import pyarrow.parquet as pq

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a b", "id": "x1"}\n{"text": "c d", "id": 12345678901234567890}\n{"text": "e f"}\n')
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", src, "-o", out, *option, "-q")
    assert code == 0, err
    ids = {row["doc"]: row["id"] for row in pq.read_table(out).to_pylist()}
    assert ids == {0: "x1", 1: str(12345678901234567890), 2: None}
    for value in ("true", "1e16", "1.0", '{"k": 1}', "[1]"):
        bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.jsonl"
        bad.write_text('{"text": "a b", "id": "ok"}\n' + json.dumps({"text": "c d"})[:-1] + f', "id": {value}}}\n')
        code, _, err = run("embed", bad, "-o", tmp_path / "never.parquet", *option, "-q")
        assert_one_error_line(code, err, f"{bad.name}, line 2", "the id must be a string or an integer")
        assert not (tmp_path / "never.parquet").exists()
