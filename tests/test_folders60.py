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
