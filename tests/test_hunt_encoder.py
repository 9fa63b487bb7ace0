"""Bugs found in the Encoder's encode path, each checked against an independent reference: the tokenizer's own
ids, transformers' own padded forward pass."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

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
