"""The row schema (`tokenpool.io.rows.RowSchema`) of every output kind, for corpus jobs and Ray's batch class
alike: a new output kind is one function here. The first column is the input record's 0-based number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import CorpusError, is_int
from ..io.rows import OFFSET, RAGGED, TEXT, VECTOR, Column, Parts, RowSchema

CHUNKS_SUFFIX = ".chunks.jsonl"  # the row index of an .npy of chunk rows
TOKENS_SUFFIX = ".tokens.jsonl"  # ... of token rows
_LINE = Column("line", show="none")  # where each row's record starts in the input (the --skip-empty lines file)
_ID = Column("id", TEXT, optional=True)  # the record's own id (--id-field), when the input has ids


def record_id(value: Any, place: Callable[[int], str], number: int) -> str | None:
    """A record's ``--id-field`` value as the ``id`` column stores it: a string as given, an integer in decimal,
    None when the record has none. Anything else is a `CorpusError` naming record ``number`` by ``place``
    (`EmbedJob.place`, called only then): its text would be Python's spelling (``True``, ``1e+16``,
    ``{'k': 1}``, ``b'…'``), not the input's."""
    if value is None or isinstance(value, str):
        return value
    if is_int(value):
        return str(int(value))
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
    raise CorpusError(f"{place(number)}: the id must be a string or an integer, got {type(value).__name__} {shown}")


def vector_rows(width: int, dtype: str = "<f4") -> RowSchema:
    """One pooled vector (or its codes) per record: ``id`` (the record number), ``embedding``."""
    return RowSchema((Column("id", part="doc"), Column("embedding", VECTOR, dtype, width), _LINE), array="embedding")


def sparse_rows(vocabulary: int, decode: Callable[[Any], list[str]] | None = None) -> RowSchema:
    """One SPLADE row per record: ``id``, ``indices`` and ``values`` of its non-zeros (``tokens``: their
    vocabulary entries, with ``decode``)."""
    columns = [
        Column("id", part="doc"),
        Column("indices", RAGGED, "<i4", lengths="nnz"),
        Column("values", RAGGED, "<f4", lengths="nnz"),
        *([Column("tokens", RAGGED, "str", lengths="nnz")] if decode else []),
        Column("nnz", show="none"),
        _LINE,
    ]
    derived = {"tokens": lambda parts: decode(parts["indices"])} if decode else {}
    return RowSchema(tuple(columns), ascii=False, derived=derived, vocabulary=vocabulary)


def chunk_rows(dimension: int) -> RowSchema:
    """One row per chunk of a record: ``doc``, ``id``, ``chunk`` (its number in the record), its characters
    ``start``..``end`` and its ``embedding``."""
    columns = (Column("doc"), _ID, Column("chunk"), Column("start"), Column("end"),
               Column("embedding", VECTOR, "<f4", dimension))  # fmt: skip
    return RowSchema(columns, array="embedding", sidecar=CHUNKS_SUFFIX, per_record=False)


def token_rows(width: int) -> RowSchema:
    """One row per record with every token: ``doc``, ``id``, ``n_tokens``, ``token_ids``, ``token_spans``
    (characters ``[start, end)``, ``[-1, -1]`` for tokens not from the text) and ``token_embeddings``; the .npy
    index gives each row's ``offset`` (its first token's row in the array)."""
    columns = (
        Column("doc"),
        _ID,
        Column("offset", OFFSET, show="sidecar"),
        Column("n_tokens"),
        Column("token_ids", RAGGED, lengths="n_tokens"),
        Column("token_spans", RAGGED, width=2, lengths="n_tokens"),
        Column("token_embeddings", RAGGED, "<f4", width, lengths="n_tokens"),
    )
    return RowSchema(columns, array="token_embeddings", sidecar=TOKENS_SUFFIX)


def row_indexes() -> dict[str, RowSchema]:
    """The schemas whose .npy output has a row index beside it, by the name messages give that index."""
    return {"chunk index": chunk_rows(0), "token index": token_rows(0)}


def chunk_parts(result: Any, docs: np.ndarray, ids: list | None = None) -> Parts:
    """`chunk_rows` parts of an `Encoder.encode_chunks` result: ``docs[i]`` is text i's record number, ``ids[i]``
    its id (or None)."""
    ids = [None] * len(docs) if ids is None else ids
    return {
        "doc": docs[result.doc] if len(result) else np.zeros(0, np.int64),
        "id": [ids[d] for d in result.doc.tolist()],
        "chunk": result.chunk,
        "start": result.start,
        "end": result.end,
        "embedding": np.ascontiguousarray(result.vectors, dtype=np.float32),
    }


def token_parts(docs: np.ndarray, ids: list | None, pairs: list, states: list, width: int) -> Parts:
    """`token_rows` parts: ``pairs[i]`` the token ids and spans of text i (`Encoder.token_spans`), ``states[i]``
    its token vectors (`Encoder.encode(..., output="tokens")`)."""
    for k, ((token_ids, _), vectors) in enumerate(zip(pairs, states, strict=True)):
        if len(vectors) != len(token_ids):
            raise RuntimeError(f"text {k}: {len(vectors)} token vectors but {len(token_ids)} token ids")
    return {
        "doc": np.asarray(docs, dtype=np.int64),
        "id": [None] * len(docs) if ids is None else ids,
        "n_tokens": np.array([len(token_ids) for token_ids, _ in pairs], dtype=np.int64),
        "token_ids": np.concatenate([t for t, _ in pairs]) if pairs else np.zeros(0, np.int64),
        "token_spans": np.concatenate([s for _, s in pairs]) if pairs else np.zeros((0, 2), np.int64),
        "token_embeddings": np.concatenate(states) if states else np.zeros((0, width), np.float32),
    }
