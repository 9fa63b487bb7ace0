"""Long documents and Ray, corner cases: each test fails on the code before its fix.

References are independent of the code under test: the tokenizer's own ids and character offsets of one call,
the document's own slices, Ray's own rows."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenpool.model import document_tokens  # noqa: E402

# characters Python's str.isspace() (and splitlines) count as whitespace, but a BERT tokenizer drops as control
# characters: a word around one of them is one word
CONTROL_SPACES = "\x0b\x0c\x1c\x1d\x1e\x1f\x85"


def _one_call(encoder, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The tokenizer's own ids and character offsets of ``text``, in one call, without special tokens."""
    encoded = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(pair) for pair in encoded["offset_mapping"]]


@pytest.mark.parametrize("char", list(CONTROL_SPACES))
def test_sliced_tokenisation_does_not_cut_inside_a_word_at_a_control_character(full, monkeypatch, char):
    """Long texts are tokenised in slices cut before whitespace; a control character Python calls whitespace
    is no word boundary for the tokenizer, so a cut there split one word in two (other tokens, other spans)."""
    slice_chars = 40
    monkeypatch.setattr(document_tokens, "SLICE_CHARS", slice_chars)
    # the first slice's second half holds one space, then a control character inside a long word
    word = f"electro{char}encephalography"
    text = " ".join(["ab cd ef gh ij kl mn op", word, *["xy"] * 30])
    assert text.index(" electro") in range(slice_chars // 2, slice_chars) and text.index(char) < slice_chars
    tokens = document_tokens.tokenize_document(full.tokenization, text)
    ids, offsets = _one_call(full, text)
    assert tokens.ids.tolist() == ids
    assert list(zip(tokens.starts.tolist(), tokens.ends.tolist(), strict=True)) == offsets
