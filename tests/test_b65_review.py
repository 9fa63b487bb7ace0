"""Stop 65's review (s65-folders, s65-serve): what the shrinks and fixes of those branches changed, checked
against an independent reference (transformers' own config, the torch runtime's Encoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from tokenpool.model.unpadded import PAD_OFFSET_POSITION_TYPES  # noqa: E402

# the RoBERTa-like types this transformers knows (positions start after the pad id; MPNet's always after 1)
KNOWN_PAD_OFFSET_TYPES = sorted(
    t for t in PAD_OFFSET_POSITION_TYPES if t in transformers.models.auto.configuration_auto.CONFIG_MAPPING_NAMES
)


def _torch_limit(model_type: str) -> int:
    """The tokens transformers' default config of ``model_type`` places: its position table, less the pad id + 1
    its positions start after (what the torch runtime truncates at; ESM's default pad id is None: none)."""
    config = transformers.AutoConfig.for_model(model_type).get_text_config()
    pad = 1 if model_type == "mpnet" else config.pad_token_id
    return config.max_position_embeddings - (0 if pad is None else pad + 1)


@pytest.mark.parametrize("saved", [{}, {"hidden_size": 32, "vocab_size": 30522}], ids=["nothing", "sizes"])
@pytest.mark.parametrize("model_type", KNOWN_PAD_OFFSET_TYPES)
def test_an_unsaved_position_limit_of_a_roberta_like_folder_caps_as_torch_does(tmp_path, model_type, saved):
    """s65-folders: a config.json saving no position limit takes transformers' default on the onnx runtime, as
    torch reads it; but its pad_token_id, when not saved either, stayed None there, so a RoBERTa folder capped at
    512 on the onnx runtime (and in inspect) and at 510 on torch (positions start after the pad id, 1)."""
    from tokenpool.model.encoder import resolve_max_length
    from tokenpool.model.onnx import read_model_config

    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, **saved}), encoding="utf-8")
    onnx_config = read_model_config(tmp_path)
    no_limits = type("Pooling", (), {"max_seq_length": None})()
    assert resolve_max_length(None, no_limits, None, onnx_config) == _torch_limit(model_type)


def test_a_folder_without_position_limit_nor_pad_id_inspects_and_encodes_at_torchs_length(tmp_path, run):
    """End to end: a RoBERTa folder whose config.json saves neither: the torch Encoder truncates at 510 tokens
    (transformers' 512 positions, from pad id 1 + 1), and inspect, which reads config.json as the onnx runtime
    does, said 512."""
    import torch
    from tinymodels import minilm_tokenizer

    from tokenpool import Encoder

    sizes = {"model_type": "roberta", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 4, "intermediate_size": 64}  # fmt: skip
    torch.manual_seed(0)
    transformers.RobertaModel(transformers.RobertaConfig(**sizes)).save_pretrained(tmp_path)
    minilm_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(sizes), encoding="utf-8")
    code, out, err = run("inspect", tmp_path, "--json")
    assert code == 0, err
    assert Encoder(str(tmp_path), pooling="mean").max_length == 510
    assert json.loads(out)["fields"]["max_length"]["value"] == 510


def test_the_encoder_keeps_trust_remote_code_as_a_python_bool(tiny_bert_folder):
    """s65-folders let trust_remote_code take numpy's bools; the Encoder kept np.True_ as its trust_remote_code
    (annotated bool, as normalize is made one: ``encoder.trust_remote_code is True`` was False)."""
    from tokenpool import Encoder

    encoder = Encoder(str(tiny_bert_folder), pooling="mean", trust_remote_code=np.True_)
    assert encoder.trust_remote_code is True
    assert Encoder(str(tiny_bert_folder), pooling="mean", trust_remote_code=np.False_).trust_remote_code is False
