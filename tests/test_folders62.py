"""Model folders, pooling configs, ONNX and inspect (stop 62): each test failed on the code before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")


@pytest.mark.parametrize("data", [
    {"model_type": "t5", "hidden_size": None, "d_model": 32},
    {"model_type": "gpt2", "hidden_size": None, "n_embd": 32},
])  # fmt: skip
def test_a_null_first_width_key_is_read_alike_by_both_readers_as_transformers_reads_it(tmp_path, data):
    """A config.json whose first width key is null: `config_size` read no width (transformers' hidden_size is
    None: the torch runtime refuses the folder), but the onnx runtime's `read_model_config` skipped the null and
    took the next key's 32. Now one rule: both refuse it."""
    from transformers import AutoConfig

    from tokenpool.errors import ModelFolderError
    from tokenpool.model.configs import config_size
    from tokenpool.model.onnx import read_model_config

    (tmp_path / "config.json").write_text(json.dumps(data))
    assert AutoConfig.for_model(**data).hidden_size is None
    assert config_size(data) is None
    with pytest.raises(ModelFolderError, match="names no hidden size"):
        read_model_config(tmp_path)
