"""Chunk vectors of long documents: chunk plans (fixed token counts, text boundaries, character spans), pooled
late (each chunk's tokens from the whole document's windows) or naive (each chunk's text encoded alone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.chunking import BoundaryChunks, TokenChunks, check_spans, parse_chunks, token_chunks
from ..core.sparse import keep_largest
from ..errors import ModelOutputError, OptionError
from .boundaries import splitter_for
from .document_tokens import (
    DocumentTokens,
    checked_span_chunks,
    chunk_characters,
    joined_characters,
    tokenize_document,
)
from .windows import StopCheck, WindowEngine, engine_for, stopping

# a document's (body tokens, chunk token ranges or None for one whole-sequence unit, chunk character spans)
ChunkPlan = tuple["DocumentTokens | None", "list[tuple[int, int]] | None", list[tuple[int, int]]]

__all__ = ["ChunkPlan", "ChunkSpans", "ChunkEmbeddings", "plan_chunks", "chunk_spans", "encode_chunks", "encode_truncated"]


@dataclass
class ChunkSpans:
    """One row per chunk: its document (position in the input), its number within the document and its
    character span ``[start, end)`` in the document's text."""

    doc: np.ndarray  # int64 (M,)
    chunk: np.ndarray  # int64 (M,)
    start: np.ndarray  # int64 (M,)
    end: np.ndarray  # int64 (M,)

    def __len__(self) -> int:
        return len(self.doc)


@dataclass
class ChunkEmbeddings(ChunkSpans):
    """`ChunkSpans` with each chunk's vector; naive chunks also with their token counts (None when late)."""

    vectors: np.ndarray  # float32 (M, D)
    # naive: the tokens each chunk's text was encoded from (special and prompt tokens included), and those cut
    # from it to max_length (a span, or a document read whole; token and boundary chunks over it are refused)
    tokens: np.ndarray | None = None  # int64 (M,)
    truncated: np.ndarray | None = None  # int64 (M,)


def chunk_plan(
    encoder: Any, index: Any, text: str, spec: Any, spans: Any, splitter: Any, whole: bool, prompt: str | None = None
) -> ChunkPlan:
    """(body tokens, chunk token ranges, chunk character spans) of one document (read after ``prompt``). A blank
    document (empty or only whitespace: what ``--skip-empty`` drops, known without the model) is an error, or
    (``whole``) one unit over its whole sequence (ranges None) spanning its text; so is a text the tokenizer reads
    as no token (a zero-width space, control characters), as `encode` embeds it, unless its spans name chunks."""
    blank = not text.strip()  # (a byte-level BPE has whitespace tokens: still blank)
    if blank and not whole:
        raise OptionError(f"document {index}: {'empty' if not text else 'only whitespace'}; it has no chunk to embed")
    tokens = tokenize_document(encoder.tokenization, text, prompt)
    if blank or (len(tokens) == 0 and (whole or spec != "spans")):
        # its spans are still checked (a list of pairs within the text); none is the only choice for ""
        if spec == "spans" and not (isinstance(spans, (list, tuple, np.ndarray)) and len(spans) == 0):
            check_spans(spans, len(text), index)
        return tokens, None, [(0, len(text))]
    if isinstance(spec, TokenChunks):
        ranges = token_chunks(len(tokens), spec)
        chars = chunk_characters(tokens, text, ranges)
    elif isinstance(spec, BoundaryChunks):  # character spans from the splitter, through the span path's mapping
        chars, ranges = splitter.chunks(text, tokens, index)
    else:
        chars = check_spans(spans, len(text), index)  # read once: a document's spans may be an iterator
        ranges = checked_span_chunks(tokens, chars, index)
    return tokens, ranges, chars


def plan_chunks(
    encoder: Any, items: list[str], request: Any, *, prompt: str | None, spans: Any = None, names: Any = None
) -> tuple[WindowEngine, list[ChunkPlan]]:
    """The window engine and every document's chunk plan for a checked chunk `EncodeRequest`."""
    spec = parse_chunks(request.chunks)
    spans = None if spans is None else list(spans)
    if spec == "spans":
        if spans is None or len(spans) != len(items):
            got = "none" if spans is None else len(spans)
            raise OptionError(f"chunks='spans' needs one list of spans per text: {len(items)} texts, {got} given")
    elif spans is not None:
        raise OptionError("spans are given only with chunks='spans'")
    names = None if names is None else list(names)
    if names is not None and len(names) != len(items):  # (a short list was an IndexError mid-plan)
        raise OptionError(f"names must name every text: {len(items)} texts, {len(names)} names given")
    engine = engine_for(encoder, request, prompt, truncate=request.chunking == "naive")  # naive: no windows
    splitter = splitter_for(encoder.tokenization, spec)
    whole = request.empty_documents == "whole"
    plans = []
    for i, text in enumerate(items):
        name = i if names is None else names[i]
        plans.append(chunk_plan(encoder, name, text, spec, None if spans is None else spans[i], splitter, whole, prompt))
        capacity = None if plans[-1][0] is None else engine.capacity_of(name, plans[-1][0])  # (its own prompt tokens)
        if capacity is not None and isinstance(spec, (TokenChunks, BoundaryChunks)) and spec.size > capacity:
            raise OptionError(
                f"document {name}: {spec.size_name} {spec.size} exceeds the {capacity} text tokens that fit its window "
                f"(max_length {encoder.max_length} less special and prompt tokens) in {request.spell('chunks', short=True)}"
            )
    return engine, plans


def chunk_spans(plans: list[ChunkPlan]) -> ChunkSpans:
    """The rows of these chunk plans: document, chunk number, character span."""
    counts = [1 if ranges is None else len(ranges) for _, ranges, _ in plans]
    doc = np.repeat(np.arange(len(plans), dtype=np.int64), counts)
    chunk = np.concatenate([np.arange(c, dtype=np.int64) for c in counts]) if counts else np.zeros(0, np.int64)
    chars = np.array([pair for _, _, cs in plans for pair in cs], dtype=np.int64).reshape(-1, 2)
    return ChunkSpans(doc, chunk, chars[:, 0].copy(), chars[:, 1].copy())


def encode_chunks(
    encoder: Any, items: list[str], request: Any, *, prompt: str | None, spans: Any = None, names: Any = None,
    should_stop: StopCheck | None = None,
) -> ChunkEmbeddings:  # fmt: skip
    """One vector per chunk of every document (`Encoder.encode_chunks`); ``names`` name the documents in
    messages (default: their positions); ``should_stop`` True raises `tokenpool.model.windows.Cancelled`."""
    engine, plans = plan_chunks(encoder, items, request, prompt=prompt, spans=spans, names=names)
    rows, spec = chunk_spans(plans), parse_chunks(request.chunks)
    naive = request.chunking == "naive"
    counts = None
    try:
        if naive:
            texts = [items[i][s:e] for i, (_, _, cs) in enumerate(plans) for s, e in cs]
            counts = _token_counts(encoder, texts, prompt)
            if texts and spec != "spans":  # (a span is the caller's text: truncated)
                _check_untruncated(encoder, texts, counts[0] + counts[1], rows, plans, names, request, prompt)
            vectors = encode_truncated(encoder, texts, request, prompt=prompt, should_stop=should_stop)
        else:
            vectors = np.empty((len(rows), encoder.output_width(request.pooling, request.finish)), dtype=np.float32)
            first_row = np.searchsorted(rows.doc, np.arange(len(plans) + 1)).astype(np.int64)
            docs = (engine.plan(i, tokens, ranges, False) for i, (tokens, ranges, _) in enumerate(plans))
            for done in engine.run(docs, request.batch_size, request.max_batch_tokens, should_stop):
                vectors[first_row[done.index] : first_row[done.index + 1]] = engine.vectors(done)
            if request.top_k is not None:  # a sparse model's max_active_dims, as naive chunks keep it
                vectors = keep_largest(vectors, request.top_k)
    except ModelOutputError as err:  # name the document (and chunk), as the other errors of this call do
        if err.index is None:
            raise
        position = int(rows.doc[err.index]) if naive else err.index
        name = position if names is None else names[position]
        where = f", chunk {int(rows.chunk[err.index])}" if naive else ""
        raise err.at(f"document {name}{where}", position) from None
    return ChunkEmbeddings(rows.doc, rows.chunk, rows.start, rows.end, vectors, *(counts or ()))


def _token_counts(encoder: Any, texts: list[str], prompt: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, truncated)`` of naive chunk texts: the tokens `encode` runs for each (``prompt + text`` with the
    special tokens, cut to max_length as there) and the tokens cut from it, each text tokenised whole once."""
    ids, counts = encoder.tokenization.encode(texts, prompt, exact_counts=True)
    tokens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    return tokens, counts - tokens


def _check_untruncated(
    encoder: Any, texts: list[str], counts: np.ndarray, rows: ChunkSpans, plans: list[ChunkPlan], names: Any,
    request: Any, prompt: str | None,
) -> None:
    """Naive token and boundary chunks must fit the model: a chunk's text tokenised alone (``counts``, with the
    special and prompt tokens) can be more tokens (a word cut at its edge splits differently; a prompt's last word
    joins its first), and one over ``max_length`` is an error, not a silently truncated vector (a whole-text row
    of ``empty_documents="whole"`` is no chunk: encoded as `encode` encodes it)."""
    chunked = np.array([plans[doc][1] is not None for doc in rows.doc], dtype=bool)
    over = np.flatnonzero((counts > encoder.max_length) & chunked)
    if len(over):
        k, size_name = int(over[0]), parse_chunks(request.chunks).size_name
        advice = f"use a smaller {size_name}"
        found = _character_over(encoder, texts, over, prompt)
        if found is not None:  # chunks never cut a character apart: one over alone fits no chunk size
            k, start, end, alone = found
            advice = (f"its character at [{int(rows.start[k]) + start}, {int(rows.start[k]) + end}] ({texts[k][start:end]!r:.40}, "
                      f"{end - start} code points) alone is {alone} tokens with them, which no {size_name} avoids; "
                      f"use {request.spell('chunking', 'late')}")
        doc, at = int(rows.doc[k]), int(rows.start[k])
        raise OptionError(
            f"document {doc if names is None else names[doc]}, chunk {int(rows.chunk[k])}: its text "
            f"[{at}, {int(rows.end[k])}] ({texts[k]!r:.40}) is {int(counts[k])} tokens tokenised "
            f"alone with the special and prompt tokens, over max_length {encoder.max_length}: naive chunking "
            f"would truncate it; {advice} ({len(over)} of {len(texts)} chunks are over)"
        )


def _character_over(
    encoder: Any, texts: list[str], over: np.ndarray, prompt: str | None
) -> tuple[int, int, int, int] | None:
    """``(chunk, start, end, tokens)`` of the first character of several code points (a letter and its marks, a
    ZWJ sequence) in the chunks ``over`` whose text alone, with the special and prompt tokens, is over
    max_length; None if there is none."""
    spans = [(k, s, e) for k in over.tolist() for s, e in joined_characters(texts[k])]
    counts = sum(_token_counts(encoder, [texts[k][s:e] for k, s, e in spans], prompt)) if spans else []
    hit = next((n for n, count in enumerate(counts) if count > encoder.max_length), None)
    return None if hit is None else (*spans[hit], int(counts[hit]))


def encode_truncated(
    encoder: Any, texts: list[str], request: Any, *, prompt: str | None, should_stop: StopCheck | None = None
) -> np.ndarray:
    """The encoder's ordinary (truncating) encode of ``texts`` with a request's pooling and budget, whatever
    its long-document mode; ``should_stop``: as in `encode_chunks`."""
    out = np.empty((len(texts), encoder.output_width(request.pooling, request.finish)), dtype=np.float32)
    batches = encoder.iter_vector_batches(
        texts, batch_size=request.batch_size, prompt=prompt, max_batch_tokens=request.max_batch_tokens,
        long_documents="truncate", pooling=request.pooling, finish=request.finish,
    )  # fmt: skip
    for indices, vectors in stopping(batches, should_stop):
        out[indices] = vectors
    return out
