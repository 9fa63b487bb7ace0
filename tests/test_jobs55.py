"""Stop 55 (corpus jobs): a .parquet input or output whose path starts like a URI (``run:1/out.parquet``, a
folder named ``file:``) is the local file it names (was: refused by pyarrow after every chunk was computed, or
another file read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = [f"text number {i} of the corpus, {'with more words ' * (i % 4)}end" for i in range(12)]


# ------------------------------------------------ 1. parquet paths are local paths, never URIs


def _vectors(path: Path) -> np.ndarray:
    table = pq.read_table(pa.OSFile(str(path)))
    return np.array(table["embedding"].to_pylist(), dtype=np.float32)


def test_a_parquet_output_in_a_folder_named_like_a_uri_scheme_is_written_there(run, tiny_bert_folder, tmp_path, monkeypatch):
    """``-o run:1/out.parquet`` (a folder ``run:1``, a legal POSIX name) is written there, as ``.npy`` is (was:
    every chunk computed, then ``Unrecognized filesystem type in URI`` from pyarrow, exit 2, and a work folder
    that no ``--resume`` could finish); the same for a .parquet input there (was: ``not a readable parquet
    file``)."""
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    assert run("embed", source, "-o", "plain.parquet", "--model", tiny_bert_folder, "-q")[0] == 0
    Path("run:1").mkdir()
    code, _, err = run("embed", source, "-o", "run:1/out.parquet", "--model", tiny_bert_folder, "-q")
    assert code == 0, err
    assert Path("run:1/out.parquet").read_bytes() == Path("plain.parquet").read_bytes()
    assert sorted(p.name for p in Path("run:1").iterdir()) == ["out.parquet"]

    pq.write_table(pa.table({"text": TEXTS}), pa.OSFile("run:1/in.parquet", "wb"))
    code, _, err = run("embed", "run:1/in.parquet", "-o", "from-parquet.npy", "--model", tiny_bert_folder, "-q")
    assert code == 0, err
    assert np.array_equal(np.load("from-parquet.npy"), _vectors(Path("plain.parquet")))


def test_a_parquet_input_under_a_folder_named_file_colon_is_that_file_not_another(run, tiny_bert_folder, tmp_path, monkeypatch):
    """``file:/abs/in.parquet`` where the working folder holds a folder ``file:`` is the file under that
    folder, as for every other input format (was: pyarrow read it as a URI and embedded ``/abs/in.parquet``,
    another file, exit 0)."""
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pq.write_table(pa.table({"text": ["another file altogether"] * 3}), pa.OSFile(str(elsewhere / "in.parquet"), "wb"))
    named = Path("file:" + str(elsewhere / "in.parquet"))  # a relative path: folder "file:", then tmp_path's parts
    named.parent.mkdir(parents=True)
    pq.write_table(pa.table({"text": TEXTS}), pa.OSFile(str(named), "wb"))
    (tmp_path / "in.txt").write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    assert run("embed", tmp_path / "in.txt", "-o", "plain.npy", "--model", tiny_bert_folder, "-q")[0] == 0
    code, _, err = run("embed", str(named), "-o", "out.npy", "--model", tiny_bert_folder, "-q")
    assert code == 0, err
    assert np.array_equal(np.load("out.npy"), np.load("plain.npy"))
