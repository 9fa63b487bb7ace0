"""Lead's fixes of stop 68."""

import json
import shutil

import pytest


def test_a_pad_token_id_outside_the_vocabulary_names_config_json(tiny, tmp_path):
    """config.json's pad_token_id at or past vocab_size made torch's embedding raise a bare AssertionError
    ("Padding_idx must be within num_embeddings"), which the CLI printed without naming the file; now a
    ModelFolderError naming config.json and the value."""
    pytest.importorskip("transformers")
    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    folder = shutil.copytree(tiny, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = config["vocab_size"] + 7
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=rf"config\.json: pad_token_id {config['pad_token_id']} is not one"):
        Encoder(str(folder), device="cpu")
