"""Review of stop 58, evaluation: RRF's exact ranking at realistic depths costs about what interpolation does,
and still ranks as exact fractions do (equal sums tie, in trec_eval's document-id order)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tokenpool.evaluation.fusion import reciprocal_rank_fusion
from tokenpool.evaluation.search import Ranking


def _runs(rng: np.random.Generator, n_docs: int, n_queries: int, depth: int, n_runs: int) -> list[Ranking]:
    """``n_runs`` rankings of ``depth`` documents per query, drawn from ``n_docs`` (so they overlap)."""
    out = []
    for _ in range(n_runs):
        indices = np.stack([rng.permutation(n_docs)[:depth] for _ in range(n_queries)])
        scores = -np.sort(-rng.random(indices.shape), axis=1).astype(np.float32)
        out.append(Ranking(indices, scores))
    return out


def test_rrf_at_depth_1000_builds_fractions_only_for_float64_ties(monkeypatch):
    """RRF summed one Fraction per distinct set of ranks and sorted them all: three runs at depth 1000 took
    10-20x interpolation's time over the same lists (~45 s for 1,000 queries). Fractions are built now only
    for sums that share one float64 value; the rest ranks by the float64 nearest each exact sum. (Counted, not
    timed: the tests assert no wall-clock figure.)"""
    import tokenpool.evaluation.fusion as fusion

    built = []

    def counting(*args):
        built.append(args)
        return Fraction(*args)

    monkeypatch.setattr(fusion, "Fraction", counting)
    rng = np.random.default_rng(3)
    runs, tie_rank = _runs(rng, 5000, 100, 1000, 3), rng.permutation(5000)
    fused = reciprocal_rank_fusion(runs, tie_rank, depth=1000)
    pairs = sum(len(set(np.concatenate([r.indices[q] for r in runs]).tolist())) for q in range(100))
    assert fused.indices.shape == (100, 1000) and 0 < len(built) < pairs / 10, (len(built), pairs)


@pytest.mark.parametrize("k", [0, 1, 60, 0.1, 1 / 3, 2.5, 1e8, 1e15])
def test_rrf_ranks_and_scores_as_exact_fractions(k):
    """Three ragged runs (some lists end early, -1), few documents so that many exact sums tie (1/2 + 1/6 =
    2/3 at k = 0; 1/96 + 1/120 = 1/80 + 1/160 at 60), k non-dyadic (0.1) or large (p, q past int64): ranked
    by the exact sums, ties by descending tie rank, scores the float64 nearest each sum."""
    rng = np.random.default_rng(int(k * 7) % 1000)
    n_docs, depth = 60, 50
    tie_rank = rng.permutation(n_docs)
    lists = []
    for _ in range(3):
        indices = np.full((8, 40), -1, dtype=np.int64)
        for q in range(8):
            m = int(rng.integers(0, 41))
            indices[q, :m] = rng.permutation(n_docs)[:m]
        lists.append(indices)
    fused = reciprocal_rank_fusion([Ranking(ix, np.zeros(ix.shape, np.float32)) for ix in lists], tie_rank, k=k,
                                   depth=depth)  # fmt: skip
    for q in range(8):
        exact: dict[int, Fraction] = {}
        for indices in lists:
            for rank, doc in enumerate(indices[q].tolist(), start=1):
                if doc >= 0:
                    exact[doc] = exact.get(doc, Fraction(0)) + 1 / (Fraction(k) + rank)
        want = sorted(exact, key=lambda d: (-exact[d], -tie_rank[d]))[:depth]
        assert fused.indices[q].tolist() == want + [-1] * (depth - len(want))
        assert fused.scores[q].tolist() == [float(exact[d]) for d in want] + [-np.inf] * (depth - len(want))
