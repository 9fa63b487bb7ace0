"""Stop 62, long documents: chunk results checked against independent references."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("prompt", [None, "query: "])
def test_naive_chunks_report_the_tokens_each_was_encoded_from_and_the_tokens_cut(small, tiny_bert_folder, prompt):
    """A naive span longer than the window is cut to max_length, and the server could not count the cut without
    tokenising every chunk again: the library now reports, per naive chunk, the tokens its text was encoded from
    (transformers' own count of ``prompt + text`` with special tokens, at most max_length) and the tokens cut."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_folder)
    long_text = " ".join(f"w{k}" for k in range(20))
    texts, spans = [long_text, "Short note."], [[[0, len(long_text)], [3, 8]], [[0, 5]]]
    for chunks, given in (("spans", spans), ("tokens:4:1", None)):
        found = small.encode_chunks(texts, chunks=chunks, spans=given, chunking="naive", prompt=prompt)
        counts = np.array([len(tokenizer((prompt or "") + texts[d][s:e])["input_ids"])
                           for d, s, e in zip(found.doc, found.start, found.end, strict=True)])  # fmt: skip
        embedded = np.minimum(counts, small.max_length)
        np.testing.assert_array_equal(found.tokens, embedded)
        np.testing.assert_array_equal(found.truncated, counts - embedded)
        assert (found.truncated[0] > 0) == (chunks == "spans")  # only a span is cut; token chunks are never
    late = small.encode_chunks(texts, chunks="tokens:4:1", prompt=prompt)
    assert late.tokens is None and late.truncated is None  # late chunks run no text of their own
