"""Model folders, pooling configs, ONNX and inspect (stop 62): each test failed on the code before its fix."""

from __future__ import annotations

import json
import shutil

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


def _xlm_folder(folder):
    """A tiny random XLM encoder (its width saved as ``emb_dim``) with the MiniLM tokenizer, saved by transformers."""
    import torch
    from tinymodels import HIDDEN, minilm_tokenizer
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("xlm", vocab_size=30522, emb_dim=HIDDEN, n_layers=2, n_heads=4,
                                  max_position_embeddings=128, n_langs=1, use_lang_emb=False)  # fmt: skip
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


def _bloom_folder(folder):
    """A tiny random Bloom decoder whose config.json names its width ``n_embed``, as older Bloom configs do."""
    import torch
    from tinymodels import HIDDEN, minilm_tokenizer
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("bloom", vocab_size=30522, hidden_size=HIDDEN, n_layer=2, n_head=4)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    data["n_embed"] = data.pop("hidden_size")
    (folder / "config.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("make", [_xlm_folder, _bloom_folder])
def test_a_width_saved_as_emb_dim_or_n_embed_gives_the_dimension(tmp_path, make):
    """XLM / Flaubert save their width as ``emb_dim`` and older Bloom / Falcon configs as ``n_embed`` (transformers
    reads both as hidden_size): a plain folder's fallback config had no embedding_dimension, and
    `PoolingConfig.save` refused the folder ("has none of hidden_size, d_model, n_embd, dim")."""
    from sentence_transformers import SentenceTransformer
    from tinymodels import HIDDEN
    from transformers import AutoConfig

    from tokenpool import PoolingConfig, read_pooling_config
    from tokenpool.model.configs import config_size

    folder = make(tmp_path / "model")
    data = json.loads((folder / "config.json").read_text())
    assert "hidden_size" not in data
    assert config_size(data) == AutoConfig.from_pretrained(folder).hidden_size == HIDDEN
    assert read_pooling_config(folder, log_fallback=False).embedding_dimension == HIDDEN
    PoolingConfig(strategies=("mean",)).save(folder)
    width = SentenceTransformer(str(folder), device="cpu").get_embedding_dimension()
    assert read_pooling_config(folder).embedding_dimension == width == HIDDEN


def test_export_onnx_refuses_an_empty_output_rather_than_writing_the_cache(run, tiny, tmp_path, monkeypatch):
    """``--output ""`` (an unset shell variable: ``--output "$OUT"``) was taken as no --output: the export went to
    the cache, exit 0, though the user named a file; an empty --onnx-file is refused, so is this now."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    code, out, err = run("export-onnx", tiny, "--output", "")
    assert (code, out) == (2, "")
    assert err.strip() == "tokenpool export-onnx: error: --output must name a .onnx file, got ''"
    assert not (tmp_path / "cache").exists()


def _longformer(folder):
    """A tiny random Longformer (attention window 8) with the MiniLM tokenizer, saved by transformers."""
    import torch
    from tinymodels import minilm_tokenizer
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("longformer", vocab_size=30522, hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                                  num_attention_heads=4, max_position_embeddings=130, attention_window=[8, 8], pad_token_id=1)  # fmt: skip
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


def test_a_longformer_is_not_exported_to_a_graph_traced_at_one_length(run, tmp_path, monkeypatch, capsys):
    """Longformer pads each batch to a multiple of its attention window in Python, so the export (traced on a
    batch of 8 tokens) baked that padding in: the onnx runtime's vectors differed from the torch runtime's on
    every text, silently (0.05 per dimension of unit vectors with a window of 32). Now the export is refused."""
    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = _longformer(tmp_path / "longformer")
    with pytest.raises(ModelFolderError, match="longformer"):
        Encoder(folder, device="cpu", pooling="mean", runtime="onnx")
    capsys.readouterr()  # (transformers' save progress)
    code, out, err = run("export-onnx", folder, "--output", tmp_path / "x.onnx")
    assert (code, out) == (2, "") and err.startswith("tokenpool export-onnx: error: ") and "longformer" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_an_export_the_tracer_cannot_make_names_the_model_and_the_way_out(run, tmp_path, monkeypatch, capsys):
    """A bidirectional Gemma 3 with sliding-window layers (EmbeddingGemma's layout): torch's tracer fails inside
    transformers' mask code, and export-onnx said only "failed: unordered_map::at". Now the one line names the
    exporter, the model type and the folder, and says to use the torch runtime."""
    import torch
    from tinymodels import minilm_tokenizer
    from transformers import AutoConfig, AutoModel

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "gemma"
    config = AutoConfig.for_model(
        "gemma3_text", vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, head_dim=8,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, pad_token_id=0, sliding_window=16,
        use_bidirectional_attention=True, layer_types=["sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    capsys.readouterr()  # (transformers' save progress)
    code, out, err = run("export-onnx", folder, "--output", tmp_path / "x.onnx")
    assert (code, out) == (1, "") and len(err.splitlines()) == 1, err
    assert err.startswith(f"tokenpool export-onnx: failed: torch.onnx.export cannot export the gemma3_text model in {folder}")
    assert "run it on the torch runtime" in err and not (tmp_path / "x.onnx").exists()


def test_a_longformer_export_cached_before_the_refusal_is_not_run(tiny_onnx, tmp_path, monkeypatch):
    """An export the onnx runtime cached for a Longformer folder before exports of it were refused (a graph traced
    at one length) was still found in the cache and run: its key did not change. Now such folders' key has a mark
    (as for the token-type fix), so the stale file is never read and the export is refused."""
    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError
    from tokenpool.model import onnx

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = _longformer(tmp_path / "longformer")
    with monkeypatch.context() as before:  # the key as the code before the refusal made it
        before.setattr(onnx, "LENGTH_TRACED_TYPES", frozenset(), raising=False)
        stale = onnx.cached_export_path(folder)
    stale.parent.mkdir(parents=True)
    shutil.copy(tiny_onnx, stale)  # (any graph: the stale export)
    with pytest.raises(ModelFolderError, match="longformer model cannot be exported"):
        Encoder(folder, device="cpu", pooling="mean", runtime="onnx")


@pytest.mark.parametrize("attention", ["original_full", "block_sparse"])
def test_only_a_block_sparse_bigbird_is_refused_a_full_attention_one_exports(tmp_path, monkeypatch, attention):
    """The export refusal took every BigBird, but one with full attention (``attention_type="original_full"``)
    has nothing that depends on the length: its traced graph gives transformers' vectors at every length. Now
    only a block-sparse BigBird (which switches to full attention on short inputs) is refused."""
    import numpy as np
    import torch
    from tinymodels import minilm_tokenizer
    from transformers import AutoConfig, AutoModel

    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "bigbird"
    config = AutoConfig.for_model("big_bird", vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=256, attention_type=attention,
                                  block_size=4, num_random_blocks=1)  # fmt: skip
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    if attention == "block_sparse":
        with pytest.raises(ModelFolderError, match="big_bird model cannot be exported"):
            Encoder(folder, device="cpu", pooling="mean", runtime="onnx")
        return
    texts = ["hello", "word " * 40, "a longer text here " * 20]
    onnx = Encoder(folder, device="cpu", pooling="mean", runtime="onnx").encode(texts)
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), minilm_tokenizer()
    for text, vector in zip(texts, onnx, strict=True):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].double().mean(0).numpy()
        np.testing.assert_allclose(vector, hidden, atol=1e-5)
