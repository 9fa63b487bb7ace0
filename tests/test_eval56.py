"""Stop 56, evaluation: duplicate documents in tie order, int8 calibrations, messages, metric references."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.search import exact_search, tie_ranks


@pytest.mark.parametrize("dimension", [384, 37])
def test_duplicate_documents_score_alike_and_follow_tie_rank(dimension):
    """Equal document vectors anywhere in the corpus get bit-equal scores, so equal documents rank by id in
    descending byte order (trec_eval's order, as the docstring promises), whatever their place in the block."""
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((3000, dimension)).astype(np.float32)
    copies = np.arange(0, 3000, 37)
    docs[(copies + 1500) % 3000] = docs[copies]
    queries = rng.standard_normal((200, dimension)).astype(np.float32)
    ids = [f"doc-{i:05d}" for i in range(3000)]
    ranking = exact_search(queries, docs, tie_rank=tie_ranks(ids), k=3000)
    score_of = np.empty((200, 3000), dtype=np.float32)
    np.put_along_axis(score_of, ranking.indices, ranking.scores, axis=1)
    position = np.argsort(ranking.indices, axis=1)
    for a in copies:
        b = (a + 1500) % 3000
        assert (score_of[:, a] == score_of[:, b]).all()
        first, second = (a, b) if ids[a].encode() > ids[b].encode() else (b, a)
        assert (position[:, first] < position[:, second]).all()
    # the rest of the order: float64 scores of the float32 vectors agree up to float32 rounding
    exact = queries.astype(np.float64) @ docs.astype(np.float64).T
    assert np.allclose(score_of, exact, rtol=0, atol=1e-4)
