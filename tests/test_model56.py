"""Stop 56 (model56): one JSON reader for a model folder's files (an ONNX folder's tokenizer files too), the ONNX
runtime's auto_map refusal, dtype and device spellings the two runtimes share, window capacity per document."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.errors import ConfigError, UnsafeModelFolderError

TEXTS = ["A man is playing a guitar.", "short", "Ünïcödé café 日本語"]


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder with its export in onnx/model.onnx."""
    pytest.importorskip("onnxruntime")
    from tinymodels import bert_folder

    from tokenpool.model.onnx import export_onnx

    folder = bert_folder(tmp_path_factory.mktemp("tiny") / "bert")
    export_onnx(folder, folder / "onnx" / "model.onnx")
    return folder


@pytest.fixture
def folder(onnx_folder, tmp_path) -> Path:
    return Path(shutil.copytree(onnx_folder, tmp_path / "bert"))


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json"])
@pytest.mark.parametrize("make", ["fifo", "folder", "dangling link", "a list"])
def test_onnx_tokenizer_files_that_are_no_json_object_are_refused_not_taken_for_absent(folder, tmp_path, name, make):
    """The ONNX runtime's tokenizer read tokenizer_config.json / special_tokens_map.json with its own reader: a
    pipe, folder or dangling link there was taken for no file (another pad token, padding side, lower-casing
    without a word) and a JSON list for {}; the torch runtime refuses them (the reference, below)."""
    target = folder / name
    target.unlink(missing_ok=True)
    if make == "fifo":
        os.mkfifo(target)
    elif make == "folder":
        target.mkdir()
    elif make == "dangling link":
        target.symlink_to(tmp_path / "nowhere.json")
    else:
        target.write_text("[]")
    with pytest.raises(ConfigError, match=name):
        Encoder(folder, runtime="onnx")
    if name == "tokenizer_config.json" and make != "a list":  # (tokenpool checks it before transformers reads it)
        with pytest.raises(ValueError, match=name):
            Encoder(folder, device="cpu")


def _with_tokenizer_auto_map(folder: Path) -> None:
    file = folder / "tokenizer_config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoTokenizer": ["own_tokenizer.OwnTokenizer", None]}
    file.write_text(json.dumps(config), encoding="utf-8")


def test_onnx_runtime_refuses_a_tokenizer_auto_map_as_the_torch_runtime_does(folder):
    """A tokenizer_config.json naming its own tokenizer class: the torch runtime refuses the folder unless trusted;
    the ONNX runtime ran tokenizer.json instead, silently (the class may tokenise otherwise)."""
    _with_tokenizer_auto_map(folder)
    with pytest.raises(UnsafeModelFolderError, match="tokenizer_config.json has an 'auto_map'"):
        Encoder(folder, device="cpu")  # the reference
    with pytest.raises(UnsafeModelFolderError, match="tokenizer_config.json has an 'auto_map'"):
        Encoder(folder, runtime="onnx")
    with pytest.raises(TypeError, match="trust_remote_code must be True or False"):
        Encoder(folder, runtime="onnx", trust_remote_code="no")
    trusted = Encoder(folder, runtime="onnx", trust_remote_code=True)  # the user's word: tokenizer.json runs
    assert np.isfinite(trusted.encode(TEXTS)).all()


@pytest.mark.parametrize(
    "options",
    [{"dtype": "FLOAT32"}, {"dtype": "float"}, {"dtype": " Torch.Float32 "}, {"device": "cpu:0"}, {"dtype": "fp32"}],
)
def test_onnx_runtime_takes_the_dtype_and_device_spellings_the_torch_runtime_takes(onnx_folder, options):
    torch = pytest.importorskip("torch")
    reference = Encoder(onnx_folder, runtime="onnx").encode(TEXTS)
    assert Encoder(onnx_folder, **{"device": "cpu", "dtype": None, **options}).runner.dtype == torch.float32
    np.testing.assert_array_equal(Encoder(onnx_folder, runtime="onnx", **options).encode(TEXTS), reference)


@pytest.mark.parametrize(("options", "match"), [
    ({"dtype": "float16"}, "dtype must be None"), ({"device": "cpu "}, "unknown device 'cpu '"),
    ({"device": "cuda:01"}, "unknown device 'cuda:01'"), ({"device": "mps"}, "runs on 'cpu' or 'cuda'"),
])  # fmt: skip
def test_onnx_runtime_refuses_what_it_cannot_run_as_before(onnx_folder, options, match):
    with pytest.raises(ValueError, match=match):
        Encoder(onnx_folder, runtime="onnx", **options)
