"""Model folders whose files contradict each other (stop 47's hunt): weights that lack tensors the config
asks for, or hold them in other shapes, are refused by the one weight loader both runtimes use, naming the
tensors, where transformers would fill them with random values (or fail pointing at a report it never showed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
from tinymodels import bert_folder  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import ModelFolderError  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("s47") / "base", normalize=False)


@pytest.fixture
def folder(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "model"))


def _drop_tensor(folder: Path, fragment: str) -> str:
    from safetensors.numpy import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    key = next(k for k in weights if fragment in k)
    del weights[key]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return key


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_weights_lacking_a_tensor_are_refused_on_both_runtimes(folder, tmp_path, monkeypatch, runtime):
    """The torch runtime refused a checkpoint lacking a tensor; the onnx runtime exported it with the tensor
    filled with random values by transformers and encoded with that model, silently."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    key = _drop_tensor(folder, "layer.1.output.dense.weight")
    with pytest.raises(ModelFolderError, match=rf"lack 1 tensors .*{key}"):
        Encoder(folder, device="cpu", runtime=runtime)
    assert not list((tmp_path / "cache").rglob("*.onnx"))  # nothing exported


@pytest.mark.parametrize(("key", "value"), [("vocab_size", 100), ("max_position_embeddings", 64)])
def test_config_sizes_the_weights_do_not_have_name_the_tensors(folder, run, key, value):
    """config.json giving a size the weights do not have failed with transformers' "thus raising an error. For
    details look at the above report!" (a report tokenpool had silenced), exit 1; now a ModelFolderError (exit
    2) names a tensor and both shapes."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, key: value}), encoding="utf-8")
    with pytest.raises(ModelFolderError, match=r"shapes its config\.json gives.*embeddings.*\(\d+, 32\)"):
        Encoder(folder, device="cpu")
    corpus = folder.parent / "in.txt"
    corpus.write_text("one\ntwo\n", encoding="utf-8")
    code, _, err = run("embed", corpus, "-o", folder.parent / "out.npy", "--model", folder, "--device", "cpu")
    assert code == 2 and "shapes" in err and len(err.strip().splitlines()) == 1


def test_complete_weights_still_load(folder):
    vectors = Encoder(folder, device="cpu").encode(["a complete checkpoint"])
    assert vectors.shape == (1, 32) and np.isfinite(vectors).all()
