"""Hybrid search: rankings of the same queries fused from their top-k lists alone, by reciprocal ranks (Σ 1
/ (k + rank), k = 60 as Cormack et al., 2009) or by min–max-scaled scores (Σ w · scaled score); a run that
did not return a document adds 0. RRF ranks by its exact sums, returned rounded to float64 (float32 tied
neighbouring ranks from k ≈ 1e7); interpolation's float64 sums are rounded to the float32 scores returned and
ranked by those. Either way sums equal in exact arithmetic tie, equal scores in trec_eval's document-id order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
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
        parts.append((indices, np.broadcast_to(np.arange(1, indices.shape[1] + 1), indices.shape)))

    def exact_sums(pair: np.ndarray, ranks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Σ 1 / (k + rank) of each pair as p / q in integers → its exact order, and the float64 nearest it (p
        / q rounds once: never out of that order). Fractions are compared only among pairs of one float64."""
        a, b = k.as_integer_ratio()  # 1 / (k + rank) = b / (a + b·rank)
        most = int(np.bincount(pair).max(initial=1))  # ranks of one pair at most
        small = (a + b * int(ranks.max(initial=0))) ** most * b * most < 2**53  # p, q exact in int64 and float64
        terms = ranks.astype(np.int64 if small else object) * b + a
        q = np.ones(n, dtype=terms.dtype)
        np.multiply.at(q, pair, terms)
        p = np.zeros(n, dtype=terms.dtype)
        np.add.at(p, pair, q[pair] // terms * b)
        sums = (p / q).astype(np.float64)
        _, first, near = np.unique(sums, return_index=True, return_inverse=True)
        near = near.reshape(-1)  # pairs of one float64 sum, where another p / q has it too:
        tied = np.flatnonzero(np.isin(near, near[(p != p[first][near]) | (q != q[first][near])]))
        fractions = list(zip(p[tied].tolist(), q[tied].tolist(), strict=True))
        exact = {pq: Fraction(*pq) for pq in set(fractions)}
        place = {value: i + 1 for i, value in enumerate(sorted(set(exact.values())))}
        key = near * (len(place) + 1)
        key[tied] += np.array([place[exact[pq]] for pq in fractions], dtype=np.int64)
        return key, sums

    return _fuse(parts, tie_rank, depth, exact_sums)


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

    def float32_sums(pair: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        totals = np.bincount(pair, weights=values, minlength=n).astype(np.float32)
        return totals, totals

    return _fuse(parts, tie_rank, depth, float32_sums)


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


def _fuse(parts: list[tuple[np.ndarray, np.ndarray]], tie_rank: np.ndarray, depth: int, add: Callable) -> Ranking:
    """Each (query, document)'s contributions over ``parts`` ((Q, k) rows, −1 = none), combined by ``add(pair,
    values, n)`` → (sort key, score) of each of the n pairs → the top ``depth``."""
    n_queries = parts[0][0].shape[0]
    n_docs = len(tie_rank)
    keys = np.concatenate([(np.arange(n_queries)[:, None] * n_docs + ix)[ix >= 0] for ix, _ in parts])
    values = np.concatenate([np.asarray(v)[ix >= 0] for ix, v in parts])
    unique, inverse = np.unique(keys, return_inverse=True)
    sort_key, totals = add(inverse.reshape(-1), values, len(unique))
    query, doc = unique // n_docs, unique % n_docs
    order = np.lexsort((-tie_rank[doc], -sort_key, query))  # by query, then fused score and tie rank, descending
    query, doc, totals = query[order], doc[order], totals[order]
    place = np.arange(len(query)) - np.searchsorted(query, query)  # 0-based rank within its query
    keep = place < depth
    indices = np.full((n_queries, depth), -1, dtype=np.int64)
    scores = np.full((n_queries, depth), -np.inf, dtype=totals.dtype)
    indices[query[keep], place[keep]] = doc[keep]
    scores[query[keep], place[keep]] = totals[keep]
    return Ranking(indices=indices, scores=scores)
