"""Corners of the encoder's batching and of the corpus readers: a left-padded BERT split on out of memory,
numpy sizes, .jsonl whitespace lines and repeated field names, a damaged .parquet, .csv/.tsv id columns. Each
test failed before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_one_error_line
from test_batching import OomAbove
from test_encoder import _save_sentence_transformer
from tinymodels import bert_weights

from tokenpool import Encoder
from tokenpool.errors import CorpusError
from tokenpool.io.readers import count_records, iter_records

# ------------------------------------------------------------------------------------------ batching


@pytest.fixture(scope="module")
def left_bert(tmp_path_factory):
    """A tiny random BERT whose tokenizer pads on the left: its position ids are the tokens' columns."""
    folder = tmp_path_factory.mktemp("left-bert")
    bert_weights(folder)
    config_file = folder / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "padding_side": "left"}))
    _save_sentence_transformer(folder, "mean")
    encoder = Encoder(folder, normalize=False, device="cpu")
    assert encoder.tokenization.left_pad
    return encoder


LEFT_TEXTS = ["a b c d e f g h i j k l m n o p q r s t", "short", "tiny", "x y", "another one here ok"]


def test_a_left_padded_bert_batch_split_on_out_of_memory_gives_the_unsplit_vectors(left_bert, monkeypatch):
    """The halves keep the batch's leading pad columns: dropping them moved every token of the shorter rows to
    another position id (a BERT's position is its column), and changed their vectors."""
    reference = left_bert.encode(LEFT_TEXTS, batch_size=8)
    tokens = left_bert.encode(LEFT_TEXTS, batch_size=8, output="tokens")
    flaky = OomAbove(left_bert.runner, limit=30)
    monkeypatch.setattr(left_bert, "runner", flaky)
    np.testing.assert_allclose(left_bert.encode(LEFT_TEXTS, batch_size=8), reference, rtol=0, atol=2e-6)
    for got, want in zip(left_bert.encode(LEFT_TEXTS, batch_size=8, output="tokens"), tokens, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert flaky.failures > 0


def test_numpy_integers_are_sizes_and_bools_are_not(left_bert):
    """batch_size / max_batch_tokens / max_length from numpy (a config array, argparse into numpy) are
    accepted as the same ints, and come back as ints; a bool, numpy's too, is still refused."""
    from tokenpool.model.request import EncodeRequest

    texts = ["a b c", "hello there world", "x", "the quick brown fox"]
    reference = left_bert.encode(texts, batch_size=2, max_batch_tokens=12)
    got = left_bert.encode(texts, batch_size=np.int64(2), max_batch_tokens=np.int32(12))
    np.testing.assert_array_equal(got, reference)
    rows = left_bert.tokenize(texts)
    assert [b.indices.tolist() for b in left_bert.forward_ids(rows, batch_size=np.uint8(3))] == [
        b.indices.tolist() for b in left_bert.forward_ids(rows, batch_size=3)
    ]
    request = EncodeRequest(batch_size=np.int64(3), max_batch_tokens=np.int16(9)).check()
    assert (type(request.batch_size), type(request.max_batch_tokens)) == (int, int)
    cut = Encoder(left_bert.model_path, max_length=np.int64(6), normalize=False, device="cpu")
    same = Encoder(left_bert.model_path, max_length=6, normalize=False, device="cpu")
    assert type(cut.max_length) is int
    np.testing.assert_array_equal(cut.encode(texts), same.encode(texts))
    for bad in (True, np.True_, 2.0, np.float64(2), 0, np.int64(0)):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            left_bert.encode(texts, batch_size=bad)


# ------------------------------------------------------------------------------------------ .jsonl records

JSON_SPACE = " \t\r\n"  # RFC 8259's whitespace: the only characters JSON allows outside its values
OTHER_SPACES = ["\u00a0", "\u3000", "\u2028", "\u2003", "\x0c", "\x0b", "\x1c", "\x85"]


def _json_lines_reference(lines: list[str]) -> list[tuple[int, str]]:
    """What a .jsonl file of ``lines`` holds, read with json.loads: a line of JSON whitespace is blank, any other
    line is one object (json.loads raises on one that is not JSON)."""
    return [(n, json.loads(line)["text"]) for n, line in enumerate(lines, 1) if line.strip(JSON_SPACE)]


@pytest.mark.parametrize("space", OTHER_SPACES)
def test_a_jsonl_line_of_non_json_whitespace_is_refused_not_skipped(tmp_path, space):
    """A line holding only U+00A0 (or another space JSON does not allow) is no JSON: json.loads refuses it, so
    the reader names its line instead of dropping it as blank."""
    src = tmp_path / "in.jsonl"
    lines = ['{"text": "one"}', space, '{"text": "two"}']
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        _json_lines_reference(lines)
    with pytest.raises(CorpusError, match=r"in\.jsonl, line 2: invalid JSON"):
        list(iter_records(str(src), "jsonl"))


def test_jsonl_blank_lines_are_json_whitespace_and_whitespace_texts_are_records(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = ['{"text": "one"}', " \t ", "", "\r", '{"text": "\\u00a0"}', '{"text": "   "}', '  {"text": "\u3000"}  ']
    src.write_bytes(("\n".join(lines) + "\n").encode())
    got = [(line, text) for line, text, _ in iter_records(str(src), "jsonl")]
    assert got == _json_lines_reference(lines)
    assert count_records(str(src), "jsonl") == len(got)


def test_the_cli_names_a_non_json_whitespace_line(tmp_path, run):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "one"}\n\u00a0\n{"text": "two"}\n', encoding="utf-8")
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "-q")
    assert_one_error_line(code, err, "in.jsonl, line 2", "invalid JSON")
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize(
    ("line", "extras", "name"),
    [
        ('{"text": "a", "text": "b"}', (), "text"),
        ('{"text": "a", "id": 1, "text": "b", "text": "c"}', ("id",), "text"),
        ('{"id": "x", "text": "a", "id": "y"}', ("id",), "id"),
        ('{"text": "a", "spans": [[0, 1]], "id": 2, "spans": [[0, 2]]}', ("id", "spans"), "spans"),
    ],
)
def test_a_field_given_twice_in_a_jsonl_record_is_refused_naming_it(tmp_path, line, extras, name):
    """json.loads keeps the last value silently; which one the writer meant is unknown (a header naming a
    column twice is refused the same way)."""
    given = sum(key == name for key, _ in json.loads(line, object_pairs_hook=list))
    assert given >= 2
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine", "id": 0}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"in\.jsonl, line 2: field '{name}' is given {given} times"):
        list(iter_records(str(src), "jsonl", extras=extras))


def test_names_given_twice_that_are_not_read_leave_the_record_as_json_reads_it(tmp_path):
    """Only the fields read are checked: a repeated name elsewhere (another field, a nested object) is json's
    last-wins object, as before; a nested object in the text field is still 'an object'."""
    lines = ['{"text": "a", "meta": 1, "meta": 2, "id": {"k": 1, "k": 2}}', '{"text": {"x": 1, "x": 2}}']
    src = tmp_path / "in.jsonl"
    src.write_text(lines[0] + "\n", encoding="utf-8")
    (record,) = iter_records(str(src), "jsonl", extras=("id",))
    want = json.loads(lines[0])
    assert record == (1, want["text"], (want["id"],))
    src.write_text(lines[1] + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="line 1: field 'text' is an object, not a string"):
        list(iter_records(str(src), "jsonl"))


# ------------------------------------------------------------------------------------------ damaged .parquet


def _damaged_parquet(tmp_path):
    """A parquet file of 3,000 rows whose middle (data pages, not the footer) is overwritten: pyarrow opens it
    and fails while reading a batch."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"text number {i} " * 20 for i in range(3000)]}), path, compression="NONE")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4000] = b"\xab" * 4000
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):  # the reference: pyarrow itself cannot read it
        pq.read_table(path)
    return path


def test_a_damaged_parquet_page_is_refused_naming_the_file(tmp_path, run):
    path = _damaged_parquet(tmp_path)
    with pytest.raises(CorpusError, match=r"in\.parquet, row \d+ or after: not readable parquet data"):
        list(iter_records(str(path), "parquet"))
    code, _, err = run("embed", path, "-o", tmp_path / "out.npy", "-q")
    assert_one_error_line(code, err, "in.parquet, row", "not readable parquet data")


def test_count_records_of_a_parquet_file_pyarrow_cannot_open_is_unknown(tmp_path):
    """count_records is the progress bar's pre-pass: a file it cannot count is None (the reader then names the
    problem), not pyarrow's ArrowInvalid."""
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "in.parquet"
    path.write_bytes(b"not a parquet file at all PAR1")
    with pytest.raises(ValueError):
        pq.ParquetFile(path)
    assert count_records(str(path), "parquet") is None


# ------------------------------------------------------------------------------------------ .csv / .tsv ids


CSV_ROWS = [["id", "text", "note"], ["A-1", "hello world", "x"], ["", "second, quoted text", "y"], ["B", "third"]]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_the_id_column_of_a_csv_or_tsv_reaches_the_records(tmp_path, fmt):
    """--id-field names a field or column ("copied to each chunk row when the input has it"): a .csv/.tsv
    header naming it gave None for every record, so chunk and token rows silently had no ids."""
    import csv

    src, delimiter = tmp_path / f"in.{fmt}", "\t" if fmt == "tsv" else ","
    with open(src, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter=delimiter, lineterminator="\n").writerows(CSV_ROWS)
    with open(src, newline="", encoding="utf-8") as fh:  # the reference: csv.DictReader (None: a short row)
        want = [(row["text"], (row["id"], row["note"], None)) for row in csv.DictReader(fh, delimiter=delimiter)]
    got = [(text, values) for _, text, values in iter_records(str(src), fmt, extras=("id", "note", "absent"))]
    assert got == want
    assert [line for line, _, _ in iter_records(str(src), fmt)] == [2, 3, 4]


def test_a_csv_header_naming_the_id_column_twice_is_refused(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,text,id\n1,hello,2\n", encoding="utf-8")
    assert [text for _, text, _ in iter_records(str(src), "csv")] == ["hello"]  # not read: no matter
    with pytest.raises(CorpusError, match=r"in\.csv: 2 columns are named 'id'; which one is meant\?"):
        list(iter_records(str(src), "csv", extras=("id",)))


def test_cli_chunk_rows_of_a_csv_carry_its_ids(tmp_path, run):
    src = tmp_path / "in.csv"
    src.write_text('id,text\ndoc-7,"hello world, and more"\n8,short text\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _, err = run("embed", src, "-o", out, "--chunks", "tokens:4", "-q")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(row["doc"], row["id"]) for row in rows} == {(0, "doc-7"), (1, "8")}
