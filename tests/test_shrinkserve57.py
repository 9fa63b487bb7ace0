"""Stop 57, serve shrink: the server's --max-chunks count against `core.chunking.token_chunks`, the ranges the
chunk plan really makes (the server counts them without building them: a body holds millions of tokens)."""

from __future__ import annotations

import asyncio
import re

from serve_fakes import FakeRunner

from tokenpool.core.chunking import TokenChunks, token_chunks
from tokenpool.serve.fields import DOCUMENTS, EmbedRequest
from tokenpool.serve.http import ApiError
from tokenpool.serve.metrics import Metrics
from tokenpool.serve.service import Model
from tokenpool.serve.settings import ServeSettings

COPIES = 3  # documents of one length per request: a count of 0 (not refused) tells from 1 (3 > --max-chunks 1)


class BodyRunner(FakeRunner):
    """A fake whose documents have ``body`` tokens each after the prompt (`EncoderRunner.body_lengths`)."""

    body = 0

    def body_lengths(self, documents, prompt):
        return [self.body] * len(documents)


def _served_count(model: Model, chunks: str, n: int) -> int:
    """The chunk count --max-chunks refuses for `COPIES` documents of ``n`` body tokens, read off its message."""
    model.runner.body = n
    req = EmbedRequest(protocol=DOCUMENTS, texts=["doc"] * COPIES, chunks=chunks)
    try:
        asyncio.run(model._check_chunk_count(req, [n] * COPIES, "prompt: "))
    except ApiError as err:
        return int(re.search(r"makes (?:at least )?(\d+) chunks", err.message).group(1))
    return 0


def test_max_chunks_count_is_token_chunks_count():
    """Every size, overlap and body length: the server's count is `token_chunks`' (a document of no body
    token is one unit, as `chunk_plan` reads it whole); "boundaries:MAX" counts the fewest, MAX tokens apart."""
    model = Model(BodyRunner(), ("fake",), ServeSettings(max_chunks=1), Metrics())
    for size in range(1, 10):
        for overlap in range(size):
            for n in (*range(0, 40), 97, 1000, 4099):
                expected = COPIES * max(1, len(token_chunks(n, TokenChunks(size, overlap))))
                assert _served_count(model, f"tokens:{size}:{overlap}", n) == expected, (size, overlap, n)
                fewest = COPIES * max(1, len(token_chunks(n, TokenChunks(size, 0))))
                assert _served_count(model, f"boundaries:{size}:{overlap}", n) == fewest, (size, overlap, n)


def test_chunk_count_is_the_length_of_token_chunks():
    """`core.chunking.chunk_count` (the server's --max-chunks count) against the ranges `token_chunks` builds,
    for every size, overlap and length."""
    from tokenpool.core.chunking import BoundaryChunks, chunk_count

    for size in range(1, 12):
        for overlap in range(size):
            for n in (*range(0, 50), 1000):
                assert chunk_count(n, TokenChunks(size, overlap)) == max(1, len(token_chunks(n, TokenChunks(size, overlap))))
                assert chunk_count(n, BoundaryChunks(size, overlap)) == max(1, len(token_chunks(n, TokenChunks(size, 0))))
