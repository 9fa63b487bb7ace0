"""Hybrid search: several rankings of the same queries fused into one, from their top-k lists alone (no
model pass, no second search).

- Reciprocal-rank fusion (Cormack et al., 2009): score(d) = Σ_runs 1 / (k + rank(d)), rank from 1; a run
  that did not return d adds nothing. k = 60 by default, as in the paper.
- Score interpolation: score(d) = Σ_runs w_run · (s(d) − min) / (max − min), each run's scores scaled to
  [0, 1] over that query's returned list (min–max; a list of equal scores scales to 1); a run that did not
  return d adds 0.

Equal fused scores are ordered as everywhere else (`tokenpool.evaluation.search`): by the tie rank, higher
first (trec_eval's document-id order). Fused scores are summed in float64, then rounded to the float32 scores
returned and ranked by those: sums equal in exact arithmetic (1/96 + 1/120 = 1/80 + 1/160) that float64
rounding sets a bit apart still tie, and the ranking is the trec_eval order of its own scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .common import check_number
from .search import Ranking

__all__ = ["DEFAULT_RRF_K", "DEFAULT_WEIGHT", "interpolate", "reciprocal_rank_fusion"]

DEFAULT_RRF_K = 60
DEFAULT_WEIGHT = 0.5  # BM25's weight against the dense run's in `evaluate`: equal, tuned on no test set


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking], tie_rank: np.ndarray, *, k: float = DEFAULT_RRF_K, depth: int = 100
) -> Ranking:
    """The top ``depth`` documents per query by Σ 1 / (k + rank) over ``rankings``."""
    k = check_number("the RRF constant k", k)
    parts = []
    for ranking in rankings:
        ranks = np.arange(1, ranking.indices.shape[1] + 1, dtype=np.float64)
        parts.append((ranking.indices, np.broadcast_to(1.0 / (k + ranks), ranking.indices.shape)))
    return _fuse(parts, tie_rank, depth)


def interpolate(
    rankings: Sequence[Ranking], weights: Sequence[float], tie_rank: np.ndarray, *, depth: int = 100
) -> Ranking:
    """The top ``depth`` documents per query by Σ weight · min–max-scaled score over ``rankings``."""
    if len(weights) != len(rankings):
        raise ValueError(f"interpolation needs one weight per ranking: {len(rankings)} rankings, got {list(weights)}")
    weights = [check_number(f"interpolation weight {i}", w) for i, w in enumerate(weights)]
    parts = []
    for ranking, weight in zip(rankings, weights, strict=True):
        found = ranking.indices >= 0
        scores = ranking.scores.astype(np.float64)
        low = np.where(found, scores, np.inf).min(axis=1, keepdims=True)
        high = np.where(found, scores, -np.inf).max(axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        scaled = np.where(high > low, (scores - low) / span, 1.0)
        parts.append((ranking.indices, weight * np.where(found, scaled, 0.0)))
    return _fuse(parts, tie_rank, depth)


def _fuse(parts: list[tuple[np.ndarray, np.ndarray]], tie_rank: np.ndarray, depth: int) -> Ranking:
    """Sum each (query, document)'s contributions over ``parts`` ((Q, k) rows, −1 = none) → top ``depth``."""
    n_queries = parts[0][0].shape[0]
    if any(indices.shape[0] != n_queries for indices, _ in parts):
        raise ValueError("the rankings to fuse must be of the same queries")
    tie_rank = np.asarray(tie_rank, dtype=np.int64)
    n_docs = len(tie_rank)
    keys = np.concatenate([(np.arange(n_queries)[:, None] * n_docs + ix)[ix >= 0] for ix, _ in parts])
    values = np.concatenate([np.asarray(v, np.float64)[ix >= 0] for ix, v in parts])
    unique, inverse = np.unique(keys, return_inverse=True)
    totals = np.bincount(inverse.reshape(-1), weights=values, minlength=len(unique)).astype(np.float32)
    query, doc = unique // n_docs, unique % n_docs
    order = np.lexsort((-tie_rank[doc], -totals, query))  # by query, then fused score and tie rank, descending
    query, doc, totals = query[order], doc[order], totals[order]
    place = np.arange(len(query)) - np.searchsorted(query, query)  # 0-based rank within its query
    keep = place < depth
    indices = np.full((n_queries, depth), -1, dtype=np.int64)
    scores = np.full((n_queries, depth), -np.inf, dtype=np.float32)
    indices[query[keep], place[keep]] = doc[keep]
    scores[query[keep], place[keep]] = totals[keep]
    return Ranking(indices=indices, scores=scores)
