"""Stop 52: option parsers of the evaluation refuse a value of the wrong type, naming it (found by a review)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.lexical import BM25Settings
from tokenpool.evaluation.precision import parse_precisions


@pytest.mark.parametrize("spec", [["int8", 5], 5, ["int8", None]])
def test_parse_precisions_refuses_a_non_name_naming_it(spec):
    """["int8", 5] raised AttributeError ('int' object has no attribute 'strip'); 5 a bare 'not iterable'."""
    with pytest.raises(TypeError, match="precision.*(int|NoneType)"):
        parse_precisions(spec)


def test_parse_precisions_still_reads_names_and_lists():
    assert parse_precisions(["ubinary", "int8"]) == parse_precisions("int8, ubinary") == ["float32", "int8", "ubinary"]


@pytest.mark.parametrize("spec", [5, 1.5, ["k1=1"]])
def test_bm25_settings_refuse_a_value_of_another_type_naming_it(spec):
    """BM25Settings.parse(5) (evaluate_retrieval(..., bm25=5)) raised "'int' object is not iterable"."""
    with pytest.raises(TypeError, match=f"BM25 settings must be .*{type(spec).__name__}"):
        BM25Settings.parse(spec)


def test_bm25_settings_still_read_text_and_mappings():
    assert BM25Settings.parse("k1=1.2,b=0.5") == BM25Settings.parse({"k1": 1.2, "b": 0.5})


def test_the_module_map_names_every_module():
    """docs/architecture.md's module map is kept true: every module of src/tokenpool is named in its layer's row
    (and no row names a module that does not exist)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "architecture.md").read_text(encoding="utf-8").split("## Module map", 1)[1]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `?([a-z_]+/|top)`? \| (.*) \|$", text, re.M)}
    package = root / "src" / "tokenpool"
    for path in sorted(package.rglob("*.py")):
        layer = "top" if path.parent == package else path.parent.name + "/"
        if path.name in ("_version.py",) or (path.name == "__init__.py" and layer != "top" and layer != "cli/"):
            continue
        assert f"`{path.name}`" in rows.get(layer, ""), f"{layer}{path.name} is not in the module map"
    for layer, row in rows.items():
        folder = package if layer == "top" else package / layer
        for name in re.findall(r"`([a-z_]+\.py)`", row):
            assert (folder / name).is_file(), f"the module map names {layer} {name}, which does not exist"


@pytest.mark.parametrize(("precision", "refused"), [("binary,uint8", True), ("float16", True), ("binary,int8", False),
                                                    ("ubinary", False), ("all", False)])  # fmt: skip
def test_rescore_is_refused_where_no_precision_is_rescored(run, tmp_path, precision, refused):
    """`evaluate FOLDER --precision binary,uint8 --rescore 5` ran with no rescored row and no word (only int8 and
    ubinary candidates are ranked again); now one line, exit 2. With int8/ubinary the folder is read next."""
    from clitools import assert_one_error_line

    code, _, err = run("evaluate", str(tmp_path), "--precision", precision, "--rescore", "5")
    if refused:
        assert_one_error_line(code, err, "--rescore", "int8 or ubinary")
    else:
        assert_one_error_line(code, err, "corpus.jsonl")  # past the option checks: the empty folder is refused


def test_write_whole_replaces_a_file_whole_with_a_new_files_mode(tmp_path, monkeypatch):
    """`core.durable.write_whole`, the one whole-file replacement (a calibration, a chart): the old content or
    the new, never part; no temporary left behind on failure; the mode any new file gets (Calibration.save's
    mkstemp made its file 0600)."""
    import os

    from tokenpool.core import durable
    from tokenpool.core.quantize import Calibration

    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    durable.write_whole(target, b"new content")
    assert target.read_bytes() == b"new content" and os.listdir(tmp_path) == ["out.json"]

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(durable.os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="No space"):
            durable.write_whole(target, b"never seen")
    assert target.read_bytes() == b"new content" and os.listdir(tmp_path) == ["out.json"]

    umask = os.umask(0)
    os.umask(umask)
    saved = Calibration.from_vectors(np.random.default_rng(0).standard_normal((8, 4))).save(tmp_path / "c.json")
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["c.json", "out.json"]


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_sts_pairs_read_old_mac_line_endings_as_the_csv_reader_does(tmp_path, ending):
    """`evaluate PAIRS` refused a \\r-only .csv with Python's "universal-newline mode" hint (line 1); its lines now
    end where the .csv reader's do (`io.readers.csv_lines`), and a bad line is named in that count."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    rows = ["score,s1,s2", '4.5,"a cat, sitting",a cat sits', "0.5,a dog,the sea", "3,x,y"]
    good = tmp_path / "pairs.csv"
    good.write_bytes(ending.join(rows).encode() + ending.encode())
    pairs = read_pairs(str(good))
    assert list(pairs.scores) == [4.5, 0.5, 3.0]
    assert pairs.first[0] == "a cat, sitting" and pairs.second[1] == "the sea"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(ending.join([*rows[:3], "n/a,x,y"]).encode())
    with pytest.raises(CorpusError, match=r"bad\.csv, line 4: .*n/a"):
        read_pairs(str(bad))


def test_evaluate_retrieval_precisions_takes_a_split_as_evaluate_retrieval_does(tmp_path):
    """`evaluate_retrieval_precisions(folder)` had no ``split`` (``evaluate_retrieval`` has): a folder whose qrels
    are per split could not be scored per split from Python. One reading of (data, split) serves both now."""
    import json

    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.evaluation.beir import read_beir
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    words = ["cell", "gene", "virus", "brain", "heart", "drug", "blood", "bone"]
    docs = {f"d{i}": " ".join(words[i % 8 : i % 8 + 3] + words[: i % 4]) for i in range(12)}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": docs[f"d{i}"]}) + "\n"
                                                for i in range(6)))  # fmt: skip
    for split, queries in (("dev", range(3)), ("test", range(3, 6))):
        lines = "".join(f"q{i}\td{i}\t1\n" for i in queries)
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
    encoder = Encoder(bert_folder(tmp_path / "model"))
    for split in ("dev", "test"):
        got, _ = evaluate_retrieval_precisions(root, encoder, ["float32", "int8"], split=split, rescore=[5])
        want, _ = evaluate_retrieval_precisions(read_beir(root, split), encoder, ["float32", "int8"], rescore=[5])
        assert got == want
    with pytest.raises(ValueError, match="split='dev' applies to a folder"):
        evaluate_retrieval_precisions(read_beir(root), encoder, ["float32"], split="dev")
    with pytest.raises(ValueError, match="split='dev' applies to a folder"):
        evaluate_retrieval(read_beir(root), encoder, split="dev")
