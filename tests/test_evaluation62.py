"""Stop 62, evaluation: BM25 reads canonically equivalent texts (NFC / NFD) as the same terms."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

pytest.importorskip("bm25s")


def test_bm25_reads_a_decomposed_accent_as_the_composed_letter():
    """A corpus written in NFD (macOS file names, some PDF extractions) split 'Mu\u0308ller' into the terms 'mu'
    and 'ller' (U+0308 is no word character), so the NFC query 'Müller' found nothing: canonically equivalent
    strings are the same text (Unicode), and the dense side's tokenizers read them alike. Reference: bm25s on
    the NFC form of every text."""
    import bm25s

    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.lexical import BM25Settings, bm25_rows
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    composed = ["Müller ist ein häufiger Familienname", "Café au lait", "Der Hund bellt laut"]
    docs = [unicodedata.normalize("NFD", text) for text in composed]
    queries = ["Müller", unicodedata.normalize("NFD", "café")]
    counts, weights = bm25_rows(docs, queries, BM25Settings(stopwords="none"))
    ours = (counts @ weights.T).toarray()

    index = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    index.index(bm25s.tokenize(composed, stopwords=None, show_progress=False), show_progress=False)
    for row, query in enumerate(queries):
        terms = bm25s.tokenize([unicodedata.normalize("NFC", query)], stopwords=None, return_ids=False,
                               show_progress=False)[0]  # fmt: skip
        np.testing.assert_allclose(ours[row], index.get_scores(terms), rtol=1e-6)
    assert ours[0, 0] > 0 and ours[1, 1] > 0

    data = RetrievalSet(["a", "b", "c"], docs, ["q1", "q2"], ["Müller", "café"], {"q1": {"a": 1}, "q2": {"b": 1}})
    assert evaluate_retrieval(data, modes="bm25").scores().ndcg_at_10 == 1.0
