"""Model folders, pooling configs, ONNX and inspect (stop 60): each test failed on the code before its fix."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    """A tiny random BERT saved by sentence-transformers as Transformer, mean Pooling, Dense 32->16, LayerNorm 16."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, LayerNorm, Pooling, Transformer
    from tinymodels import HIDDEN, bert_weights

    folder = bert_weights(tmp_path_factory.mktemp("dense") / "model")
    torch.manual_seed(1)
    modules = [Transformer(str(folder), max_seq_length=48), Pooling(HIDDEN, "mean"), Dense(HIDDEN, 16), LayerNorm(16)]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def _edited(folder, tmp_path, rel, **values):
    """A copy of ``folder`` whose JSON file ``rel`` has ``values`` set."""
    copy = shutil.copytree(folder, tmp_path / "copy")
    file = copy / rel
    file.write_text(json.dumps({**json.loads(file.read_text()), **values}))
    return copy


@pytest.mark.parametrize(("rel", "key", "value"), [("2_Dense/config.json", "in_features", 64),
                                                   ("3_LayerNorm/config.json", "dimension", 8)])  # fmt: skip
def test_inspect_refuses_a_module_the_vectors_do_not_fit(run, dense_folder, tmp_path, rel, key, value):
    """inspect reported 'Dense 64->16', exit 0 (and 'dimension 8' for the LayerNorm) on a folder the Encoder
    refuses: docs/security.md says inspect exits 2 on a folder the Encoder would refuse by a size it cannot use."""
    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    folder = _edited(dense_folder, tmp_path, rel, **{key: value})
    with pytest.raises(ConfigError) as refused:
        Encoder(folder, device="cpu")
    code, out, err = run("inspect", folder)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [f"tokenpool inspect: error: {refused.value}"]
    assert f"{key}={value}" in err and rel in err


def test_inspect_names_the_transformer_folders_config_for_the_position_limit(run, tiny, tmp_path):
    """A Transformer module in 0_Transformer/ whose max_seq_length exceeds the model's positions: the limit came
    from 0_Transformer/config.json, but inspect named 'config.json' (a file the folder does not have)."""
    from tokenpool import Encoder

    folder = shutil.copytree(tiny, tmp_path / "model")
    inner = folder / "0_Transformer"
    inner.mkdir()
    for item in list(folder.iterdir()):
        if item.name not in ("modules.json", "1_Pooling", "2_Normalize", "0_Transformer", "config_sentence_transformers.json"):
            item.rename(inner / item.name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    (inner / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 500}))
    positions = json.loads((inner / "config.json").read_text())["max_position_embeddings"]
    assert not (folder / "config.json").exists() and Encoder(folder, device="cpu").max_length == positions
    code, out, err = run("inspect", folder)
    assert code == 0, err
    assert f"max length          {positions}  (0_Transformer/config.json max_position_embeddings)" in out.splitlines()


def _unwritable_folder():
    """/sys (sysfs: no one may make a folder there, root included), or a skip where it is not so."""
    import os
    from pathlib import Path

    folder = Path("/sys")
    try:
        os.rmdir(folder / "tokenpool-probe") if os.mkdir(folder / "tokenpool-probe") is None else None
    except OSError:
        return folder
    pytest.skip("/sys takes new folders here")


@pytest.mark.parametrize("variant", [[], ["--optimize"]])
def test_export_onnx_into_a_folder_it_cannot_write_names_that_folder(run, tiny, tiny_onnx, variant):
    """The error named the temporary work folder ('/sys/.tokenpool-export-qzw80i80'), a name the user never gave
    and that does not exist, instead of the folder of --output."""
    folder = _unwritable_folder()
    source = ["--onnx-file", tiny_onnx] if variant else []
    code, out, err = run("export-onnx", tiny, *source, *variant, "--output", folder / "model.onnx")
    assert (code, out) == (2, "")
    (line,) = err.strip().splitlines()
    assert line.startswith("tokenpool export-onnx: error: ") and line.endswith(f": {str(folder)!r}"), line
    assert ".tokenpool-export" not in line


@pytest.mark.parametrize("module", ["2_Dense", "3_LayerNorm"])
def test_inspect_refuses_a_module_folder_without_weights(run, dense_folder, tmp_path, module):
    """A Dense / LayerNorm folder without its weights file: the Encoder refuses the folder, inspect reported it with
    exit 0 (docs/security.md: inspect exits 2 on a folder the Encoder would refuse by a missing file)."""
    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    folder = shutil.copytree(dense_folder, tmp_path / "copy")
    (folder / module / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError) as refused:
        Encoder(folder, device="cpu")
    code, out, err = run("inspect", folder)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [f"tokenpool inspect: error: {refused.value}"]


def test_save_refuses_a_pooled_width_the_folders_dense_module_does_not_take(dense_folder, tmp_path):
    """Saving mean+max (64 wide) over a folder whose Dense takes 32 wrote a folder that neither
    sentence-transformers ('mat1 and mat2 shapes cannot be multiplied') nor the Encoder can load, without a word;
    it is refused and the folder left as it was."""
    from tokenpool import Encoder, PoolingConfig
    from tokenpool.errors import ConfigError

    folder = shutil.copytree(dense_folder, tmp_path / "copy")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"2_Dense/config\.json: in_features=32 but the vectors reaching it have 64"):
        PoolingConfig(strategies=("mean", "max")).save(folder)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    PoolingConfig(strategies=("max",)).save(folder)  # (a width it takes is saved, as before)
    assert Encoder(folder, device="cpu").config.strategies == ("max",)


@pytest.mark.parametrize(("activation", "saved"), [("torch.nn.modules.activation.Hardtanh", {"strategies": ("cls",)}),
                                                   (None, {"strategies": ("mean",), "embedding_dimension": 16})])  # fmt: skip
def test_save_over_a_dense_module_writes_what_sentence_transformers_loads(dense_folder, tmp_path, activation, saved):
    """Review: save's width check refused folders sentence-transformers loads: a Dense whose activation tokenpool
    does not run (Hardtanh: 'not one tokenpool runs'), and an embedding_dimension other than the model's hidden
    size, which both loaders ignore ('the vectors reaching it have 16 dimensions': they have 32)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from tokenpool import PoolingConfig

    folder = _edited(dense_folder, tmp_path, "2_Dense/config.json", **({"activation_function": activation} if activation else {}))
    PoolingConfig(**saved).save(folder)
    model = SentenceTransformer(str(folder), device="cpu")
    assert model[1].pooling_mode == saved["strategies"][0]
    vectors = model.encode(["a tiny test", "another"])
    assert vectors.shape == (2, 16) and np.isfinite(vectors).all()
    if activation is None:  # (a folder the Encoder runs too: the vectors sentence-transformers gives)
        from tokenpool import Encoder

        np.testing.assert_allclose(Encoder(folder, device="cpu").encode(["a tiny test", "another"]), vectors, atol=1e-5)


def test_inspect_names_the_config_key_of_the_position_limit(run, tmp_path):
    """Review: a GPT-2 folder (its positions saved as n_positions) whose max_seq_length exceeds them: inspect
    credited the limit to 'config.json max_position_embeddings', a key the file does not have."""
    from tinymodels import tiny_decoder

    from tokenpool import Encoder

    folder = tiny_decoder(tmp_path / "gpt2", "gpt2")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 500}))
    saved = json.loads((folder / "config.json").read_text())
    assert "max_position_embeddings" not in saved and Encoder(folder, device="cpu").max_length == saved["n_positions"]
    code, out, err = run("inspect", folder)
    assert code == 0, err
    assert f"max length          {saved['n_positions']}  (config.json n_positions)" in out.splitlines()
