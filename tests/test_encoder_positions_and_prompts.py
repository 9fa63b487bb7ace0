"""Bugs found in the Encoder's encode path, each checked against an independent reference: the tokenizer's own
ids, transformers' own padded forward pass."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tinymodels import tiny_decoder, tiny_encoder  # noqa: E402

from tokenpool import Encoder  # noqa: E402


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder(max_length=32)


@pytest.mark.parametrize("prompt", ["query: ", "Represent this sentence for searching relevant passages: "])
def test_left_truncation_of_a_very_long_text_keeps_its_prompt(minilm, prompt):
    """A text over max_length × 64 characters is cut to its last characters before tokenising; that cut used to
    take the prompt in front of it too, so the row began with the text's middle (half a word) instead."""
    tokenizer = minilm.tokenizer
    text = " ".join(f"w{i}" for i in range(6000))  # ~40,000 characters, far above 32 × 64
    assert len(text) > minilm.max_length * 64
    tokenized = minilm.tokenize([text, text[-300:]], prompt=prompt, truncation="left")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = minilm.max_length - 2 - len(prompt_ids)
    expected = [tokenizer.cls_token_id, *prompt_ids, *text_ids[-keep:], tokenizer.sep_token_id]
    assert tokenized.ids[0] == expected
    assert tokenized.ids[1] == expected  # the same tail as a short text's


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "camembert"])
def test_unpadded_positions_of_a_real_pad_id_token_match_the_padded_pass(tmp_path, model_type):
    """RoBERTa-family models give a token whose id is the pad id (a text's literal ``<pad>``) the position
    ``pad_token_id`` even where the mask says it is real; the padding-free pass gave it the next rank, so every
    vector of such a text in a padded batch differed from transformers' (and sentence-transformers')."""
    from test_unpadded import _padded, _runner

    runner = _runner(tiny_encoder(tmp_path, model_type), sparse=False)
    assert runner.unpadded
    pad = runner.model.config.pad_token_id
    ids = np.array([[101, 2000, pad, 3000, 4000, 102], [101, 2000, 102, pad, pad, pad]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=np.int64)
    unpadded = runner.forward(ids, mask)[0].numpy()
    padded = _padded(runner, ids, mask)  # transformers' own SDPA pass over the padded batch
    # (to float32 rounding: with 2 threads the 9-token and 2×6-token products may round apart)
    np.testing.assert_allclose(unpadded[mask == 1], padded[mask == 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "mpnet"])
def test_max_length_of_offset_position_models_stops_at_their_real_limit(tmp_path, model_type):
    """RoBERTa-like models place tokens from position padding_idx + 1 on (MPNet: 2), so 130 position rows hold
    128 tokens. max_length defaulted to max_position_embeddings (and max_length=130 was accepted): a long text
    then failed in the model with "index 130 is out of bounds" instead of being truncated."""
    from transformers import AutoModel

    folder = tiny_encoder(tmp_path, model_type)  # max_position_embeddings 130, a tokenizer limit of 512
    encoder = Encoder(folder, pooling="mean", normalize=False)
    assert encoder.max_length == 128
    text = " ".join(f"w{i}" for i in range(300))
    ids = encoder.tokenizer(text, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(folder).eval()(**ids).last_hidden_state[0].double().numpy()
    np.testing.assert_allclose(encoder.encode(text), hidden.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert Encoder(folder, pooling="mean", max_length=128).max_length == 128
    with pytest.raises(ValueError, match="max_length=129 exceeds the model's limit of 128 tokens"):
        Encoder(folder, pooling="mean", max_length=129)


@pytest.mark.parametrize(("model_type", "limit"), [("luke", 128), ("markuplm", 129)])
def test_every_pad_offset_model_type_has_its_position_limit(tmp_path, model_type, limit):
    """max_length's cap and the unpadded pass read one list of pad-offset model types: the cap's own shorter copy
    missed LUKE and MarkupLM (and ESM, LayoutLMv3, LiLT), whose default max_length was max_position_embeddings,
    so a long text failed in the model with "index out of range" (positions from pad_token_id + 1: LUKE's is 1,
    MarkupLM's 0)."""
    from transformers import AutoModel

    folder = tiny_encoder(tmp_path, model_type)  # max_position_embeddings 130
    encoder = Encoder(folder, pooling="mean", normalize=False)
    assert encoder.max_length == limit
    text = " ".join(f"w{i}" for i in range(300))
    ids = encoder.tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(folder).eval()(**ids).last_hidden_state[0].double().numpy()
    np.testing.assert_allclose(encoder.encode(text), hidden.mean(axis=0), rtol=1e-4, atol=1e-5)


def test_a_position_limit_under_another_name_caps_max_length_on_both_runtimes(tmp_path):
    """MPT names its position limit max_seq_len (GPT-2 n_positions): the torch runtime read only
    max_position_embeddings, took the tokenizer's 512 and a long text failed in the model; the onnx runtime's
    config reader knew the other names (now one list, `runners.POSITION_KEYS`)."""
    from tokenpool.model.encoder import _position_limit
    from tokenpool.model.onnx import read_model_config
    from tokenpool.model.runners import load_config_and_tokenizer

    folder = tiny_decoder(tmp_path, "mpt")
    config, _ = load_config_and_tokenizer(folder)
    assert _position_limit(config) == _position_limit(read_model_config(folder)) == config.max_seq_len
    encoder = Encoder(folder, pooling="mean")
    assert encoder.max_length == config.max_seq_len
    assert np.isfinite(encoder.encode(" ".join(f"w{i}" for i in range(3 * config.max_seq_len)))).all()


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "mpnet", "bert"])
def test_the_onnx_runtime_reads_the_same_position_limit(tmp_path, model_type):
    """The onnx runtime's JSON config carried no pad_token_id, so a RoBERTa-like folder's max_length stopped at
    max_position_embeddings there (130) and at the real limit (128) on the torch runtime."""

    from tokenpool.model.encoder import _position_limit
    from tokenpool.model.onnx import read_model_config
    from tokenpool.model.runners import load_config_and_tokenizer

    folder = tiny_encoder(tmp_path, model_type)
    config, _ = load_config_and_tokenizer(folder)
    assert _position_limit(read_model_config(folder)) == _position_limit(config)
    assert _position_limit(config) == (130 if model_type == "bert" else 128)
