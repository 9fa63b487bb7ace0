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


@pytest.mark.parametrize("spec", ["boundaries:8", "tokens:4"])
@pytest.mark.parametrize("chunking", ["late", "naive"])
def test_whole_whitespace_text_with_tokens_gives_its_whole_row(eos_decoder, spec, chunking):
    """A whitespace-only text has no chunk (an error by default); a byte-level BPE gives it tokens, so with
    ``empty_documents="whole"`` it went on to be chunked: late boundary chunks crashed (AttributeError), naive
    ones and `plan_chunks` silently gave it no row, token chunks pooled its spaces. Now its one whole row."""
    if spec.startswith("boundaries"):
        pytest.importorskip("semantic_text_splitter")
    texts = ["   ", "hi there"]
    rows = eos_decoder.encode_chunks(texts, chunks=spec, chunking=chunking, empty_documents="whole")
    plan = eos_decoder.plan_chunks(texts, chunks=spec, empty_documents="whole")
    for got in (rows, plan):
        assert got.doc.tolist().count(0) == 1 and (got.start[0], got.end[0]) == (0, 3)
    np.testing.assert_allclose(rows.vectors[0], eos_decoder.encode("   "), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["late-boundaries-128", "naive-boundaries-128"])
def test_retrieval_boundary_modes_keep_a_whitespace_document(eos_decoder, mode):
    """Retrieval's boundary modes read a document of no chunk as one whole unit; a whitespace-only one with
    byte-level BPE tokens crashed ``late-boundaries-N`` (AttributeError) and was left out of ``naive-``."""
    pytest.importorskip("semantic_text_splitter")
    from tokenpool.evaluation.modes import DOCUMENT_MODES

    units = DOCUMENT_MODES[mode](eos_decoder, ["   ", "hi there"], [None], batch_size=4, prompt=None,
                                 prompt_name=None, progress=False)[None]  # fmt: skip
    assert units.doc_index.tolist() == [0, 1]
    np.testing.assert_allclose(units.vectors[0], eos_decoder.encode("   "), rtol=1e-6, atol=1e-6)
