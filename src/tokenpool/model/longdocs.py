"""Long documents, by concept: `tokenpool.model.document_tokens` (a document's body tokens and their
character spans), `tokenpool.model.windows` (overlapping windows and pooling as they come out) and
`tokenpool.model.chunks` (late and naive chunk vectors); this module names their public pieces in one place."""

from __future__ import annotations

from ..core.chunking import CHUNKINGS, BoundaryChunks, TokenChunks, parse_chunks, token_chunks
from .boundaries import splitter_for
from .chunks import ChunkEmbeddings, ChunkSpans, chunk_plan, chunk_spans, encode_chunks, plan_chunks
from .document_tokens import SLICE_CHARS, DocumentTokens, span_chunks, token_range, tokenize_document
from .options import LONG_DOCUMENT_MODES
from .windows import Cancelled, Layout, WindowEngine, check_stride, owned_ranges, token_spans, window_starts

__all__ = [
    "LONG_DOCUMENT_MODES", "CHUNKINGS", "SLICE_CHARS", "TokenChunks", "BoundaryChunks", "ChunkSpans",
    "ChunkEmbeddings", "parse_chunks", "Cancelled", "Layout", "WindowEngine", "DocumentTokens",
    "tokenize_document", "window_starts", "owned_ranges", "check_stride", "token_chunks", "token_range",
    "span_chunks", "token_spans", "plan_chunks", "chunk_plan", "chunk_spans", "encode_chunks", "splitter_for",
]  # fmt: skip
