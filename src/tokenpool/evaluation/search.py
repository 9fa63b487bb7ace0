"""Exact top-k search in bounded memory: the queries × units scores are computed in blocks of at most
``max_bytes`` (dense or sparse CSR rows alike) with a running top-k per query; a document of several units
(chunks, windows) scores as its best unit. Order as ``trec_eval``'s: float32 score, highest first, equal
scores by document id in descending byte order (``tie_rank``), both packed in one int64 key per (query,
document). Equal dense unit vectors score exactly alike (a matrix product rounds a column by its place in the
block: duplicates came out a few ulps apart, out of the tie order), so duplicate documents follow ``tie_rank``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.sparse import SparseRows
from ..errors import is_int

__all__ = ["BYTES_PER_SCORE", "Ranking", "check_ranking", "checked_tie_rank", "exact_search", "tie_ranks"]

# Bytes per (query, unit) cell of a block: the float32 score, an int32 temporary and the int64 sort key.
BYTES_PER_SCORE = 16
DEFAULT_MAX_BYTES = 256 * 2**20  # the block budget of `exact_search` and `evaluate_retrieval`
_NONE = np.iinfo(np.int64).min  # key of "no document" (never beats a real one)


@dataclass
class Ranking:
    """Top-k documents per query: ``indices[q, r]`` is the document row at rank r (−1 past the end) and
    ``scores[q, r]`` its score (−inf past the end)."""

    indices: np.ndarray  # int64 (Q, k)
    scores: np.ndarray  # float32 (Q, k); float64 from reciprocal-rank fusion

    def matched(self) -> Ranking:
        """Only the documents that scored above 0: for sparse rows (BM25, SPLADE), a document that shares no
        term with the query is not retrieved (as a search engine answers), rather than ranked by its id."""
        found = self.scores > 0
        return Ranking(np.where(found, self.indices, -1), np.where(found, self.scores, np.float32(-np.inf)))

    def run(self, query_ids: Sequence[str], doc_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """As a ``{query id: {document id: score}}`` run (the input of pytrec_eval or ranx); ValueError unless
        ``query_ids`` holds one distinct id per ranked query and ``doc_ids`` an id per ranked document row."""
        if len(query_ids) != len(self.indices) or len(set(query_ids)) != len(query_ids):
            # (fewer ids, or one given twice, dropped queries' lists without a word; more were an IndexError)
            raise ValueError(f"run needs one distinct query id per ranked query: {len(self.indices)} queries, got "
                             f"{len(query_ids)} query ids, {len(set(query_ids))} distinct")  # fmt: skip
        if self.indices.size and self.indices.max() >= len(doc_ids):  # (an IndexError, naming nothing)
            raise ValueError(f"run needs an id per document: the ranking holds document row {self.indices.max()}, "
                             f"got {len(doc_ids)} document ids")  # fmt: skip
        out: dict[str, dict[str, float]] = {}
        for q, query_id in enumerate(query_ids):
            ranked = zip(self.indices[q].tolist(), self.scores[q].tolist(), strict=True)
            out[query_id] = {doc_ids[d]: float(s) for d, s in ranked if d >= 0}
        return out


def tie_ranks(doc_ids: Sequence[str]) -> np.ndarray:
    """int64 rank of each id in ascending UTF-8 byte order: among equal scores the higher rank comes first."""
    order = sorted(range(len(doc_ids)), key=lambda i: doc_ids[i].encode("utf-8"))
    return np.argsort(np.asarray(order, dtype=np.int64))  # the inverse permutation


def _flip_order(bits: np.ndarray) -> np.ndarray:
    """float32 bits (an int32 view) ↔ int32 with the same order, in place: the map is its own inverse."""
    bits ^= (bits >> 31) & 0x7FFFFFFF
    return bits


def exact_search(
    queries: Any, units: Any, doc_index: np.ndarray | None = None, *, tie_rank: np.ndarray | None = None,
    n_docs: int | None = None, k: int = 100, max_bytes: int = DEFAULT_MAX_BYTES,
    exclude: np.ndarray | None = None,
) -> Ranking:  # fmt: skip
    """Top-``k`` documents per query by dot product (pass L2-normalised vectors for cosine).

    ``queries`` / ``units``: (Q, D) / (U, D) rows, both dense or both sparse (CSR); unit u belongs to document ``doc_index[u]`` (default: one unit per document).
    A document's score is the maximum over its units; every document in ``range(n_docs)`` needs at least one.
    ``tie_rank`` (see `tie_ranks`) orders equal scores, higher first; default: lower document row first.
    ``exclude[q]``: a document row query q may not retrieve (−1: none) — BEIR's ``ignore_identical_ids``.
    ``max_bytes`` bounds the block of scores (and its sort keys) held at once: `BYTES_PER_SCORE` per cell.
    Inputs and scores must be finite float32 numbers (a dot product past ±3.4e38 is a ValueError).
    """
    queries, units = _matrix("queries", queries), _matrix("units", units)
    if isinstance(queries, np.ndarray) != isinstance(units, np.ndarray):
        raise ValueError("queries and units must be both dense arrays or both sparse rows")
    if queries.shape[1] != units.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but units have {units.shape[1]}")
    doc_index, n_docs, counts = _documents(doc_index, units.shape[0], n_docs)
    tie_rank = checked_tie_rank(tie_rank, n_docs)
    if not is_int(k) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not is_int(max_bytes) or max_bytes < BYTES_PER_SCORE:
        raise ValueError(f"max_bytes must be an integer ≥ {BYTES_PER_SCORE} (one score), got {max_bytes!r}")
    n_queries = queries.shape[0]
    exclude = None if exclude is None else _exclude(exclude, n_queries, n_docs)
    k = int(min(k, n_docs))
    # Units grouped by document (stable), so that each document's units are contiguous.
    if units.shape[0] > 1 and not (doc_index[1:] >= doc_index[:-1]).all():
        units = units[np.argsort(doc_index, kind="stable")]
    starts = np.concatenate(([0], np.cumsum(counts)))  # units of document d: starts[d]:starts[d+1]
    repeated = _repeated_rows(units) if isinstance(units, np.ndarray) else None
    from_rank = np.argsort(tie_rank)  # the document row of each tie rank
    cells = int(max_bytes) // BYTES_PER_SCORE
    widest = int(min(units.shape[0], max(1024, 4 * k)))
    q_block = max(1, min(n_queries, cells // widest)) if n_queries else 1
    max_cols = max(1, cells // q_block)
    indices = np.full((n_queries, k), -1, dtype=np.int64)
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    for q0 in range(0, n_queries, q_block):
        q1 = min(n_queries, q0 + q_block)
        block = queries[q0:q1]  # sparse rows transposed once (vocabulary × queries), as `_dot` takes them
        block = block if isinstance(block, np.ndarray) else block.T.tocsr()
        excluded = None if exclude is None else exclude[q0:q1]
        best = _block_top_keys(block, q1 - q0, (units, repeated), starts, max_cols, tie_rank, excluded, k)
        real = best != _NONE
        indices[q0:q1] = np.where(real, from_rank[np.where(real, best & 0xFFFFFFFF, 0)], -1)
        scores[q0:q1] = np.where(real, _flip_order((best >> 32).astype(np.int32)).view(np.float32), -np.inf)
    return Ranking(indices=indices, scores=scores)


def _documents(doc_index: Any, n_units: int, n_docs: int | None) -> tuple[np.ndarray, int, np.ndarray]:
    """The checked unit → document map (int64), the number of documents and each document's unit count."""
    doc_index = np.arange(n_units, dtype=np.int64) if doc_index is None else np.asarray(doc_index)
    if doc_index.shape != (n_units,) or (n_units and not np.issubdtype(doc_index.dtype, np.integer)):
        raise ValueError(
            f"doc_index must be {n_units} integers (one per unit), got shape {doc_index.shape} of {doc_index.dtype}"
        )
    doc_index = doc_index.astype(np.int64, copy=False)
    if n_docs is None:
        n_docs = int(doc_index.max()) + 1 if n_units else 0
    if n_docs < 1:
        raise ValueError("no documents to search")
    if n_units and (doc_index.min() < 0 or doc_index.max() >= n_docs):
        bad = doc_index[(doc_index < 0) | (doc_index >= n_docs)][0]
        raise ValueError(f"doc_index {bad} is outside 0..{n_docs - 1}")
    counts = np.bincount(doc_index, minlength=n_docs)
    if (counts == 0).any():
        raise ValueError(f"document row {int(np.flatnonzero(counts == 0)[0])} has no unit (vector) to score")
    return doc_index, n_docs, counts


def _exclude(exclude: Any, n_queries: int, n_docs: int) -> np.ndarray:
    """The checked ``exclude``: one document row or −1 per query (a row past the corpus was silently ignored, a
    float 0.7 excluded row 0)."""
    exclude = np.asarray(exclude)
    if exclude.shape != (n_queries,) or (exclude.size and not np.issubdtype(exclude.dtype, np.integer)):
        raise ValueError(f"exclude must hold one document row (or -1) per query, integers; got shape {exclude.shape} "
                         f"of {exclude.dtype}")  # fmt: skip
    exclude = exclude.astype(np.int64, copy=False)
    outside = (exclude < -1) | (exclude >= n_docs)
    if outside.any():
        q = int(np.flatnonzero(outside)[0])
        raise ValueError(f"exclude[{q}] is {int(exclude[q])}, not a document row in 0..{n_docs - 1} (or -1)")
    return exclude


def check_ranking(indices: np.ndarray, n_docs: int, what: str = "indices") -> None:
    """ValueError unless the (Q, k) integer ``indices`` hold per query document rows in 0..n_docs-1, each at most
    once, then −1 past the end (a row past the corpus was scored as another query's; a repeat counted twice; a
    float 0.6 read as row 0; a row after a −1 ranked one lower than in the run it stands for)."""
    if indices.ndim != 2 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(f"{what} must be a 2-D (queries × rank) integer array, got shape {indices.shape} of "
                         f"{indices.dtype}")  # fmt: skip
    bad = (indices < -1) | (indices >= n_docs)
    if bad.any():
        q, r = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}[{q}, {r}] is {int(indices[q, r])}, not a document row in 0..{n_docs - 1} (or -1)")
    late = (indices >= 0) & (np.cumsum(indices < 0, axis=1) > 0)
    if late.any():
        q, r = (int(i) for i in np.argwhere(late)[0])
        raise ValueError(f"{what}[{q}, {r}] is document row {int(indices[q, r])} after a -1 (-1 marks the end of "
                         "a query's list)")  # fmt: skip
    ordered = np.sort(np.where(indices >= 0, indices, -np.arange(2, indices.shape[1] + 2)), axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        q, r = (int(i) for i in np.argwhere(repeated)[0])
        raise ValueError(f"{what} row {q} ranks document row {int(ordered[q, r])} twice")


def checked_tie_rank(tie_rank: Any, n_docs: int) -> np.ndarray:
    """The checked tie ranks (a different one per document); default: lower document row first."""
    if tie_rank is None:
        return np.arange(n_docs - 1, -1, -1, dtype=np.int64)
    tie_rank = np.asarray(tie_rank, dtype=np.int64)
    if tie_rank.shape != (n_docs,) or (n_docs and (tie_rank.min() < 0 or tie_rank.max() >= 2**32)):
        raise ValueError(f"tie_rank must be {n_docs} integers in 0..2**32-1, got shape {tie_rank.shape}")
    if len(np.unique(tie_rank)) != n_docs:
        raise ValueError("tie_rank must give every document a different rank")
    # the same order as ranks 0..n_docs-1 (the keys hold them; [10, 5, 7] was an IndexError past the corpus)
    return np.argsort(np.argsort(tie_rank))


def _block_top_keys(
    query_block: Any, n_queries: int, units: tuple[Any, np.ndarray | None], starts: np.ndarray, max_cols: int,
    tie_rank: np.ndarray, exclude: np.ndarray | None, k: int,
) -> np.ndarray:  # fmt: skip
    """The best ``k`` sort keys of each of the block's ``n_queries`` queries (``query_block``, ``units`` as
    `_dot` takes them), highest first, over document blocks of at most ``max_cols`` units (a running top-k)."""
    best = np.full((n_queries, k), _NONE, dtype=np.int64)
    for d0, d1 in _document_blocks(starts, max_cols):
        keys = _block_keys(query_block, units, starts, d0, d1, max_cols, tie_rank)
        if exclude is not None:
            rows = np.flatnonzero((exclude >= d0) & (exclude < d1))
            keys[rows, exclude[rows] - d0] = _NONE
        take = min(k, d1 - d0)
        if take < keys.shape[1]:
            keys.partition(keys.shape[1] - take, axis=1)
        merged = np.concatenate((best, keys[:, keys.shape[1] - take :]), axis=1)
        del keys
        merged.partition(merged.shape[1] - k, axis=1)
        best = merged[:, merged.shape[1] - k :].copy()
        del merged
    return np.sort(best, axis=1)[:, ::-1]


def _matrix(name: str, values: Any) -> Any:
    """``values`` as a C-contiguous float32 array, or as a float32 scipy CSR matrix when it is sparse."""
    if isinstance(values, SparseRows) or hasattr(values, "tocsr"):
        matrix = values.to_scipy() if isinstance(values, SparseRows) else values.tocsr()
        with np.errstate(over="ignore"):
            converted = matrix.astype(np.float32, copy=False)
        if matrix.nnz and not (np.isfinite(converted.data.min()) and np.isfinite(converted.data.max())):  # no copy
            at = np.flatnonzero(~np.isfinite(converted.data))[0]
            row = int(np.searchsorted(matrix.indptr, at, side="right")) - 1
            raise ValueError(f"{name} row {row} holds NaN or infinite values as float32: {float(matrix.data[at])!r}")
        return converted
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows × dimension), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"{name} must hold real numbers, got {array.dtype}")
    with np.errstate(over="ignore"):  # (1e300 is refused below, naming it)
        converted = np.ascontiguousarray(array, dtype=np.float32)
    if converted.size and not (np.isfinite(converted.min()) and np.isfinite(converted.max())):  # (no temporary)
        row, col = (int(i) for i in np.argwhere(~np.isfinite(converted))[0])
        raise ValueError(f"{name} row {row} holds NaN or infinite values as float32: {float(array[row, col])!r}")
    return converted


def _repeated_rows(units: np.ndarray) -> np.ndarray:
    """Whether each dense unit row may equal another one (equal rows always do; a rare hash collision only
    costs that row the slower product of `_dot`), hashed in small row blocks (the score budget is not spent)."""
    weights = np.random.default_rng(0).integers(1, 2**63, size=units.shape[1], dtype=np.uint64)
    hashes = np.empty(units.shape[0], dtype=np.uint64)
    step = max(1, 2**14 // max(1, units.shape[1]))
    for r0 in range(0, units.shape[0], step):  # (+ 0 makes −0.0 0.0; the sum wraps modulo 2**64)
        bits = (units[r0 : r0 + step] + np.float32(0)).view(np.uint32).astype(np.uint64)
        hashes[r0 : r0 + step] = (bits * weights).sum(axis=1, dtype=np.uint64)
    ordered = np.sort(hashes)
    shared = ordered[1:][ordered[1:] == ordered[:-1]]  # (sorted)
    if not shared.size:
        return np.zeros(units.shape[0], dtype=bool)
    return shared[np.minimum(np.searchsorted(shared, hashes), shared.size - 1)] == hashes


def _dot(queries: Any, units: tuple[Any, np.ndarray | None], start: int, stop: int) -> np.ndarray:
    """Scores of the query block against units start:stop as a dense float32 (queries × units) block. Dense:
    ``units`` = (rows, `_repeated_rows`), each repeated row scored by a product of its own, the same for every
    copy wherever it lies; sparse: (CSR rows, None), sliced without copying their values, multiplied sparse (a
    row's sums in its own order), then expanded."""
    units, repeated = units
    if isinstance(queries, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):  # (an overflow is refused by `_block_keys`)
            block = queries @ units[start:stop].T
            again = start + np.flatnonzero(repeated[start:stop])
            step = max(1, block.size // max(1, units.shape[1]))  # (copied rows take no more than the block)
            for rows in (again[a : a + step] for a in range(0, again.size, step)):  # a matrix-vector product each
                block[:, rows - start] = np.matmul(queries, units[rows, :, None])[:, :, 0].T
        return block
    import scipy.sparse

    first, last = int(units.indptr[start]), int(units.indptr[stop])
    rows = scipy.sparse.csr_matrix(
        (units.data[first:last], units.indices[first:last], units.indptr[start : stop + 1] - first),
        shape=(stop - start, units.shape[1]),
        copy=False,
    )
    return (rows @ queries).toarray().T


def _document_blocks(starts: np.ndarray, max_cols: int):
    """Ranges [d0, d1) of whole documents whose units fit ``max_cols`` (a larger document stands alone)."""
    n_docs = len(starts) - 1
    d0 = 0
    while d0 < n_docs:
        d1 = int(np.searchsorted(starts, starts[d0] + max_cols, side="right")) - 1
        d1 = min(n_docs, max(d1, d0 + 1))
        yield d0, d1
        d0 = d1


def _block_keys(
    queries: Any, units: tuple[Any, np.ndarray | None], starts: np.ndarray, d0: int, d1: int, max_cols: int, tie_rank: np.ndarray
) -> np.ndarray:
    """int64 keys (score bits << 32 | tie rank) of queries × documents d0..d1, each document at its best unit."""
    u0, u1 = int(starts[d0]), int(starts[d1])
    if u1 - u0 <= max_cols:
        block = _dot(queries, units, u0, u1)
        if u1 - u0 != d1 - d0:  # several units per document: best unit per document
            block = np.maximum.reduceat(block, starts[d0:d1] - u0, axis=1)
    else:  # one document with more units than a block holds: its maximum, sub-block by sub-block
        block = None
        for s0 in range(u0, u1, max_cols):
            best = _dot(queries, units, s0, min(u1, s0 + max_cols)).max(axis=1, keepdims=True)
            block = best if block is None else np.maximum(block, best)
    block = np.ascontiguousarray(block, dtype=np.float32)
    if not (np.isfinite(block.min()) and np.isfinite(block.max())):  # finite inputs past ±1.8e19: NaN sorted by sign
        d = d0 + int(np.flatnonzero(~np.isfinite(block).all(axis=0))[0])
        raise ValueError(f"document row {d}: its dot product with a query overflows float32 (past ±3.4e38); "
                         "scale the vectors down (L2-normalise them for cosine)")
    keys = _flip_order(block.view(np.int32)).astype(np.int64)
    del block
    keys <<= 32
    keys |= tie_rank[d0:d1][None, :]
    return keys
