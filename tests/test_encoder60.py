"""Stop 60's Encoder-area fixes, each checked against an independent reference (the tokenizer run on the
chosen texts alone, sentence-transformers, the documented text)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool import Encoder

TEXTS = ["short", "a long one " * 200, "mid text", "another long one " * 150]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(device="cpu")


def test_tokenized_select_takes_a_boolean_mask_as_numpy_does(encoder):
    # `Tokenized.truncated` is a bool array: select(~truncated) keeps the untruncated texts, not rows 0/1
    tokenized = encoder.tokenize(TEXTS)
    kept = tokenized.select(~tokenized.truncated)
    alone = encoder.tokenize([TEXTS[0], TEXTS[2]])
    assert kept.ids == alone.ids and kept.counts.tolist() == alone.counts.tolist()
    assert tokenized.select([]).ids == [] and tokenized.select(np.int64(2)).ids == [alone.ids[1]]
    with pytest.raises(IndexError):  # a float position is no row (it was truncated to an int)
        tokenized.select(np.array([0.9, 2.2]))
    with pytest.raises(IndexError):  # a mask of another length
        tokenized.select([True, False])
