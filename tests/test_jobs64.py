"""Stop 64, corpus jobs, io and Ray: items carried from earlier notes, and defects found at the edges."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import sys
from pathlib import Path

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.io.formats import input_format
from tokenpool.io.readers import iter_records

TEXTS = "a cat sat\nthe dog ran\n"


@pytest.mark.parametrize(("packer", "name"), [(gzip.compress, "gzip"), (bz2.compress, "bzip2")])
@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv"])
def test_a_compressed_input_read_without_ray_says_it_is_compressed(tmp_path, packer, name, fmt):
    """``--format jsonl`` on a .gz said only "line 1: invalid UTF-8 (byte 0x8b at column 2)"; a compressed file
    is now named as such (by its first bytes, as the `gzip`/`bz2` modules that wrote it recognise it)."""
    src = tmp_path / f"in.{fmt}"
    src.write_bytes(packer(TEXTS.encode()))
    assert (gzip if name == "gzip" else bz2).decompress(src.read_bytes()).decode() == TEXTS
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(src), fmt))
    assert "line 1: invalid UTF-8" in str(caught.value) and f"it looks {name}-compressed" in str(caught.value)


@pytest.mark.parametrize("suffix", [".gz", ".GZ", ".bz2", ".zst", ".lz4"])
def test_a_compressed_name_says_only_ray_reads_it(suffix):
    """``tokenpool embed corpus.jsonl.gz`` said "cannot tell the input format from its name" although the name
    says it: a compressed file, which only the Ray job decompresses (`integrations.ray`'s suffixes)."""
    with pytest.raises(CorpusError) as caught:
        input_format(f"corpus.jsonl{suffix}")
    assert f"of a compressed ({suffix.lower()}) file" in str(caught.value) and "--ray" in str(caught.value)
    assert input_format(f"corpus.jsonl{suffix}", "jsonl") == "jsonl"  # --format still reads it as asked
    with pytest.raises(CorpusError, match="of a compressed"):  # (a pathlib.Path from the Python API too)
        input_format(Path(f"corpus.jsonl{suffix}"))


def test_text_that_starts_like_a_compressed_file_is_still_text(tmp_path):
    """The hint comes only with an error: a UTF-8 line starting "BZh" (bzip2's first bytes) is a text."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"BZh9 is a line\n")
    assert [text for _, text, _ in iter_records(str(src), "txt")] == ["BZh9 is a line"]


def test_a_stray_nul_in_a_utf8_file_is_not_called_utf16(tmp_path):
    """One NUL byte in a UTF-8 line ("the\\x00dog") was refused with "it looks like UTF-16 or UTF-32 without a
    byte-order mark: save it as UTF-8", which the file is already (Python's UTF-8 codec reads it; as UTF-16 it is
    no text at all). The hint now comes only for a line whose NULs are those of UTF-16/32 text (every 2nd or 4th
    byte); the stray NUL is still refused naming line and column."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"a cat\nthe\x00dog sat on the mat\n")
    assert src.read_bytes().decode("utf-8").splitlines()[1] == "the\x00dog sat on the mat"
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(src), "txt"))
    assert str(caught.value) == f"{src}, line 2: a NUL byte (column 4), which is not text"
    for encoding in ("utf-16-le", "utf-32-be"):  # what the hint is for still gets it
        src.write_bytes("a cat\nthe dog\n".encode(encoding))
        with pytest.raises(CorpusError, match="it looks like UTF-16 or UTF-32 without a byte-order mark"):
            list(iter_records(str(src), "txt"))


@pytest.mark.parametrize("rows", [["--token-vectors"]])
def test_stdin_with_an_id_field_no_record_has_is_refused(run, tmp_path, monkeypatch, rows):
    """``cat in.jsonl | tokenpool embed - --format jsonl --token-vectors --id-field doc_id`` (the records hold
    ``docid``) wrote rows without ids, exit 0, while the same job on a file is refused (stop 63). It is refused
    at the end of the input now, leaving no output and no work folder; the right name keeps the ids."""
    import pyarrow.parquet as pq

    data = (json.dumps({"text": "a cat", "docid": "x1"}) + "\n" + json.dumps({"text": "a dog"}) + "\n").encode()
    out = tmp_path / "out.parquet"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run("embed", "-", "--format", "jsonl", "-o", out, *rows, "--id-field", "doc_id", "-q")
    assert_one_error_line(code, err, "<stdin>", "'doc_id'", "--id-field")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, _, err = run("embed", "-", "--format", "jsonl", "-o", out, *rows, "--id-field", "docid", "-q")
    assert code == 0, err
    got = {row["doc"]: row["id"] for row in pq.read_table(out).to_pylist()}
    assert got == {0: "x1", 1: None}


@pytest.mark.parametrize("rows", [[], ["--precision", "int8"], ["--token-vectors"]])
def test_parquet_from_stdin_is_refused_before_the_model_loads(run, tmp_path, monkeypatch, rows):
    """``cat in.parquet | tokenpool embed - --format parquet -o out.npy`` loaded the model, then said "parquet
    input cannot be read from stdin" (only --token-vectors checked first); with a model that does not exist it
    named the model instead. Every kind now refuses it first: the model named here does not exist, so only a
    check before loading can answer."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"PAR1")))
    argv = ["embed", "-", "--format", "parquet", "-o", tmp_path / "out.npy", *rows, "--model", tmp_path / "no-model"]
    code, _, err = run(*argv, "-q")
    assert_one_error_line(code, err, "parquet input cannot be read from stdin")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [10**5000, 2**63, 2**64], ids=["5000-digits", "2**63", "2**64"])
def test_block_tokens_is_bounded_as_the_other_job_sizes_are(tmp_path, size):
    """``EmbedJob(..., block_tokens=10**5000)`` passed every check, loaded the model and failed in the manifest's
    ``json.dumps`` with Python's "Exceeds the limit (4300 digits) for integer string conversion"; 2**64 was stored
    in the manifest as no int64 holds it. It is now refused before the model loads, as chunk_size, block_size
    and the batch sizes are (stop 63): at most 2**63 - 1, numpy's int64 maximum."""
    import numpy as np

    from tokenpool.errors import OptionError
    from tokenpool.jobs import EmbedJob, EncodeRequest, check_job

    src = tmp_path / "in.txt"
    src.write_text(TEXTS, encoding="utf-8")
    job = EmbedJob(str(src), str(tmp_path / "out.parquet"), EncodeRequest(output="tokens"), block_tokens=size)
    with pytest.raises(OptionError, match=f"block_tokens=.*: at most {np.iinfo(np.int64).max}"):
        check_job(job)
    job = EmbedJob(str(src), str(tmp_path / "out.parquet"), EncodeRequest(output="tokens"), block_tokens=2**63 - 1)
    check_job(job)  # the largest is accepted
    assert list(tmp_path.iterdir()) == [src]


def test_a_calibration_size_past_int64_is_refused_naming_the_flag(run, tmp_path):
    """``--precision int8 --calibration-size <5,000 digits>`` loaded the model, then printed Python's "Exceeds the
    limit (4300 digits) for integer string conversion; use sys.set_int_max_str_digits()" (the manifest's options
    spell the size); it is now refused before the model loads, naming the flag, as --batch-size is. The model
    named here does not exist, so only a check before loading can answer."""
    import numpy as np

    src = tmp_path / "in.txt"
    src.write_text(TEXTS, encoding="utf-8")
    argv = ["embed", src, "-o", tmp_path / "out.npy", "--precision", "int8", "--model", tmp_path / "no-model", "-q"]
    code, _, err = run(*argv, "--calibration-size", "9" * 5000)
    assert_one_error_line(code, err, "--calibration-size", f"at most {np.iinfo(np.int64).max}")
    assert list(tmp_path.iterdir()) == [src]
