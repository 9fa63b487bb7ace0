"""Document units: the vectors (whole document, chunks or windows) a retrieval mode gives each document, which
scores as its best unit. Dense rows are compared by cosine, a sparse model's (SPLADE, BM25) by dot product, as
CSR rows (`tokenpool.core.sparse.SparseRows`) so that no N × vocabulary array exists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.sparse import SparseRows, concat_rows
from .common import unit_rows

__all__ = ["DocumentUnits", "Vectors", "check_units", "rows_of", "search_form", "stack_rows"]

Vectors = np.ndarray | SparseRows  # float32 (U, D) dense rows, or CSR rows over a vocabulary


@dataclass
class DocumentUnits:
    """Vectors of document units: row i belongs to document ``doc_index[i]`` (a row of the corpus). Every
    document needs at least one unit. ``vectors``: dense float32 (U, D) or `SparseRows` (sparse models)."""

    doc_index: np.ndarray  # int64 (U,)
    vectors: Vectors


def rows_of(vectors: Vectors) -> int:
    """How many rows ``vectors`` holds (dense or sparse)."""
    return vectors.n_rows if isinstance(vectors, SparseRows) else len(vectors)


def stack_rows(parts: Sequence[Vectors]) -> Vectors:
    """The rows of ``parts`` one after another, dense (float32) or sparse alike."""
    if parts and isinstance(parts[0], SparseRows):
        return concat_rows(parts, parts[0].n_cols)
    return np.concatenate(parts).astype(np.float32, copy=False)


def search_form(vectors: Vectors) -> Vectors:
    """The rows as searched: dense rows at unit length (so dot product = cosine; a zero row stays zero),
    sparse rows as they are (dot product). NaN or infinite values are refused, naming the row."""
    if isinstance(vectors, SparseRows):
        bad = np.flatnonzero(~np.isfinite(vectors.values))
        rows = np.searchsorted(vectors.indptr, bad[:1], side="right") - 1
    else:
        vectors = np.asarray(vectors, dtype=np.float32)
        rows = np.flatnonzero(~np.isfinite(vectors).all(axis=-1))
    if len(rows):
        raise ValueError(
            f"vector {rows[0]} holds NaN or infinite values (the model overflowed; try --dtype float32)"
        )
    return vectors if isinstance(vectors, SparseRows) else unit_rows(vectors, np.float32)


def check_units(units: Mapping[Any, DocumentUnits], label: Any, mode: str, doc_ids: Sequence[str]) -> DocumentUnits:
    """``units[label]``, after checking that it is a `DocumentUnits` with one document index per vector,
    every index a row of the corpus and every document present."""
    unit = units.get(label) if isinstance(units, Mapping) else None
    if not isinstance(unit, DocumentUnits):
        raise ValueError(f"document mode {mode!r} returned no DocumentUnits for pooling {label!r}")
    doc_index = np.asarray(unit.doc_index)
    if doc_index.ndim != 1 or len(doc_index) != rows_of(unit.vectors):
        raise ValueError(
            f"document mode {mode!r}: {len(doc_index)} document indices for {rows_of(unit.vectors)} vectors"
        )
    if not np.issubdtype(doc_index.dtype, np.integer) and len(doc_index):
        raise ValueError(f"document mode {mode!r}: doc_index must hold integers, got {doc_index.dtype}")
    n_docs = len(doc_ids)
    if len(doc_index) and (doc_index.min() < 0 or doc_index.max() >= n_docs):
        raise ValueError(f"document mode {mode!r} gave a document index outside 0..{n_docs - 1}")
    counts = np.bincount(doc_index.astype(np.int64), minlength=n_docs)
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"document mode {mode!r} gave no vector for document {doc_ids[missing]!r}")
    return unit
