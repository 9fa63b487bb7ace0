"""Bug hunt in the input/output and corpus-job layers: each test failed before its fix."""

from __future__ import annotations

import json
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
