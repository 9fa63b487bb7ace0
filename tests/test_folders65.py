"""Stop 65 (folders): trust_remote_code takes numpy's bools as every other bool option does; inspect reads a
T5Gemma2 folder's max length as the Encoder does."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.parametrize("value", [np.True_, np.False_])
def test_trust_remote_code_takes_numpy_bools_as_the_other_bool_options_do(value):
    """``check_bool_option("trust_remote_code", np.True_)`` raised "trust_remote_code must be True or False, got
    np.True_" where normalize and add_eos take numpy's bools (`options.check_bool`): both take the same values."""
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.safety import check_bool_option

    assert check_bool_option("trust_remote_code", value) is bool(value)
    EncoderOptions(trust_remote_code=value).check()
    with pytest.raises(TypeError, match=r"^trust_remote_code must be True or False, got 'no'$"):
        check_bool_option("trust_remote_code", "no")


def test_inspect_reads_a_t5gemma2_max_length_as_the_encoder_does(tmp_path, run):
    """A T5Gemma2 folder keeps its position table in its nested text configs (128 here): inspect showed "512
    (default)" where the Encoder truncates at 128."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "T5Gemma2Config"):
        pytest.skip("this transformers has no T5Gemma2")
    import torch
    from tinymodels import minilm_tokenizer

    from tokenpool import Encoder

    text = {"vocab_size": 30522, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 128,
            "layer_types": ["full_attention"]}  # fmt: skip
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 28, "patch_size": 14}  # fmt: skip
    encoder = {"text_config": text, "vision_config": vision, "mm_tokens_per_image": 4}
    torch.manual_seed(0)
    config = transformers.T5Gemma2Config(encoder=encoder, decoder=dict(text), pad_token_id=0)
    folder = tmp_path / "t5gemma2"
    transformers.T5Gemma2Model(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    code, out, err = run("inspect", folder, "--json")
    assert code == 0, err
    shown = json.loads(out)["fields"]["max_length"]
    assert shown["value"] == Encoder(str(folder), pooling="mean").max_length == 128
    assert shown["source"] == "config.json max_position_embeddings"
