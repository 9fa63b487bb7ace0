"""Retrieval modes that read whole documents: ``windows``, ``late-N`` / ``naive-N`` (chunks without overlap,
capped at a window's text tokens) and ``late-boundaries-N`` / ``naive-boundaries-N`` (whole paragraphs /
sentences of at most N tokens; needs semantic-text-splitter). ``windows`` and ``late-N`` run the model once
per pooling label (the window engine pools one strategy set per pass), ``naive-N`` once for all labels."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.chunking import BoundaryChunks, TokenChunks
from ..core.sparse import sparsify
from ..core.strategies import parse_strategies
from ..model.texts import progress, resolve_prompt
from .common import encode_every_way, pooling_of
from .units import DocumentUnits, stack_rows

__all__ = ["WHOLE_DOCUMENT_MODES"]


def _spec(size: int | None, boundaries: bool, capacity: int) -> TokenChunks | BoundaryChunks | None:
    """The chunk spec of a mode for windows of ``capacity`` text tokens (None: whole documents)."""
    return None if size is None else (BoundaryChunks if boundaries else TokenChunks)(min(size, capacity), 0)


def _splitter(encoder: Any, chunk: Any) -> Any:
    """`tokenpool.model.longdocs.splitter_for` the encoder's tokenizer (built once per mode run)."""
    from ..model.longdocs import splitter_for

    return splitter_for(encoder.tokenization, chunk)


def _mode(units: Any, size: int | None, boundaries: bool = False) -> Any:
    """The `DocumentMode` whose units ``units`` (`_late` or `_naive`) makes: chunks of ``size`` tokens (None:
    the whole document), of whole paragraphs / sentences with ``boundaries``."""

    def mode(
        encoder: Any, texts: Sequence[str], labels: Sequence[Any], *, batch_size: int, prompt: str | None,
        prompt_name: str | None, progress: bool, max_batch_tokens: int | None = None,
    ) -> dict[Any, Any]:  # fmt: skip
        prompt_text = resolve_prompt(encoder.config, prompt, prompt_name, where=encoder.model_path)
        options = dict(batch_size=batch_size, prompt=prompt, prompt_name=prompt_name, progress=progress,
                       max_batch_tokens=max_batch_tokens)  # fmt: skip
        return units(encoder, texts, labels, prompt_text, functools.partial(_spec, size, boundaries), options)

    if boundaries:  # checked before any mode runs: its splitter can be built (library, fast tokenizer)
        mode.prepare = lambda encoder: _splitter(encoder, BoundaryChunks(1, 0))
    return mode


def _late(
    encoder: Any, texts: Sequence[str], labels: Sequence[Any], prompt: str | None, chunking: Any, options: Any
) -> dict[Any, Any]:
    """Units pooled from each document's windows (chunked as ``chunking(capacity)`` says), one model pass per
    label: the window engine pools one strategy set per pass (None: as the encoder pools)."""
    from ..model.longdocs import WindowEngine

    out = {}
    for label in labels:
        own = pooling_of(encoder, label) is None  # (the encoder's own pooling, its Dense modules included)
        pooling = {} if own else {"members": parse_strategies(label), "plain": True}  # a+b: both
        engine = WindowEngine(encoder, prompt=prompt, stride=encoder.window_stride, **pooling)
        counts = np.zeros(len(texts), dtype=np.int64)
        vectors: dict[int, Any] = {}
        chunk = chunking(engine.layout.capacity)
        plans = _plans(encoder, engine, texts, chunk, counts, _splitter(encoder, chunk), prompt)
        with progress(len(texts), options["progress"], options["batch_size"], "documents", "progress") as update:
            for done in engine.run(plans, options["batch_size"], options["max_batch_tokens"]):
                pooled = engine.vectors(done)  # a sparse model's rows kept as CSR, max_active_dims as encode keeps
                vectors[done.index] = sparsify(pooled, top_k=encoder.max_active_dims) if encoder.is_sparse else pooled
                update(1)
        doc_index = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        out[label] = DocumentUnits(doc_index, stack_rows([vectors[i] for i in range(len(texts))]))
    return out


def _plans(
    encoder: Any, engine: Any, texts: Sequence[str], chunk: Any, counts: np.ndarray, splitter: Any,
    prompt: str | None,
) -> Any:
    """Each document's window plan: one unit over all its tokens (``chunk`` None, or a document of no token)
    or one per chunk (as `Encoder.encode_chunks` plans them, ``prompt + text`` read whole); the number of units
    goes to ``counts``."""
    from ..model.longdocs import chunk_plan, tokenize_document

    for i, text in enumerate(texts):
        if chunk is None:
            tokens, ranges = tokenize_document(encoder.tokenization, text, prompt), None
        else:
            tokens, ranges, _ = chunk_plan(encoder, i, text, chunk, None, splitter, whole=True, prompt=prompt)
        counts[i] = 1 if ranges is None else len(ranges)
        yield engine.plan(i, tokens, ranges, False)


def _naive(
    encoder: Any, texts: Sequence[str], labels: Sequence[Any], prompt: str | None, chunking: Any, options: Any
) -> dict[Any, Any]:
    """Units from each chunk's text encoded alone, one model pass for every label."""
    from ..model.longdocs import Layout, chunk_plan

    chunk = chunking(Layout.of(encoder.tokenization, prompt).capacity)
    splitter = _splitter(encoder, chunk)
    pieces, owners = [], []
    for i, text in enumerate(texts):
        spans = chunk_plan(encoder, i, text, chunk, None, splitter, whole=True, prompt=prompt)[2]  # (no token: whole)
        pieces.extend(text[s:e] for s, e in spans)
        owners.extend([i] * len(spans))
    vectors = encode_every_way(encoder, pieces, labels, desc="chunks", sparse_rows=True, **options)
    doc_index = np.array(owners, dtype=np.int64)
    return {label: DocumentUnits(doc_index=doc_index, vectors=v) for label, v in vectors.items()}


# windows, late-128, late-256, naive-128, naive-256, late-boundaries-128, ..., naive-boundaries-256
WHOLE_DOCUMENT_MODES = {"windows": _mode(_late, None)} | {
    f"{kind}{'-boundaries' if boundaries else ''}-{size}": _mode(units, size, boundaries)
    for boundaries in (False, True)
    for kind, units in (("late", _late), ("naive", _naive))
    for size in (128, 256)
}
