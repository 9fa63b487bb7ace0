"""Stop 60: BEIR messages that point to what is there (the qrels splits) and name what was read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.evaluation.beir import read_beir


def _folder(root: Path, text: object = "hello", qrels: str = "qrels/dev.tsv") -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": text}) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "hi"}\n', encoding="utf-8")
    (root / qrels).write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    return root


def test_missing_default_qrels_names_the_splits_there_and_how_to_read_them(tmp_path, run):
    folder = _folder(tmp_path / "set")
    (folder / "qrels" / "train.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no qrels\.tsv .*splits found in qrels/: dev, train; read one with split='NAME'\)"):
        read_beir(folder)
    assert read_beir(folder, split="dev").query_ids == ["q1"]  # what the message says reads it
    code, _, err = run("evaluate", folder, "--modes", "bm25")
    assert_one_error_line(code, err, "dev, train", "--split NAME")


def test_missing_qrels_without_splits_keeps_its_message(tmp_path):
    folder = _folder(tmp_path / "set", qrels="qrels/notes.txt")
    with pytest.raises(CorpusError, match=r"needs relevance judgements$"):
        read_beir(folder)


@pytest.mark.parametrize("text, shown", [(5, "got 5 (int)"), ([1], "got [1] (list)"), (1.5, "got 1.5 (float)")])
def test_field_of_the_wrong_type_is_named_with_its_value_and_type(tmp_path, text, shown):
    folder = _folder(tmp_path / "set", text=text, qrels="qrels.tsv")
    with pytest.raises(CorpusError, match=r"line 1: 'text' must be a string, got ") as info:
        read_beir(folder)
    assert str(info.value).endswith(shown) and " a int" not in str(info.value)
