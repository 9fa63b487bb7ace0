"""Stop 68, model folders: corners found by comparing with the other commands and sentence-transformers."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("huggingface_hub")
from test_hub import FakeHub  # noqa: E402


@pytest.fixture
def cached_hub(monkeypatch, tmp_path):
    """The bundled model as the Hub repo ``org/minilm``, already in the (default) cache; offline."""
    import huggingface_hub

    fake = FakeHub(tmp_path / "default-cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fake("org/minilm")  # (downloaded once, as `embed --model org/minilm` would have)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return fake


def test_inspect_reads_a_hub_id_as_embed_does(cached_hub, run, tmp_path):
    """``tokenpool inspect org/minilm`` said "'org/minilm': no such model folder" while ``embed --model
    org/minilm`` and ``export-onnx org/minilm`` read the same cached snapshot; now inspect reports that snapshot,
    with what it reports for the folder itself, and a Hub id not in the cache is the embed's offline error."""
    snapshot = tmp_path / "default-cache" / "org--minilm" / "main"
    code, out, err = run("inspect", "org/minilm", "--json")
    assert code == 0, err
    code2, direct, err2 = run("inspect", snapshot, "--json")
    assert code2 == 0, err2
    assert json.loads(out) == json.loads(direct)
    assert cached_hub.downloads == 1
    code, _, err = run("inspect", "org/other")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'org/other' is not in" in err and "HF_HUB_OFFLINE" in err, err


@pytest.mark.parametrize("strategies, truncate_dim", [(("mean",), 33), (("cls", "mean"), 65)])
def test_save_refuses_a_truncate_dim_the_saved_folder_could_not_load(tmp_path, strategies, truncate_dim):
    """``PoolingConfig(truncate_dim=1000).save(folder)`` of a 384-wide model wrote the folder, which
    `read_pooling_config` + the Encoder then refused ("truncate_dim must be an int in 1..384"); now save refuses
    it, naming the width, and writes nothing (as it refuses a width a kept Dense module does not take). The
    widest truncate_dim the folder's vectors have still saves, and reads back as the Encoder checks it."""
    from dataclasses import replace

    from tokenpool import PoolingConfig, read_pooling_config
    from tokenpool.errors import ConfigError
    from tokenpool.model.configs import folder_truncate_dim

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}), encoding="utf-8")
    config = PoolingConfig(strategies=strategies, truncate_dim=truncate_dim)
    with pytest.raises(ConfigError, match=rf"truncate_dim must be an int in 1\.\.{truncate_dim - 1}\b"):
        config.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    replace(config, truncate_dim=truncate_dim - 1).save(tmp_path)
    saved = read_pooling_config(tmp_path)
    assert folder_truncate_dim(saved, saved.output_dimension, tmp_path) == truncate_dim - 1
