"""Hybrid search: rankings of the same queries fused from their top-k lists alone, by reciprocal ranks (Σ 1
/ (k + rank), k = 60 as Cormack et al., 2009) or by min–max-scaled scores (Σ w · scaled score); a run that
did not return a document adds 0. Sums are float64, each adding its terms in ascending order, and ranked by
the scores returned: float64 for RRF (exact integer ranks: float32 tied neighbouring ranks from k ≈ 1e7),
float32 for interpolation (of float32 scores: sums equal in exact arithmetic still tie); equal scores in
trec_eval's document-id order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import check_int
from .common import check_number
from .search import Ranking, check_ranking, checked_tie_rank

__all__ = ["DEFAULT_RRF_K", "DEFAULT_WEIGHT", "interpolate", "reciprocal_rank_fusion"]

DEFAULT_RRF_K = 60
DEFAULT_WEIGHT = 0.5  # BM25's weight against the dense run's in `evaluate`: equal, tuned on no test set


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking], tie_rank: np.ndarray, *, k: float = DEFAULT_RRF_K, depth: int = 100
) -> Ranking:
    """The top ``depth`` documents per query by Σ 1 / (k + rank) over ``rankings``."""
    k = check_number("the RRF constant k", k)
    tie_rank, depth = _checked(rankings, tie_rank, depth)
    parts = []
    for ranking in rankings:
        indices = np.asarray(ranking.indices, dtype=np.int64)
        ranks = np.arange(1, indices.shape[1] + 1, dtype=np.float64)
        parts.append((indices, np.broadcast_to(1.0 / (k + ranks), indices.shape)))
    return _fuse(parts, tie_rank, depth, np.float64)  # (float32 tied ranks 1 and 2 from k ≈ 1e7)


def interpolate(
    rankings: Sequence[Ranking], weights: Sequence[float], tie_rank: np.ndarray, *, depth: int = 100
) -> Ranking:
    """The top ``depth`` documents per query by Σ weight · min–max-scaled score over ``rankings``."""
    tie_rank, depth = _checked(rankings, tie_rank, depth)
    if np.ndim(weights) != 1 or len(weights) != len(rankings):  # (a lone 0.5: "'float' has no len()")
        shown = list(weights) if np.ndim(weights) == 1 else weights
        raise ValueError(f"interpolation needs one weight per ranking: {len(rankings)} rankings, got {shown!r:.80}")
    weights = [check_number(f"interpolation weight {i}", w) for i, w in enumerate(weights)]
    parts = []
    for i, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        indices = np.asarray(ranking.indices, dtype=np.int64)
        found, scores = indices >= 0, np.asarray(ranking.scores, dtype=np.float64)
        if not np.isfinite(scores[found]).all():  # (NaN scaled every score of its query to NaN, inf to NaN)
            q, r = (int(x) for x in np.argwhere(found & ~np.isfinite(scores))[0])
            raise ValueError(f"ranking {i}: the score at query {q}, rank {r + 1} is {scores[q, r]}, not a finite number")
        low = np.where(found, scores, np.inf).min(axis=1, keepdims=True)
        high = np.where(found, scores, -np.inf).max(axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        scaled = np.where(high > low, (scores - low) / span, 1.0)
        parts.append((indices, weight * np.where(found, scaled, 0.0)))
    return _fuse(parts, tie_rank, depth, np.float32)


def _checked(rankings: Sequence[Ranking], tie_rank: Any, depth: Any) -> tuple[np.ndarray, int]:
    """The checked tie ranks and depth, after checking that ``rankings`` are (queries × rank) lists of the
    same queries over the tie ranks' documents, each document at most once per query (`check_ranking`)."""
    if not isinstance(rankings, Sequence):  # (a lone Ranking: "object of type 'Ranking' has no len()")
        raise TypeError(f"rankings must be a list of Rankings, got {type(rankings).__name__}")
    if not len(rankings):
        raise ValueError("fusion needs at least one ranking")
    depth = int(check_int(depth, "depth"))
    shape = np.shape(tie_rank)
    if len(shape) != 1 or not shape[0]:
        raise ValueError(f"tie_rank must hold one rank per document (1-D, not empty), got shape {shape}")
    ties = checked_tie_rank(tie_rank, shape[0])
    for i, ranking in enumerate(rankings):
        indices, scores = np.asarray(ranking.indices), np.asarray(ranking.scores)
        if indices.ndim != 2 or scores.shape != indices.shape or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"ranking {i}: indices and scores must be (queries × rank) arrays of one shape, "
                             f"integer indices; got {indices.shape} {indices.dtype} and {scores.shape}")  # fmt: skip
        if indices.shape[0] != np.shape(rankings[0].indices)[0]:
            raise ValueError("the rankings to fuse must be of the same queries")
        check_ranking(indices, len(ties), f"ranking {i}: indices")
    return ties, depth


def _fuse(parts: list[tuple[np.ndarray, np.ndarray]], tie_rank: np.ndarray, depth: int, dtype: type) -> Ranking:
    """Sum each (query, document)'s contributions over ``parts`` ((Q, k) rows, −1 = none) → top ``depth``,
    ranked by the sums rounded to ``dtype``."""
    n_queries = parts[0][0].shape[0]
    n_docs = len(tie_rank)
    keys = np.concatenate([(np.arange(n_queries)[:, None] * n_docs + ix)[ix >= 0] for ix, _ in parts])
    values = np.concatenate([np.asarray(v, np.float64)[ix >= 0] for ix, v in parts])
    order = np.lexsort((values, keys))  # each sum adds its terms in ascending order: equal terms, equal sums
    unique, inverse = np.unique(keys[order], return_inverse=True)
    totals = np.bincount(inverse.reshape(-1), weights=values[order], minlength=len(unique)).astype(dtype)
    query, doc = unique // n_docs, unique % n_docs
    order = np.lexsort((-tie_rank[doc], -totals, query))  # by query, then fused score and tie rank, descending
    query, doc, totals = query[order], doc[order], totals[order]
    place = np.arange(len(query)) - np.searchsorted(query, query)  # 0-based rank within its query
    keep = place < depth
    indices = np.full((n_queries, depth), -1, dtype=np.int64)
    scores = np.full((n_queries, depth), -np.inf, dtype=dtype)
    indices[query[keep], place[keep]] = doc[keep]
    scores[query[keep], place[keep]] = totals[keep]
    return Ranking(indices=indices, scores=scores)
