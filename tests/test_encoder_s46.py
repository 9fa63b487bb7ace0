"""Stop 46's Encoder fixes against sentence-transformers' own modules as the reference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

from tinymodels import minilm_tokenizer  # noqa: E402

from tokenpool import Encoder  # noqa: E402

TEXTS = ["hello world", "a longer sentence with more words in it", "x"]


@pytest.mark.parametrize("family", ["t5", "mt5"])
def test_an_encoder_decoder_folder_embeds_with_its_encoder_as_sentence_transformers_does(tmp_path, family):
    """sentence-T5 / GTR folders: AutoModel built the whole seq2seq model, whose forward asks for decoder inputs
    ("You must specify exactly one of decoder_input_ids or decoder_inputs_embeds"); sentence-transformers loads
    the encoder alone (T5EncoderModel), and so does tokenpool now."""
    import transformers
    from sentence_transformers import SentenceTransformer, models

    config_class = {"t5": transformers.T5Config, "mt5": transformers.MT5Config}[family]
    model_class = {"t5": transformers.T5Model, "mt5": transformers.MT5Model}[family]
    config = config_class(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          decoder_start_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    model_class(config).save_pretrained(tmp_path / "raw")
    minilm_tokenizer().save_pretrained(tmp_path / "raw")
    st = SentenceTransformer(modules=[models.Transformer(str(tmp_path / "raw")), models.Pooling(32, "mean")])
    st.save(str(tmp_path / "st"))
    encoder = Encoder(tmp_path / "st")
    assert "EncoderModel" in type(encoder.model).__name__
    np.testing.assert_allclose(encoder.encode(TEXTS), st.encode(TEXTS), atol=1e-5)


def test_an_encoder_decoder_folder_exports_its_encoder_to_onnx(tmp_path, monkeypatch):
    """The ONNX export loads the folder with no config object at hand, so it too built the seq2seq model and its
    trace failed asking for decoder inputs; the onnx runtime now gives the torch runtime's vectors."""
    pytest.importorskip("onnxruntime")
    import transformers

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    config = transformers.T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    transformers.T5Model(config).save_pretrained(tmp_path / "t5")
    minilm_tokenizer().save_pretrained(tmp_path / "t5")
    expected = Encoder(tmp_path / "t5", pooling="mean").encode(TEXTS)
    np.testing.assert_allclose(Encoder(tmp_path / "t5", pooling="mean", runtime="onnx").encode(TEXTS), expected,
                               atol=1e-5)  # fmt: skip
