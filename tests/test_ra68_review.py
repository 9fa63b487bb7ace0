"""Review of stop 68's folders work: `PoolingConfig.save` refuses a truncate_dim the Encoder would refuse in the
saved folder for every kind of config, reading the model's width as the runtimes read it."""

from __future__ import annotations

import json

import pytest

from tokenpool import PoolingConfig
from tokenpool.errors import ConfigError


def test_save_refuses_a_truncate_dim_on_a_sparse_config(tmp_path):
    """``PoolingConfig(strategies=("splade",), truncate_dim=10).save(folder)`` wrote the folder, which the Encoder
    and ``tokenpool inspect`` then refused ("the folder's truncate_dim 10 ... does not apply to a sparse (SPLADE)
    model"): the width check was skipped for sparse configs. Now save refuses it and writes nothing."""
    from tokenpool.model.request import EncodeRequest

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "vocab_size": 50}))
    config = PoolingConfig(strategies=("splade",), truncate_dim=10)
    with pytest.raises(Exception, match="does not apply to a sparse"):  # the Encoder's own check: the reference
        EncodeRequest().check_dimension(type("E", (), {"is_sparse": True, "truncate_dim": 10, "model_path": tmp_path}))
    with pytest.raises(ConfigError, match=r"truncate_dim=10 does not apply to a sparse \(SPLADE\) config"):
        config.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    PoolingConfig(strategies=("splade",)).save(tmp_path)  # (without it: saved)
    assert (tmp_path / "1_SpladePooling" / "config.json").is_file()


def test_save_reads_an_unsaved_hidden_size_as_transformers_does(tmp_path):
    """A config.json with no hidden_size (BERT: transformers' default, 768, which the Encoder and inspect read):
    save checked truncate_dim against ``embedding_dimension`` instead, so 900 with embedding_dimension=1024 was
    written (then refused: "1..768") and 500 with embedding_dimension=384 refused (the folder takes it)."""
    transformers = pytest.importorskip("transformers")
    hidden = transformers.BertConfig().hidden_size  # the independent reference: transformers' default
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 50}), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"truncate_dim must be an int in 1\.\.{hidden} .*got {hidden + 1}"):
        PoolingConfig(embedding_dimension=hidden + 256, truncate_dim=hidden + 1).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    PoolingConfig(embedding_dimension=384, truncate_dim=hidden).save(tmp_path)
    saved = json.loads((tmp_path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    assert saved["truncate_dim"] == hidden
