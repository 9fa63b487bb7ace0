"""Stop 63, corpus jobs, io and Ray: defects found at the edges of options, inputs and the docs."""

from __future__ import annotations

import json

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.io.readers import iter_records

ROWS = [["--chunks", "tokens:4"], ["--token-vectors"]]


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_an_id_field_that_no_record_has_is_refused_before_the_model_loads(run, tmp_path, rows, fmt):
    """``--id-field doc_id`` misspelt (the records hold ``docid``) passed: the rows came out without an ``id``
    column, exit 0, while a missing --field / --column is refused. A named id field that no record has is now
    refused naming it (the default ``id`` stays optional: "when the records have it"); one that only some
    records have is kept, None elsewhere."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"text": "a first line"}, {"text": "a second line", "docid": "x2"}]
    src = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "csv":
        src.write_text("text,docid\na first line,\na second line,x2\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({"text": [r["text"] for r in records], "docid": [None, "x2"]}), src)
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", src, "-o", out, *rows, "--id-field", "doc_id", "-q")
    assert_one_error_line(code, err, str(src), "'doc_id'", "--id-field")
    assert not out.exists() and not list(tmp_path.glob("*partial*"))
    code, _, err = run("embed", src, "-o", out, *rows, "--id-field", "docid", "-q")
    assert code == 0, err
    want = {0: "" if fmt == "csv" else None, 1: "x2"}
    assert {row["doc"]: row["id"] for row in pq.read_table(out).to_pylist()} == want
    code, _, err = run("embed", src, "-o", tmp_path / "default.parquet", *rows, "-q")  # no "id": no id column
    assert code == 0, err
    assert "id" not in pq.read_table(tmp_path / "default.parquet").column_names


@pytest.mark.parametrize(("encoding", "name"), [("utf-32-le", "UTF-32"), ("utf-32-be", "UTF-32"),
                                                ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16")])  # fmt: skip
def test_a_utf16_or_utf32_file_is_named_by_its_own_byte_order_mark(tmp_path, encoding, name):
    """The hint "it looks like UTF-16" fired for a UTF-32 LE file too (its mark, FF FE 00 00, starts with UTF-16
    LE's FF FE), and a UTF-32 BE file (00 00 FE FF) got no hint at all. The reference: Python's own codecs,
    which read each file by its mark."""
    src = tmp_path / "in.txt"
    src.write_bytes(("\ufeff" + "a cat\n").encode(encoding))
    assert src.read_bytes().decode(encoding.removesuffix("-le").removesuffix("-be")) == "a cat\n"
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(src), "txt"))
    assert f"it looks like {name} (it starts with a {name} byte-order mark)" in str(caught.value), caught.value


@pytest.mark.parametrize("rows", ROWS)
def test_an_id_column_present_but_null_in_every_row_is_named_as_null_not_as_absent(run, tmp_path, rows):
    """Review: a parquet id column that the schema holds but whose every value is null was refused with "no record
    holds --id-field", which a user who sees the column in the schema cannot act on; the message now says it is
    missing or null. The reference is the file's own schema (pyarrow). ``--id-field id`` given (the default's
    name) stays optional, as the help says."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    nulls = pa.array([None, None], pa.string())
    pq.write_table(pa.table({"text": ["a first line", "a second"], "docid": nulls}), src)
    assert "docid" in pq.read_schema(src).names
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", *rows, "--id-field", "docid", "-q")
    assert_one_error_line(code, err, str(src), "--id-field 'docid' is missing or null in every record")
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", *rows, "--id-field", "id", "-q")
    assert code == 0, err
    assert "id" not in pq.read_table(tmp_path / "out.parquet").column_names
