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


def test_numpy_integers_are_sizes_and_bools_are_not(left_bert):
    """batch_size / max_batch_tokens / max_length from numpy (a config array, argparse into numpy) are
    accepted as the same ints, and come back as ints; a bool, numpy's too, is still refused."""
    from tokenpool.model.request import EncodeRequest

    texts = ["a b c", "hello there world", "x", "the quick brown fox"]
    reference = left_bert.encode(texts, batch_size=2, max_batch_tokens=12)
    got = left_bert.encode(texts, batch_size=np.int64(2), max_batch_tokens=np.int32(12))
    np.testing.assert_array_equal(got, reference)
    rows = left_bert.tokenize(texts)
    assert [b.indices.tolist() for b in left_bert.forward_ids(rows, batch_size=np.uint8(3))] == [
        b.indices.tolist() for b in left_bert.forward_ids(rows, batch_size=3)
    ]
    request = EncodeRequest(batch_size=np.int64(3), max_batch_tokens=np.int16(9)).check()
    assert (type(request.batch_size), type(request.max_batch_tokens)) == (int, int)
    cut = Encoder(left_bert.model_path, max_length=np.int64(6), normalize=False, device="cpu")
    same = Encoder(left_bert.model_path, max_length=6, normalize=False, device="cpu")
    assert type(cut.max_length) is int
    np.testing.assert_array_equal(cut.encode(texts), same.encode(texts))
    for bad in (True, np.True_, 2.0, np.float64(2), 0, np.int64(0)):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            left_bert.encode(texts, batch_size=bad)
