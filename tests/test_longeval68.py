"""Stop 68, long documents and evaluation (helper longeval): defects found by use, each with its reference."""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("transformers")


def _traced_peak(function, *args):
    """(result, peak bytes traced above the start) of ``function(*args)``, the lower of two calls (tracemalloc
    counts every thread's allocations: a burst from another thread of the test process is not read as ours); a
    first call untraced warms up the tokenizer's and the regular expressions' lazy state."""
    function(*args)
    peaks = []
    for _ in range(2):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            result = function(*args)
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
        finally:
            tracemalloc.stop()
    return result, min(peaks)


def test_tokenize_document_peak_memory_is_32_bytes_per_token(small, monkeypatch):
    """docs/long-documents.md: a document's tokens are held as ids, starts and ends (24 bytes per token) and cost
    at most 32 at the peak of tokenising it, plus one tokenizer call's Python lists. The (n, 2) offsets were
    concatenated and then copied into starts and ends: 64 bytes per token at the peak (16 GB for a 1 GB text).
    One-slice calls of 500 characters keep a call's own lists small beside the document's arrays."""
    from tokenpool.model import document_tokens

    monkeypatch.setattr(document_tokens, "SLICE_CHARS", 500)
    monkeypatch.setattr(document_tokens, "SLICES_PER_CALL", 1)
    text = " ".join(["hello world token pool"] * 2500)  # 10,000 tokens, 100 slices
    tokenization = small.tokenization
    tokens, peak = _traced_peak(document_tokens.tokenize_document, tokenization, text)
    n = len(tokens)
    assert n == 10_000 and tokens.ids.dtype == tokens.starts.dtype == tokens.ends.dtype == np.int64
    whole = tokenization.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokens.ids.tolist() == whole["input_ids"]  # (the same tokens as one call)
    assert np.array_equal(np.column_stack((tokens.starts, tokens.ends)), np.asarray(whole["offset_mapping"]))
    assert peak < 44 * n, f"{peak / n:.1f} bytes per token at the peak"


def test_lower_cased_document_with_dotted_capital_i_maps_spans_in_memory_per_token(small, monkeypatch):
    """A lower-casing encoder (do_lower_case) reads "İ" as the two characters of "İ".lower(); the token spans are
    mapped back to the caller's text. The map was two int64 arrays per *character* of the text (built by a Python
    loop over every character): 16 bytes per character, ~70 per token beside the tokens' 32, for a Turkish text.
    Reference: each token's span mapped through a character-by-character map of ``text`` to ``text.lower()``."""
    from tokenpool.model import document_tokens

    monkeypatch.setattr(small.tokenization, "lowercase", True)
    monkeypatch.setattr(document_tokens, "SLICE_CHARS", 500)
    monkeypatch.setattr(document_tokens, "SLICES_PER_CALL", 1)
    text = " ".join(["İstanbul ve İzmir çok güzel şehirler"] * 625)  # 4,375 words, 1,250 "İ"
    tokens, peak = _traced_peak(document_tokens.tokenize_document, small.tokenization, text)
    origin = [i for i, ch in enumerate(text) for _ in ch.lower()] + [len(text)]  # lower-cased position → text's
    lowered = text.lower()
    whole = small.tokenization.tokenizer(lowered, add_special_tokens=False, return_offsets_mapping=True)
    assert tokens.ids.tolist() == whole["input_ids"]
    spans = [(origin[a], origin[b - 1] + 1 if b > a else origin[b]) for a, b in whole["offset_mapping"]]
    assert list(zip(tokens.starts.tolist(), tokens.ends.tolist(), strict=True)) == spans
    assert sum(text[a:b] == "İ" for a, b in spans) > 0  # (the dotted capital is a token's whole span somewhere)
    # the lower-cased copy of the text is the text's size, not the tokens' (here 2 bytes a character: U+0307)
    copy = sys.getsizeof(lowered)
    assert peak < 48 * len(tokens) + copy, f"{(peak - copy) / len(tokens):.1f} bytes per token at the peak"


def test_dotted_capital_i_is_the_only_character_whose_lower_case_is_longer():
    """`document_tokens` finds the characters that lower-case to several by searching for "İ" alone: Unicode's
    only one in this Python (a new one would be read one character off)."""
    from tokenpool.model.document_tokens import LONGER_LOWER

    assert [chr(c) for c in range(sys.maxunicode + 1) if len(chr(c).lower()) != 1] == [LONGER_LOWER]


@pytest.mark.parametrize("text", ["ΟΔΟΣ İzmir ΟΔΟΣ", "İ", "ΑΣİ ΑΣ. İİ Σ"])
def test_same_length_lower_is_str_lower_but_for_dotted_capital_i(text):
    """`same_length_lower` (the text boundary chunks are split in, for a lower-casing encoder) is ``text.lower()``
    but for "İ", kept as it is. Each character was lower-cased alone: a word-final "Σ" became "σ", where
    ``text.lower()`` — what the document's tokens are read from — gives "ς"."""
    from tokenpool.model.document_tokens import same_length_lower

    lowered = same_length_lower(text)
    reference = text.lower()
    assert len(lowered) == len(text)
    assert [i for i, ch in enumerate(lowered) if ch == "İ"] == [i for i, ch in enumerate(text) if ch == "İ"]
    assert lowered.replace("İ", "i\u0307") == reference
