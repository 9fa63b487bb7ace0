"""Long documents, windows and chunks: defects found against an independent float64 reference (s57)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("chunking", ["late", "naive"])
@pytest.mark.parametrize("none", [[], np.zeros((0, 2), dtype=np.int64)])
def test_whole_empty_text_takes_no_spans(small, chunking, none):
    """``empty_documents="whole"`` gives a text of no token one row of its whole text; with ``chunks="spans"``
    an empty text could not get it: no span fits in "" and no span at all was "no spans given"."""
    rows = small.encode_chunks(["", "hi there"], chunks="spans", spans=[none, [[0, 2]]], chunking=chunking,
                               empty_documents="whole")  # fmt: skip
    assert rows.doc.tolist() == [0, 1] and rows.start.tolist() == [0, 0] and rows.end.tolist() == [0, 2]
    np.testing.assert_allclose(rows.vectors[0], small.encode(""), rtol=1e-6, atol=1e-6)  # its whole text
