"""Review of stop 57's Ray and long-document fixes: inputs next to the ones they targeted (s57 rev3)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.errors import OptionError

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_naive_token_chunks_whole_row_of_a_long_whitespace_text(eos_decoder):
    """e992cd1 gives a whitespace-only text with byte-level BPE tokens one row of its whole text under
    ``empty_documents="whole"``; with naive ``tokens:SIZE`` chunks a long one (41 tokens, max_length 16) was
    then refused as a chunk "over max_length ... use a smaller chunk size" (no chunk size helps), where naive
    boundary chunks give it its row. Now that row is ``encode(text)``, as for every other whole-text row."""
    text = " " * 40
    rows = eos_decoder.encode_chunks([text, "hi there"], chunks="tokens:4", chunking="naive",
                                     empty_documents="whole")  # fmt: skip
    assert rows.doc.tolist().count(0) == 1 and (rows.start[0], rows.end[0]) == (0, len(text))
    np.testing.assert_allclose(rows.vectors[0], eos_decoder.encode(text), rtol=1e-6, atol=1e-6)
    with pytest.raises(OptionError, match="^document 0: only whitespace"):  # the default mode: still an error naming it
        eos_decoder.encode_chunks([text], chunks="tokens:4", chunking="naive")
