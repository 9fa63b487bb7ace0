"""Model folders, pooling configs, ONNX and inspect (stop 61): each test failed on the code before its fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

LONG = "the quick brown fox jumps over the lazy dog " * 12


def _edited(folder, tmp_path, rel, drop=(), **values):
    """A copy of ``folder`` whose JSON file ``rel`` has the keys ``drop`` removed and ``values`` set."""
    copy = shutil.copytree(folder, tmp_path / "copy")
    file = copy / rel
    data = {key: value for key, value in json.loads(file.read_text()).items() if key not in drop}
    file.write_text(json.dumps({**data, **values}))
    return copy


def test_a_tokenizer_configs_older_max_len_is_the_limit_on_both_runtimes_and_in_inspect(run, tiny, tiny_onnx, tmp_path):
    """transformers reads tokenizer_config.json's older ``max_len`` as model_max_length (older folders carry it),
    so sentence-transformers truncates at it; the onnx runtime and inspect ignored it and cut at the model's 128
    positions (cosine 0.97 with sentence-transformers on a long text)."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder, read_pooling_config

    folder = _edited(tiny, tmp_path, "tokenizer_config.json", drop=("model_max_length",), max_len=16)
    reference = SentenceTransformer(str(folder), device="cpu")
    assert reference.max_seq_length == 16
    want = reference.encode([LONG, "short"])
    assert read_pooling_config(folder).max_seq_length == 16
    for options in ({}, {"runtime": "onnx", "onnx_file": tiny_onnx}):
        encoder = Encoder(folder, device="cpu", **options)
        assert encoder.max_length == 16, options
        got = encoder.encode([LONG, "short"])
        np.testing.assert_allclose((got * want).sum(1), 1.0, atol=1e-5, err_msg=str(options))
    code, out, _ = run("inspect", folder)
    assert code == 0 and "max length          16  (tokenizer_config.json)" in out


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("splade") / "model", mlm=True)


def test_inspect_refuses_a_sparse_folders_own_truncate_dim_as_the_encoder_does(run, splade_folder, tmp_path):
    """A SPLADE folder whose config_sentence_transformers.json sets truncate_dim (SparseEncoder has none): the
    Encoder refuses it, but inspect printed 'dimension 8' and exit 0 (docs/security.md: inspect exits 2 on a
    folder the Encoder would refuse by a size it cannot use)."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    folder = _edited(splade_folder, tmp_path, "config_sentence_transformers.json", truncate_dim=8)
    with pytest.raises(OptionError) as refused:
        Encoder(folder, device="cpu")
    code, out, err = run("inspect", folder)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [f"tokenpool inspect: error: {refused.value}"]


@pytest.mark.parametrize("path", [None, 0, ["0_Transformer"]])
def test_export_onnx_names_a_transformer_entry_without_a_string_path(run, tiny, tmp_path, path):
    """A modules.json whose Transformer entry has no string path: export-onnx said "unsupported operand type(s)
    for /: 'PosixPath' and 'NoneType'" (the Encoder and inspect name modules.json and the entry)."""
    folder = shutil.copytree(tiny, tmp_path / "model")
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = path
    (folder / "modules.json").write_text(json.dumps(modules))
    for command in (["export-onnx", folder, "--output", tmp_path / "x.onnx"], ["inspect", folder]):
        code, out, err = run(*command)
        assert (code, out) == (2, ""), command
        assert f"{folder / 'modules.json'}: module entry" in err and "needs string 'type' and 'path'" in err, command
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("model_type", ["distilbert", "gpt2"])
def test_a_model_config_naming_its_width_under_its_familys_key_gives_the_dimension(tmp_path, model_type):
    """DistilBERT saves its width as ``dim`` and GPT-2 as ``n_embd`` (transformers maps them to hidden_size):
    a plain folder's fallback config had no embedding_dimension, and `PoolingConfig.save` refused the folder
    ("has no hidden_size to use") though sentence-transformers knows its width."""
    from sentence_transformers import SentenceTransformer
    from tinymodels import HIDDEN, tiny_decoder, tiny_encoder

    from tokenpool import PoolingConfig, read_pooling_config

    folder = (tiny_encoder if model_type == "distilbert" else tiny_decoder)(tmp_path / "model", model_type)
    assert "hidden_size" not in json.loads((folder / "config.json").read_text())
    assert read_pooling_config(folder, log_fallback=False).embedding_dimension == HIDDEN
    PoolingConfig(strategies=("mean",)).save(folder)
    width = SentenceTransformer(str(folder), device="cpu").get_sentence_embedding_dimension()
    assert read_pooling_config(folder).embedding_dimension == width == HIDDEN
