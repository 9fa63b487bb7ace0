"""Stop 64 review of corpus jobs and io: paths named alike in io messages, JSON values in span messages, the
request's sizes bounded for every caller, one blank-line rule, and the compressed-input hint by first bytes."""

from __future__ import annotations

import bz2
import io
import json
import sys

import numpy as np
import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError, OptionError
from tokenpool.io.readers import iter_records


def test_a_line_break_in_a_path_and_a_typed_backslash_n_are_named_apart(run, tmp_path):
    """``tokenpool embed $'no\\nsuch.txt'`` (a line break) and ``'no\\\\nsuch.txt'`` (a typed backslash and n)
    both said "no\\nsuch.txt: no such file"; each is now quoted as Python writes it, as unknown arguments are."""
    errors = []
    for name in ("no\nsuch.txt", "no\\nsuch.txt"):
        path = str(tmp_path / name)
        code, _, err = run("embed", path, "-o", tmp_path / "out.npy", "-q")
        assert_one_error_line(code, err, f"{path!r}: no such file")
        errors.append(err)
    assert errors[0] != errors[1]
    plain = tmp_path / "plain.txt"  # a printable name is shown as it is
    code, _, err = run("embed", plain, "-o", tmp_path / "out.npy", "-q")
    assert_one_error_line(code, err, f"{plain}: no such file")
    assert repr(str(plain)) not in err


def test_beir_refuses_a_line_of_whitespace_json_does_not_skip(tmp_path):
    """A corpus.jsonl line of only U+000C (whitespace to Python's str.strip, not to JSON) was skipped by
    `read_beir` while `tokenpool embed` refuses the same line; both now refuse it, naming the line."""
    from tokenpool.evaluation.beir import read_beir

    with pytest.raises(json.JSONDecodeError):  # JSON's own reader: no JSON text on that line
        json.loads("\x0c")
    folder = tmp_path / "set"
    (folder / "qrels").mkdir(parents=True)
    corpus = folder / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "text": "hello"}\n\x0c\n', encoding="utf-8")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "hi"}\n', encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"{corpus}, line 2: invalid JSON"):
        read_beir(folder)
    with pytest.raises(CorpusError, match=f"{corpus}, line 2: invalid JSON"):
        list(iter_records(str(corpus), "jsonl"))
    corpus.write_text('{"_id": "d1", "text": "hello"}\n \t\r\n', encoding="utf-8")  # JSON's whitespace: skipped
    assert read_beir(folder).doc_ids == ["d1"]


@pytest.mark.parametrize("spans", [[[True, 5]], [[0, None]], [[0.0, 5]], [["0", 5]], "0-5", {"a": 1}, [7]])
def test_a_bad_span_is_named_as_the_records_json_writes_it(run, tmp_path, spans):
    """``{"spans": [[true, 5]]}`` was refused with "got [True, 5]", ``[0, null]`` with "got [0, None]" (Python's
    reprs of what the record holds); the value is now shown as JSON writes it (`json.dumps`)."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "a cat sat", "spans": spans}) + "\n", encoding="utf-8")
    shown = json.dumps(spans if isinstance(spans, (str, dict)) else spans[0])
    argv = ["embed", src, "-o", tmp_path / "out.parquet", "--chunks", "spans", "--model", tmp_path / "no-model"]
    code, _, err = run(*argv, "-q")
    assert_one_error_line(code, err, f"{src}, line 1: ", f"got {shown}")
    assert "True" not in err and "None" not in err and "'" not in err.split("got ")[-1]


@pytest.mark.parametrize("name", ["calibration_size", "max_batch_tokens", "batch_size"])
@pytest.mark.parametrize("size", [10**5000, 2**63], ids=["5000-digits", "2**63"])
def test_the_requests_sizes_are_bounded_for_every_caller(name, size):
    """`EncodeRequest.check` bounded none of its sizes: the Ray job (`embed_parquet(..., calibration_size=
    10**5000)`) started, then failed with Python's "Exceeds the limit (4300 digits)"; only the CLI's job refused
    it. Every caller now gets one message naming the option, at most numpy's int64 maximum."""
    from tokenpool.model.request import EncodeRequest

    top = np.iinfo(np.int64).max
    request = EncodeRequest(precision="int8", **{"calibration_size": 2, name: size})
    with pytest.raises(OptionError, match=f"^{name}=.*: at most {top}$"):
        request.check()
    assert getattr(EncodeRequest(precision="int8", **{"calibration_size": 2, name: int(top)}).check(), name) == top


def test_ray_refuses_a_huge_calibration_size_before_ray_starts(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import ray

    from tokenpool.integrations.ray import embed_parquet

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(ray, "init", no_ray)
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a cat"}\n', encoding="utf-8")
    with pytest.raises(OptionError, match="calibration_size=.*: at most"):
        embed_parquet(str(src), str(tmp_path / "out"), precision="int8", calibration_size=10**5000)


def test_a_bzip2_file_whose_error_comes_on_line_2_is_still_named_compressed(tmp_path):
    """The compressed hint looked at line 1 only: a bzip2 stream whose header is followed by a \\n byte (its
    block CRC; `bz2.compress` of this text writes one) read line 1 as text and failed on line 2 with no hint.
    The file's first bytes decide now; a text that starts "BZh" (bzip2's first three bytes) is no bzip2 file."""
    data = b"record 175\n" * 3
    packed = bz2.compress(data)
    assert bz2.decompress(packed) == data and packed.split(b"\n")[0].decode("utf-8")  # line 1 is UTF-8
    src = tmp_path / "in.txt"
    src.write_bytes(packed)
    with pytest.raises(CorpusError, match=r"line 2: .*; it looks bzip2-compressed: decompress it first$"):
        list(iter_records(str(src), "txt"))
    src.write_bytes("BZh9 caf\u00e9\n".encode("latin-1"))  # a text in Latin-1, not compressed
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(src), "txt"))
    assert str(caught.value) == f"{src}, line 1: invalid UTF-8 (byte 0xe9 at column 9)"


def test_stdin_refused_at_its_end_leaves_an_existing_output_as_it_was(run, tmp_path, monkeypatch):
    """The end-of-input --id-field refusal (stop 64) removes only what the job made: a file already at OUT
    keeps its bytes, and nothing else appears beside it."""
    data = (json.dumps({"text": "a cat", "docid": "x1"}) + "\n").encode()
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"mine\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run("embed", "-", "--format", "jsonl", "-o", out, "--token-vectors", "--id-field", "doc_id", "-q")
    assert_one_error_line(code, err, "<stdin>", "'doc_id'")
    assert out.read_bytes() == b"mine\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_stdin_with_ids_only_on_skipped_records_runs_as_the_file_does(run, tmp_path, monkeypatch):
    """``--skip-empty --id-field docid`` where only an empty (skipped) record holds a docid: the file's check
    finds the field held and the job runs; from stdin the end-of-input check (stop 64) looked at the embedded rows
    only and said "--id-field 'docid' is missing or null in every record", which the input shows false. Both now
    read every record for it: the same rows, exit 0."""
    import pyarrow.parquet as pq

    data = json.dumps({"text": "", "docid": "x0"}) + "\n" + json.dumps({"text": "a dog"}) + "\n"
    assert any(json.loads(line).get("docid") is not None for line in data.splitlines())  # the field is held
    src = tmp_path / "in.jsonl"
    src.write_text(data, encoding="utf-8")
    tables = []
    for name, given in (("file.parquet", src), ("pipe.parquet", "-")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
        argv = ["embed", given, "--format", "jsonl", "-o", tmp_path / name, "--token-vectors", "--skip-empty"]
        code, _, err = run(*argv, "--id-field", "docid", "-q")
        assert code == 0, err
        tables.append(pq.read_table(tmp_path / name))
    assert tables[0].equals(tables[1]) and tables[0].num_rows > 0


@pytest.mark.parametrize("chunk_size", ["1", "1000"])
def test_stdin_refused_at_its_end_removes_its_finished_chunks(run, tmp_path, monkeypatch, chunk_size):
    """With chunks already finished (--chunk-size 1) the end-of-input refusal still leaves no work folder."""
    data = "".join(json.dumps({"text": f"text {k}", "docid": "x"}) + "\n" for k in range(3)).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = tmp_path / "out.parquet"
    argv = ["embed", "-", "--format", "jsonl", "-o", out, "--token-vectors", "--chunk-size", chunk_size]
    code, _, err = run(*argv, "--id-field", "doc_id", "-q")
    assert_one_error_line(code, err, "<stdin>: --id-field 'doc_id' is missing or null in every record")
    assert list(tmp_path.iterdir()) == []
