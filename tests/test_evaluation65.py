"""Stop 65's evaluation items: each test checks documented behaviour against a reference written here."""

from __future__ import annotations

import json

import pytest
from clitools import benchmark_script, tiny_beir

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_bench_retrieval_reads_modes_with_spaces_as_the_command_line_does(tmp_path, capsys):
    """`bench_retrieval.py --modes "truncate, bm25"` kept the space (" bm25": "unknown document mode") where
    `tokenpool evaluate --modes "truncate, bm25"` strips it (`evaluation/common.split_option`)."""
    folder = tiny_beir(tmp_path / "set")
    out = tmp_path / "out.json"
    assert benchmark_script("bench_retrieval").main([str(folder), "--pooling", "mean", "--modes", "truncate, bm25", "--json", str(out)]) == 0
    assert [row["mode"] for row in json.loads(out.read_text())["rows"]] == ["truncate", "bm25"]
