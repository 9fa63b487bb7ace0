"""Stop 55 (model2): a tokenpool ONNX export whose folder's weights changed is refused, not run; export-onnx
refuses an existing target and an architecture --optimize does not know before exporting; --min-cosine belongs
to --quantize."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import ModelFolderError, OptionError  # noqa: E402

TEXTS = ["A man is playing a guitar.", "short", "Ünïcödé café 日本語", ""]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder, exported once with --into-folder (tokenpool's record)."""
    from tinymodels import bert_folder

    from tokenpool.model.onnx_export import export_fp32

    folder = bert_folder(tmp_path_factory.mktemp("tiny") / "bert")
    export_fp32(folder, folder / "onnx" / "model.onnx")
    return folder


@pytest.fixture
def folder(pristine, tmp_path) -> Path:
    """A copy of ``pristine`` (times kept) each test may change."""
    return Path(shutil.copytree(pristine, tmp_path / "bert"))


def _resave_weights(folder: Path) -> None:
    """Different random weights saved over the folder's (as a fine-tune saved in place would)."""
    from tinymodels import bert_weights

    bert_weights(folder, seed=7)


def test_into_folder_export_of_unchanged_weights_runs_and_matches_torch(folder):
    onnx = Encoder(folder, runtime="onnx").encode(TEXTS)
    torch = Encoder(folder, device="cpu").encode(TEXTS)
    assert np.abs(onnx - torch).max() < 1e-4


def test_export_whose_weights_changed_is_refused_naming_the_files(folder):
    before = Encoder(folder, runtime="onnx").runner.record["source"]["digests"]["model.safetensors"]
    _resave_weights(folder)
    with pytest.raises(ModelFolderError) as caught:
        Encoder(folder, runtime="onnx")
    message = str(caught.value)
    assert str(folder / "onnx" / "model.onnx") in message
    assert "model.safetensors" in message and before in message
    assert "export" in message  # the remedy


def test_stale_export_is_refused_when_named_explicitly_too(folder):
    _resave_weights(folder)
    with pytest.raises(ModelFolderError, match="model.safetensors"):
        Encoder(folder, runtime="onnx", onnx_file="model.onnx")


def test_touched_but_same_weights_run(folder):
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime: hashed
    Encoder(folder, runtime="onnx").encode(TEXTS)


def test_weights_with_their_recorded_stamps_are_not_hashed(folder, monkeypatch):
    from tokenpool.model import folders, onnx

    def refuse(*paths):
        raise AssertionError(f"hashed {paths}")

    monkeypatch.setattr(folders, "file_digest", refuse)
    monkeypatch.setattr(onnx, "file_digest", refuse)
    Encoder(folder, runtime="onnx").encode(TEXTS)


def test_same_size_and_time_but_other_bytes_is_not_looked_at_when_stamps_match(folder):
    """The documented limit of the stamps: the weights rewritten with size and mtime put back are not hashed."""
    weights = folder / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    Encoder(folder, runtime="onnx")


def test_record_without_stamps_is_checked_by_digest(folder):
    """An export made before the stamps were recorded (digests only) is still checked."""
    import onnx

    from tokenpool.model.onnx_export import RECORD_KEY

    path = folder / "onnx" / "model.onnx"
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == RECORD_KEY:
            record = json.loads(prop.value)
            record["source"].pop("stamps", None)
            prop.value = json.dumps(record)
    path.unlink()
    onnx.save(model, str(path))
    Encoder(folder, runtime="onnx")  # unchanged weights: runs
    _resave_weights(folder)
    with pytest.raises(ModelFolderError, match="model.safetensors"):
        Encoder(folder, runtime="onnx")


def test_file_without_tokenpool_record_is_left_alone(folder):
    """A graph tokenpool did not record (a user's own export) runs as before, whatever the weights."""
    from tokenpool.model.onnx import export_onnx

    (folder / "onnx" / "model.onnx").unlink()
    export_onnx(folder, folder / "onnx" / "model.onnx")
    _resave_weights(folder)
    Encoder(folder, runtime="onnx").encode(TEXTS)


def test_folder_without_its_weights_runs_its_export(folder):
    """An ONNX-only folder (weights not shipped) has nothing to compare: it runs."""
    (folder / "model.safetensors").unlink()
    Encoder(folder, runtime="onnx").encode(TEXTS)


def test_variant_of_a_stale_export_is_refused(folder, run):
    code, out, err = run("export-onnx", folder, "--into-folder", "--optimize")
    assert code == 0, err
    record = json.loads((folder / "onnx" / "model_opt.onnx.json").read_text())
    assert record["source"]["weights"]["digests"].keys() >= {"config.json", "model.safetensors"}
    Encoder(folder, runtime="onnx", onnx_file="model_opt.onnx")
    _resave_weights(folder)
    with pytest.raises(ModelFolderError, match=r"model_opt\.onnx.*model\.safetensors"):
        Encoder(folder, runtime="onnx", onnx_file="model_opt.onnx")


# ------------------------------------------------------------------------------------------ D: refused first


def _exports_started(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_existing_output_is_refused_before_the_export(pristine, run, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    bare = Path(shutil.copytree(pristine, tmp_path / "bare"))
    shutil.rmtree(bare / "onnx")  # no ONNX file: a variant would export one into the cache first
    texts = tmp_path / "cal.txt"
    texts.write_text("one text\nanother text\n", encoding="utf-8")
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"mine")
    code, _, err = run("export-onnx", bare, "--quantize", "int8", "--calibration-texts", texts, "--output", existing)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    assert "exporting" not in caplog.text and _exports_started(tmp_path / "cache") == []
    assert existing.read_bytes() == b"mine"


def test_optimize_of_an_unknown_architecture_is_refused_before_the_export(run, tmp_path, monkeypatch, caplog):
    from test_encoder import _qwen2_weights, _save_sentence_transformer

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    qwen = tmp_path / "qwen2"
    _qwen2_weights(qwen, padding_side="left")
    _save_sentence_transformer(qwen, "lasttoken", normalize=True)
    code, _, err = run("export-onnx", qwen, "--optimize", "--output", tmp_path / "o.onnx")
    assert code == 2 and "this one is 'qwen2'" in err
    assert "exporting" not in caplog.text and _exports_started(tmp_path / "cache") == []


# ------------------------------------------------------------------------------------------ E: --min-cosine


def test_min_cosine_without_quantize_is_refused(pristine, run, tmp_path):
    code, _, err = run("export-onnx", pristine, "--optimize", "--min-cosine", "0.2", "--output", tmp_path / "o.onnx")
    assert code == 2 and "--min-cosine" in err and "--quantize" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_make_variant_refuses_min_cosine_without_quantize(pristine, tmp_path):
    from tokenpool.model.onnx_export import Recipe, make_variant

    with pytest.raises(OptionError, match="min_cosine"):
        make_variant(pristine, pristine / "onnx" / "model.onnx", tmp_path / "o.onnx", Recipe(optimize=True),
                     min_cosine=0.2)  # fmt: skip
    assert not (tmp_path / "o.onnx").exists()


def test_optimize_record_says_what_was_checked(pristine, tmp_path):
    from tokenpool.model.onnx_export import OPTIMIZE_MIN_COSINE, Recipe, make_variant

    record = make_variant(pristine, pristine / "onnx" / "model.onnx", tmp_path / "o.onnx", Recipe(optimize=True))
    assert record["min_cosine"] is None  # no int8 step: the caller's threshold checked nothing
    assert record["quality"]["optimize"]["required"] == {"min": OPTIMIZE_MIN_COSINE}
