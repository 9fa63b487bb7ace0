"""Prompts read with the text in the long-document paths, against truncate mode (stop 55, second hunt).

The reference is truncate mode (`Encoder.tokenize`, `Encoder.encode`), which reads ``prompt + text`` as
sentence-transformers does, for documents that fit one window."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from test_encoder import _qwen2_weights  # noqa: E402

from tokenpool import Encoder  # noqa: E402


@pytest.fixture(scope="module")
def lowering(tmp_path_factory):
    """A cased byte-level BPE in a folder whose sentence_bert_config.json says do_lower_case: the encoder
    lower-cases ``prompt + text`` itself (``str.lower``, as sentence-transformers does)."""
    folder = tmp_path_factory.mktemp("tiny-qwen-lowercase-prompt")
    _qwen2_weights(folder, padding_side="right")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": True, "max_seq_length": 64}))
    return folder


# "Σ" lower-cases to the final sigma "ς" after a letter and before no letter: read across the prompt's end,
# ``(prompt + text).lower()`` is not ``prompt.lower() + text.lower()``
SIGMA_CASES = [("ΟΔΟΣ", "the cat sat"), ("ΟΔΟΣ", "İstanbul"), ("Query here", "Σ cat"), ("Query İİ", "Σ. the end")]


@pytest.mark.parametrize(("prompt", "text"), SIGMA_CASES)
def test_a_lowercasing_encoder_lowers_prompt_plus_text_whole_in_every_path(lowering, prompt, text):
    """Windows, token_spans and per-token output lower-cased the prompt and the text each alone, so a capital
    sigma at the prompt's end (or the text's start) took another form than in truncate mode: other token ids,
    another vector for a document that fits one window."""
    truncate = Encoder(lowering, pooling="mean", normalize=False, device="cpu", max_length=64)
    windows = Encoder(lowering, pooling="mean", normalize=False, device="cpu", max_length=64, long_documents="windows")
    assert truncate.tokenization.lowercase
    want = (prompt + text).lower()
    assert want != prompt.lower() + text.lower()  # (the case this test is about)
    ids = truncate.tokenize([text], prompt=prompt).ids[0]
    assert ids == truncate.tokenizer(want, add_special_tokens=False)["input_ids"]  # (the reference itself)
    for encoder in (truncate, windows):
        got, spans = encoder.token_spans(text, prompt=prompt)
        assert got.tolist() == ids
        assert spans.max() <= len(text)
    np.testing.assert_array_equal(windows.encode([text], prompt=prompt), truncate.encode([text], prompt=prompt))
    (tokens,) = windows.encode([text], prompt=prompt, output="tokens")
    (batch,) = truncate.iter_token_batches([text], prompt=prompt, batch_size=1)
    np.testing.assert_allclose(tokens, batch.hidden[0].detach().float().numpy()[: len(ids)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["truncate", "windows"])
def test_a_lowercasing_encoder_measures_its_prompt_lower_cased(lowering, mode):
    """The prompt's room was checked on the prompt as given, not lower-cased as it is read: on a tokenizer that
    splits capitals finely, "THE QUICK BROWN FOX: " (7 tokens read, 21 as given) was refused at max_length 16
    ("takes 21 tokens ... no room is left for the texts") though it leaves 9 tokens for the text. Lower-cased
    first, it is the same input as its lower-case spelling (sentence-transformers lower-cases prompt + text)."""
    encoder = Encoder(lowering, pooling="mean", normalize=False, device="cpu", max_length=16, long_documents=mode)
    prompt = "THE QUICK BROWN FOX: "
    assert len(encoder.tokenizer(prompt.lower(), add_special_tokens=False)["input_ids"]) < 16
    assert len(encoder.tokenizer(prompt, add_special_tokens=False)["input_ids"]) > 16  # (the case)
    texts = ["the cat sat", "the quick brown fox jumps over the lazy dog " * 3]
    want = encoder.encode(texts, prompt=prompt.lower())
    np.testing.assert_array_equal(encoder.encode(texts, prompt=prompt), want)
    chunks = encoder.encode_chunks(texts, prompt=prompt, chunks="tokens:4")
    np.testing.assert_array_equal(chunks.vectors, encoder.encode_chunks(texts, prompt=prompt.lower(), chunks="tokens:4").vectors)
