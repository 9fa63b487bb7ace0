"""Stop 68, long documents and evaluation (helper longeval): defects found by use, each with its reference."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

pytest.importorskip("transformers")


def test_tokenize_document_peak_memory_is_32_bytes_per_token(small, monkeypatch):
    """docs/long-documents.md: a document's tokens are held as ids, starts and ends (24 bytes per token) and cost
    at most 32 at the peak of tokenising it, plus one tokenizer call's Python lists. The (n, 2) offsets were
    concatenated and then copied into starts and ends: 64 bytes per token at the peak (16 GB for a 1 GB text).
    One-slice calls of 2,000 characters keep a call's own lists small beside the document's arrays."""
    from tokenpool.model import document_tokens

    monkeypatch.setattr(document_tokens, "SLICE_CHARS", 2000)
    monkeypatch.setattr(document_tokens, "SLICES_PER_CALL", 1)
    text = " ".join(["hello world token pool"] * 10_000)  # 40,000 tokens, 100 slices
    tokenization = small.tokenization
    document_tokens.tokenize_document(tokenization, text[:100])  # (warm up the tokenizer's lazy state)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        tokens = document_tokens.tokenize_document(tokenization, text)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    n = len(tokens)
    assert n == 40_000 and tokens.ids.dtype == tokens.starts.dtype == tokens.ends.dtype == np.int64
    whole = tokenization.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokens.ids.tolist() == whole["input_ids"]  # (the same tokens as one call)
    assert np.array_equal(np.column_stack((tokens.starts, tokens.ends)), np.asarray(whole["offset_mapping"]))
    assert peak < 44 * n, f"{peak / n:.1f} bytes per token at the peak"
