"""Corners of the encoder's batching and of the corpus readers: a left-padded BERT split on out of memory,
numpy sizes, whitespace records and lines, duplicate keys and ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_batching import OomAbove
from test_encoder import _save_sentence_transformer
from tinymodels import bert_weights

from tokenpool import Encoder

# ------------------------------------------------------------------------------------------ batching


@pytest.fixture(scope="module")
def left_bert(tmp_path_factory):
    """A tiny random BERT whose tokenizer pads on the left: its position ids are the tokens' columns."""
    folder = tmp_path_factory.mktemp("left-bert")
    bert_weights(folder)
    config_file = folder / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "padding_side": "left"}))
    _save_sentence_transformer(folder, "mean")
    encoder = Encoder(folder, normalize=False, device="cpu")
    assert encoder.tokenization.left_pad
    return encoder


LEFT_TEXTS = ["a b c d e f g h i j k l m n o p q r s t", "short", "tiny", "x y", "another one here ok"]


def test_a_left_padded_bert_batch_split_on_out_of_memory_gives_the_unsplit_vectors(left_bert, monkeypatch):
    """The halves keep the batch's leading pad columns: dropping them moved every token of the shorter rows to
    another position id (a BERT's position is its column), and changed their vectors."""
    reference = left_bert.encode(LEFT_TEXTS, batch_size=8)
    tokens = left_bert.encode(LEFT_TEXTS, batch_size=8, output="tokens")
    flaky = OomAbove(left_bert.runner, limit=30)
    monkeypatch.setattr(left_bert, "runner", flaky)
    np.testing.assert_allclose(left_bert.encode(LEFT_TEXTS, batch_size=8), reference, rtol=0, atol=2e-6)
    for got, want in zip(left_bert.encode(LEFT_TEXTS, batch_size=8, output="tokens"), tokens, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert flaky.failures > 0
