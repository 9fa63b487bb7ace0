"""Stop 58, evaluation: RRF ranks like its float64 formula at any k, STS on a sparse model keeps CSR rows,
a precision's "kept" needs a positive float32 figure, ..."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.fusion import reciprocal_rank_fusion
from tokenpool.evaluation.search import Ranking


@pytest.mark.parametrize("k", [60, 1e7, 1e8, 3e9])
def test_rrf_ranks_like_the_float64_formula_at_any_k(k):
    """From k ≈ 1e7, 1 / (k + rank) of neighbouring ranks rounded to one float32 and fused documents tied,
    then ranked by id: the fused list is the float64 loop's now, its scores the loop's sums."""
    rng = np.random.default_rng(7)
    n_docs, depth = 400, 100
    tie_rank = rng.permutation(n_docs)
    lists = [np.stack([rng.permutation(n_docs)[:depth] for _ in range(3)]) for _ in range(2)]
    rankings = [Ranking(ix, np.zeros(ix.shape, np.float32)) for ix in lists]
    fused = reciprocal_rank_fusion(rankings, tie_rank, k=k, depth=depth)
    for q in range(3):
        score: dict[int, float] = {}
        for ix in lists:
            for rank, doc in enumerate(ix[q].tolist(), start=1):
                score[doc] = score.get(doc, 0.0) + 1.0 / (k + rank)
        want = sorted(score, key=lambda d: (-score[d], -tie_rank[d]))[:depth]
        assert fused.indices[q].tolist() == want
        assert fused.scores[q].tolist() == [score[d] for d in want]
