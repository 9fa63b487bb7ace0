"""Long documents: overlapping windows, document vectors over every token, chunk vectors (late and naive),
per-token output.

A document's text is tokenised without truncation (in character slices of `SLICE_CHARS`, cut at whitespace,
with the fast tokenizer's character offsets) into its *body* tokens — no special tokens. The body is split into
windows of at most ``capacity`` tokens (``max_length`` less the special tokens and the prompt), each window
starting ``stride`` tokens after the previous one and the last one ending at the document's end. Every window
is run as its own row: ``prefix + prompt + body[s:e] + suffix`` (the tokenizer's own special tokens, plus EOS
where the encoder appends it). Every body token takes its hidden state from the window whose centre is nearest
to it — the window in which it has the most context on its poorer side, min(tokens before, tokens after);
ties go to the earlier window. The prefix and prompt come from the first window, the suffix from the last.

A *unit* is what one vector is pooled over: the whole token sequence (``long_documents="windows"``, the
document's true mean / max / weighted mean / first / last token, each token counted once), or a chunk's body
tokens (late chunking). Units are pooled as windows come out of the model, in float64 running sums, so memory is
O(hidden) per unit, never O(tokens × hidden); a document's token ids and offsets (~24 bytes per token) are what
is held per document.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.chunking import CHUNKINGS, BoundaryChunks, TokenChunks, check_spans, parse_chunks, token_chunks
from ..core.pooling import finish, pool
from ..core.strategies import Pooling
from ..errors import ModelOutputError, OptionError
from .batching import check_finite, forward_splitting, longest_first_batches

__all__ = [
    "LONG_DOCUMENT_MODES",
    "CHUNKINGS",
    "SLICE_CHARS",
    "TokenChunks",
    "BoundaryChunks",
    "ChunkEmbeddings",
    "parse_chunks",
    "Layout",
    "DocumentTokens",
    "tokenize_document",
    "window_starts",
    "owned_ranges",
    "token_chunks",
    "span_chunks",
    "token_spans",
]

LONG_DOCUMENT_MODES = ("truncate", "windows")
# Characters tokenised per call: a document longer than this is tokenised slice by slice (cut at whitespace).
SLICE_CHARS = 200_000
# Window rows length-sorted together (as `Tokenization.batches` sorts SORT_CHUNK texts).
SLICES_PER_CALL = 16  # slices per tokenizer call (it encodes a list on its own threads)
ROW_BUFFER = 16384


# ---------------------------------------------------------------------------------------------- chunk specs


@dataclass
class ChunkEmbeddings:
    """One row per chunk: its document (position in the input), its number within the document, its character
    span ``[start, end)`` in the document's text, and its vector."""

    doc: np.ndarray  # int64 (M,)
    chunk: np.ndarray  # int64 (M,)
    start: np.ndarray  # int64 (M,)
    end: np.ndarray  # int64 (M,)
    vectors: np.ndarray  # float32 (M, D)

    def __len__(self) -> int:
        return len(self.doc)


# ---------------------------------------------------------------------------------------------- tokenising


@dataclass
class DocumentTokens:
    """A document's body tokens (no special tokens) and their character spans in the original text."""

    ids: np.ndarray  # int64 (n,)
    starts: np.ndarray  # int64 (n,)
    ends: np.ndarray  # int64 (n,)

    def __len__(self) -> int:
        return len(self.ids)


def _same_length_lower(text: str) -> str:
    """``text.lower()``, except that characters whose lower case is longer stay as they are (offsets stay
    valid)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(low if len(low := ch.lower()) == 1 else ch for ch in text)


def _cut(text: str, start: int, limit: int) -> int:
    """Where to end the slice that starts at ``start``: before the last whitespace in its second half."""
    for index in range(limit - 1, start + (limit - start) // 2, -1):
        if text[index].isspace():
            return index
    return limit


def tokenize_document(tokenization: Any, text: str) -> DocumentTokens:
    """Body token ids and character offsets of ``text``, with no truncation (bounded calls of `SLICE_CHARS`)."""
    tokenizer = tokenization.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise OptionError(
            "long-document modes, chunks and per-token output need a fast tokenizer (tokenizer.json) for the "
            f"character offsets; {type(tokenizer).__name__} is not one"
        )
    if tokenization.lowercase:
        text = _same_length_lower(text)
    bounds = []  # slices of at most SLICE_CHARS, cut at whitespace, tokenised together (tokenizers' threads)
    position = 0
    while position < len(text):
        end = len(text) if len(text) - position <= SLICE_CHARS else _cut(text, position, position + SLICE_CHARS)
        bounds.append((position, end))
        position = end
    ids: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    for first in range(0, len(bounds), SLICES_PER_CALL):
        group = bounds[first : first + SLICES_PER_CALL]
        with tokenization.lock:
            # the length warning is for model inputs; these ids are split into windows
            warnings = getattr(tokenizer, "deprecation_warnings", None)
            if isinstance(warnings, dict):
                warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
            encoded = tokenizer(
                [text[a:b] for a, b in group],
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
        for (a, _), row_ids, row_offsets in zip(group, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            ids.append(np.asarray(row_ids, dtype=np.int64))
            offsets.append(np.asarray(row_offsets, dtype=np.int64).reshape(-1, 2) + a)
    if not ids:
        empty = np.zeros(0, dtype=np.int64)
        return DocumentTokens(empty, empty, empty)
    spans = np.concatenate(offsets)
    return DocumentTokens(np.concatenate(ids), spans[:, 0].copy(), spans[:, 1].copy())


@dataclass(frozen=True)
class Layout:
    """How a window row is built: ``prefix + prompt + body + suffix``, and how many body tokens fit."""

    prefix: tuple[int, ...]
    prompt: tuple[int, ...]
    suffix: tuple[int, ...]
    capacity: int  # body tokens per window
    pool_prompt: bool  # include the prefix and prompt in a document's pooled tokens (include_prompt)

    @property
    def head(self) -> int:
        return len(self.prefix) + len(self.prompt)

    @classmethod
    def of(cls, tokenization: Any, prompt: str | None) -> Layout:
        tokenizer = tokenization.tokenizer
        with tokenization.lock:
            whole = list(tokenizer("a", add_special_tokens=True)["input_ids"])
            bare = list(tokenizer("a", add_special_tokens=False)["input_ids"])
            prompt_text = (prompt.lower() if tokenization.lowercase else prompt) if prompt else ""
            prompt_ids = (
                tuple(tokenizer(prompt_text, add_special_tokens=False)["input_ids"]) if prompt_text else ()
            )
        at = next((i for i in range(len(whole) - len(bare) + 1) if whole[i : i + len(bare)] == bare), None)
        if not bare or at is None:
            raise OptionError(f"cannot tell the special tokens of {type(tokenizer).__name__} apart from the text")
        prefix, suffix = whole[:at], whole[at + len(bare) :]
        if tokenization.add_eos:
            eos = tokenizer.eos_token_id
            if not suffix or suffix[-1] != eos:
                suffix = [*suffix, eos]
        capacity = tokenization.max_length - len(prefix) - len(suffix) - len(prompt_ids)
        if capacity < 1:
            raise OptionError(
                f"max_length {tokenization.max_length} leaves no room for text after {len(prefix) + len(suffix)} "
                f"special and {len(prompt_ids)} prompt tokens"
            )
        pool_prompt = bool(tokenization.include_prompt) or not prompt_ids
        return cls(tuple(prefix), prompt_ids, tuple(suffix), capacity, pool_prompt)


# ---------------------------------------------------------------------------------------------- windows


def check_stride(stride: int, capacity: int) -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise OptionError(f"window_stride must be a positive int, got {stride!r}")
    if stride >= capacity:
        raise OptionError(
            f"window_stride {stride} must be smaller than the window ({capacity} text tokens per window), "
            f"or the windows would not overlap"
        )
    return stride


def default_stride(capacity: int) -> int:
    """Half a window: every token but those near the document's ends has a quarter window of context each side."""
    return max(1, capacity // 2)


def window_starts(n: int, capacity: int, stride: int) -> np.ndarray:
    """Body start of each window: 0, stride, 2·stride, … and a last one ending exactly at ``n``."""
    if n <= capacity:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n - capacity, stride, dtype=np.int64)
    return np.append(starts, n - capacity)


def owned_ranges(starts: np.ndarray, n: int, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``: window j gives its hidden states to body tokens ``lo[j] <= t < hi[j]``, those whose nearest
    window centre is its own (ties to the earlier window)."""
    ends = np.minimum(starts + capacity, n)
    centres2 = starts + ends - 1  # twice each centre
    hi = np.empty_like(starts)
    hi[:-1] = (centres2[:-1] + centres2[1:]) // 4 + 1  # t <= (c_j + c_{j+1}) / 2
    hi[-1] = n
    lo = np.concatenate([[0], hi[:-1]]).astype(np.int64)
    return lo, hi


def span_chunks(tokens: DocumentTokens, spans: Any, text_length: int, doc: Any) -> list[tuple[int, int]]:
    """Body-token ranges of character spans: the tokens whose characters meet ``[start, end)``.

    Spans may overlap and come in any order (each is its own chunk, kept in the given order). A span out of
    range, empty, or meeting no token is an `OptionError` naming the document and the span.
    """
    items = check_spans(spans, text_length, doc)
    out = []
    for start, end in items:
        first, last = token_range(tokens, start, end)
        if last <= first:
            raise OptionError(f"document {doc}: span [{start}, {end}] covers no token")
        out.append((first, last))
    return out


def token_range(tokens: DocumentTokens, start: int, end: int) -> tuple[int, int]:
    """``(first, last)``: body tokens ``first <= t < last`` meet the characters ``[start, end)`` (empty when
    ``last <= first``)."""
    # token t meets [start, end) when starts[t] < end and (ends[t] > start, or a zero-width token inside)
    first = int(np.searchsorted(tokens.ends, start, side="right"))
    last = int(np.searchsorted(tokens.starts, end, side="left"))
    while first > 0 and tokens.starts[first - 1] == tokens.ends[first - 1] == start:
        first -= 1  # a zero-width token at the span's start belongs to it
    return first, last


# ---------------------------------------------------------------------------------------------- pooling units


class _Unit:
    """Running pooled state over sequence positions ``[lo, hi)``; weighted-mean weights count from ``base``."""

    __slots__ = ("lo", "hi", "base", "sum", "max", "wsum", "wtot", "count", "first", "first_pos", "last", "last_pos")

    def __init__(self, lo: int, hi: int, base: int) -> None:
        self.lo, self.hi, self.base = lo, hi, base
        self.sum: Any = None
        self.max: Any = None
        self.wsum: Any = None
        self.wtot = 0.0
        self.count = 0
        self.first: Any = None
        self.first_pos = math.inf
        self.last: Any = None
        self.last_pos = -1

    def add(self, rows: np.ndarray, pos0: int, needs: frozenset[str]) -> None:
        """Fold in token vectors ``rows`` (k×D) at sequence positions pos0, pos0+1, …"""
        k = len(rows)
        if k == 0:
            return
        if "sum" in needs:
            part = rows.sum(axis=0, dtype=np.float64)
            self.sum = part if self.sum is None else self.sum + part
        if "max" in needs:
            part = rows.max(axis=0).astype(np.float64)
            self.max = part if self.max is None else np.maximum(self.max, part)
        if "wsum" in needs:
            weights = np.arange(pos0 - self.base + 1, pos0 - self.base + 1 + k, dtype=np.float64)
            part = weights @ rows.astype(np.float64)
            self.wsum = part if self.wsum is None else self.wsum + part
            self.wtot += float(weights.sum())
        if pos0 < self.first_pos:
            self.first, self.first_pos = rows[0].astype(np.float64), pos0
        if pos0 + k - 1 > self.last_pos:
            self.last, self.last_pos = rows[-1].astype(np.float64), pos0 + k - 1
        self.count += k

    def result(self, member: Pooling, reduction: str, width: int) -> np.ndarray:
        zero = np.zeros(width, dtype=np.float64)
        if self.count == 0:
            return zero
        if member is Pooling.MEAN:
            return self.sum / self.count
        if member is Pooling.MEAN_SQRT_LEN:
            return self.sum / math.sqrt(self.count)
        if member is Pooling.WEIGHTED_MEAN:
            return self.wsum / max(self.wtot, 1.0)
        if member is Pooling.MAX:
            return self.max
        if member is Pooling.CLS:
            return self.first
        if member is Pooling.LAST_TOKEN:
            return self.last
        if member is Pooling.SPLADE:  # rows were activated (log1p ∘ relu) on the way in
            return self.max if reduction == "max" else self.sum
        raise AssertionError(member)  # pragma: no cover


def _needs(members: Sequence[Pooling], reduction: str) -> frozenset[str]:
    needs = set()
    for member in members:
        if member in (Pooling.MEAN, Pooling.MEAN_SQRT_LEN) or (member is Pooling.SPLADE and reduction == "sum"):
            needs.add("sum")
        elif member is Pooling.MAX or (member is Pooling.SPLADE and reduction == "max"):
            needs.add("max")
        elif member is Pooling.WEIGHTED_MEAN:
            needs.add("wsum")
    return frozenset(needs)


# ---------------------------------------------------------------------------------------------- the engine


@dataclass
class _Doc:
    index: int
    tokens: DocumentTokens
    starts: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    units: list[_Unit]
    exact: bool  # one window, pooled as a whole by `pool` (identical to truncate)
    collect: bool  # keep every token's vector (output="tokens")
    pending: int
    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)
    exact_vector: Any = None
    unit_bounds: tuple[np.ndarray, np.ndarray] | None = None  # (lo, hi) of every unit, for `_deliver`


@dataclass
class _Row:
    doc: _Doc
    window: int
    ids: np.ndarray


class WindowEngine:
    """Runs documents as window rows through an Encoder's runner and pools units as the rows come out."""

    def __init__(
        self,
        encoder: Any,
        *,
        prompt: str | None,
        stride: int | None,
        truncate: bool = False,
        members: Sequence[Pooling] | None = None,
        plain: bool = False,
    ) -> None:
        """``members``: pool with these strategies instead of the encoder's; ``plain``: then without the
        encoder's normalisation and truncate_dim (as `Encoder.pool_batch` with a strategy)."""
        self.encoder = encoder
        self.tokenization = encoder.tokenization
        self.layout = Layout.of(self.tokenization, prompt)
        self.truncate = truncate  # only the first window (output="tokens" in truncate mode)
        capacity = self.layout.capacity
        self.stride = check_stride(stride if stride is not None else default_stride(capacity), capacity) if (
            capacity > 1 or stride is not None
        ) else 1
        self.members = tuple(encoder._members if members is None else members)
        self.normalize = False if plain else encoder.normalize
        self.truncate_dim = None if plain else encoder.truncate_dim
        self.reduction = encoder._reduction
        self.needs = _needs(self.members, self.reduction)

    # -- documents

    def plan(
        self, index: int, tokens: DocumentTokens, chunk_ranges: list[tuple[int, int]] | None, collect: bool
    ) -> _Doc:
        """A document's windows and units: the whole sequence (chunk_ranges None) or chunks of body tokens."""
        layout = self.layout
        n = len(tokens)
        if self.truncate and n > layout.capacity:
            tokens = DocumentTokens(
                tokens.ids[: layout.capacity], tokens.starts[: layout.capacity], tokens.ends[: layout.capacity]
            )
            n = layout.capacity
        starts = window_starts(n, layout.capacity, self.stride)
        lo, hi = owned_ranges(starts, n, layout.capacity)
        total = layout.head + n + len(layout.suffix)
        if chunk_ranges is None:
            first = 0 if layout.pool_prompt else layout.head
            units = [] if collect else [_Unit(first, total, 0)]
        else:
            units = [_Unit(layout.head + a, layout.head + b, layout.head + a) for a, b in chunk_ranges]
        exact = chunk_ranges is None and not collect and len(starts) == 1
        return _Doc(index, tokens, starts, lo, hi, units, exact, collect, len(starts))

    def rows(self, doc: _Doc) -> Iterator[_Row]:
        layout = self.layout
        head = np.array(layout.prefix + layout.prompt, dtype=np.int64)
        tail = np.array(layout.suffix, dtype=np.int64)
        n = len(doc.tokens)
        for j, start in enumerate(doc.starts.tolist()):
            body = doc.tokens.ids[start : min(start + layout.capacity, n)]
            yield _Row(doc, j, np.concatenate([head, body, tail]))

    # -- running

    def run(self, docs: Iterable[_Doc], batch_size: int, max_batch_tokens: int | None = None) -> Iterator[_Doc]:
        """Yield each document once all its windows are pooled (in completion order). Window rows are batched
        as `Encoder.encode` batches texts: longest first, at most ``batch_size`` rows and ``max_batch_tokens``
        padded tokens (`batching.longest_first_batches`); a batch that runs out of memory is split in halves
        (`batching.forward_splitting`)."""
        buffer: list[_Row] = []
        for doc in docs:
            buffer.extend(self.rows(doc))
            if len(buffer) >= ROW_BUFFER:
                yield from self._flush(buffer, batch_size, max_batch_tokens)
                buffer = []
        if buffer:
            yield from self._flush(buffer, batch_size, max_batch_tokens)

    def _flush(self, rows: list[_Row], batch_size: int, max_batch_tokens: int | None) -> Iterator[_Doc]:
        lengths = np.fromiter((len(r.ids) for r in rows), dtype=np.int64, count=len(rows))
        for picked in longest_first_batches(lengths, batch_size, max_batch_tokens):
            input_ids, mask = self.tokenization.collate([rows[i].ids for i in picked], lengths[picked])
            for done, hidden, runner_mask in forward_splitting(self.encoder.runner.forward, picked, input_ids, mask):
                yield from self._consume([rows[i] for i in done], hidden, runner_mask)

    def _consume(self, batch: list[_Row], hidden: Any, runner_mask: Any) -> Iterator[_Doc]:
        runner = self.encoder.runner
        layout = self.layout
        exact_rows = [i for i, row in enumerate(batch) if row.doc.exact]
        if exact_rows:
            with runner.inference():
                pooled = pool(
                    hidden,
                    runner_mask,
                    list(self.members),
                    prompt_length=None if layout.pool_prompt else layout.head,
                    normalize=self.normalize,
                    truncate_dim=self.truncate_dim,
                    reduction=self.reduction,
                )
                pooled = runner.to_float32_numpy(pooled)
            for i in exact_rows:
                batch[i].doc.exact_vector = pooled[i]
        other = [i for i, row in enumerate(batch) if not row.doc.exact]
        if other:
            with runner.inference():
                values = runner.to_float32_numpy(hidden[other] if len(other) < len(batch) else hidden)
            if Pooling.SPLADE in self.members:
                values = np.log1p(np.maximum(values, 0.0))
            left = self.tokenization.left_pad
            for k, i in enumerate(other):
                row = batch[i]
                offset = int(runner_mask.shape[1] - len(row.ids)) if left else 0  # (a half is trimmed)
                self._deliver(row, values[k, offset : offset + len(row.ids)])
        for row in batch:
            row.doc.pending -= 1
            if row.doc.pending == 0:
                yield row.doc

    def _deliver(self, row: _Row, states: np.ndarray) -> None:
        """Hand the tokens this window owns to the document's units (by sequence position)."""
        doc, j, layout = row.doc, row.window, self.layout
        n = len(doc.tokens)
        head = layout.head
        start = int(doc.starts[j])
        width = len(row.ids) - head - len(layout.suffix)
        segments = []  # (first row position, first sequence position, length)
        if j == 0 and head:
            segments.append((0, 0, head))
        lo, hi = int(doc.lo[j]), int(doc.hi[j])
        if hi > lo:
            segments.append((head + lo - start, head + lo, hi - lo))
        if j == len(doc.starts) - 1 and layout.suffix:
            segments.append((head + width, head + n, len(layout.suffix)))
        units = doc.units
        if doc.unit_bounds is None or len(doc.unit_bounds[0]) != len(units):  # units may be added after `plan`
            doc.unit_bounds = (
                np.fromiter((u.lo for u in units), dtype=np.int64, count=len(units)),
                np.fromiter((u.hi for u in units), dtype=np.int64, count=len(units)),
            )
        unit_lo, unit_hi = doc.unit_bounds
        for r0, s0, length in segments:
            if doc.collect:
                doc.pieces.append((s0, states[r0 : r0 + length]))
            # only the units that meet this segment (a document can have thousands of chunks)
            for u in np.flatnonzero((unit_lo < s0 + length) & (unit_hi > s0)).tolist():
                unit = units[u]
                a, b = max(unit.lo, s0), min(unit.hi, s0 + length)
                unit.add(states[r0 + a - s0 : r0 + b - s0], a, self.needs)

    # -- results

    def vectors(self, doc: _Doc) -> np.ndarray:
        """float32 (units, D): the document's unit vectors (its exact one-window vector when it has one)."""
        if doc.exact:
            return check_finite(doc.exact_vector[None, :], [doc.index], self.encoder.dtype)
        width = self.encoder.runner_width
        parts = [
            np.stack([unit.result(member, self.reduction, width) for unit in doc.units])
            for member in self.members
        ]
        vectors = finish(
            np, parts, truncate_dim=self.truncate_dim, normalize=self.normalize, dtypes=(np.float32, np.float64)
        )
        return check_finite(vectors, np.full(len(vectors), doc.index), self.encoder.dtype)

    def token_states(self, doc: _Doc, special_tokens: bool) -> np.ndarray:
        """float32 (tokens, D): every pooled token's vector in order, special tokens dropped when asked."""
        pieces = sorted(doc.pieces, key=lambda piece: piece[0])
        width = self.encoder.runner_width
        states = np.concatenate([p for _, p in pieces]) if pieces else np.zeros((0, width), dtype=np.float32)
        _, keep = self._sequence(doc, special_tokens)
        out = np.ascontiguousarray(states[keep], dtype=np.float32)
        return check_finite(out[None], [doc.index], self.encoder.dtype)[0]

    def token_spans(self, doc: _Doc, special_tokens: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, spans)`` of the tokens `token_states` returns, row for row: int64 token ids and (tokens, 2)
        character spans ``[start, end)`` in the text, ``[-1, -1]`` for tokens not from it (special, prompt)."""
        ids, keep = self._sequence(doc, special_tokens)
        spans = np.full((len(ids), 2), -1, dtype=np.int64)
        head = self.layout.head
        spans[head : head + len(doc.tokens), 0] = doc.tokens.starts
        spans[head : head + len(doc.tokens), 1] = doc.tokens.ends
        return ids[keep], spans[keep]

    def _sequence(self, doc: _Doc, special_tokens: bool) -> tuple[np.ndarray, np.ndarray]:
        """The ids of ``prefix + prompt + body + suffix`` and which of them are pooled / output. Without special
        tokens, the prefix and suffix the tokenizer adds are left out by position, not by id: a text token that
        is [UNK] (an emoji the vocabulary lacks) or spells a special token stays."""
        layout = self.layout
        ids = np.concatenate(
            [np.array(layout.prefix + layout.prompt, dtype=np.int64), doc.tokens.ids, np.array(layout.suffix)]
        ).astype(np.int64)
        keep = np.ones(len(ids), dtype=bool)
        if not layout.pool_prompt:
            keep[: layout.head] = False
        if not special_tokens:
            keep[: len(layout.prefix)] = False
            keep[len(ids) - len(layout.suffix) :] = False
        return ids, keep


# ---------------------------------------------------------------------------------------------- entry points


def encode_long(
    encoder: Any, items: list[str], request: Any, *, prompt: str | None, truncate: bool
) -> np.ndarray | list[np.ndarray]:
    """`Encoder.encode` for ``long_documents="windows"`` and for ``output="tokens"`` (a checked `EncodeRequest`):
    (N, D) float32 vectors, or a list of (n_i, D) token arrays; ``truncate``: only each text's first window."""
    collect = request.output == "tokens"
    engine = WindowEngine(encoder, prompt=prompt, stride=encoder.window_stride, truncate=truncate)
    docs = (engine.plan(i, tokenize_document(encoder.tokenization, text), None, collect) for i, text in enumerate(items))
    done = engine.run(docs, request.batch_size, request.max_batch_tokens)
    if collect:
        tokens: list[Any] = [None] * len(items)
        for doc in done:
            tokens[doc.index] = engine.token_states(doc, request.special_tokens is not False)
        return tokens
    out = np.empty((len(items), encoder.dimension), dtype=np.float32)
    for doc in done:
        out[doc.index] = engine.vectors(doc)[0]
    return out


def token_spans(
    encoder: Any, items: list[str], *, prompt: str | None, special_tokens: bool, truncate: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`Encoder.token_spans`: the ids and character spans of the tokens ``encode_long(output="tokens")`` gives,
    without running the model."""
    engine = WindowEngine(encoder, prompt=prompt, stride=encoder.window_stride, truncate=truncate)
    return [
        engine.token_spans(engine.plan(i, tokenize_document(encoder.tokenization, text), None, True), special_tokens)
        for i, text in enumerate(items)
    ]


def _chunk_plan(
    encoder: Any, index: Any, text: str, spec: TokenChunks | BoundaryChunks | str, spans: Any, capacity: int,
    splitter: Any = None,
) -> tuple[DocumentTokens, list[tuple[int, int]], list[tuple[int, int]]]:
    """(body tokens, chunk token ranges, chunk character spans) of one document."""
    if not text.strip():
        raise OptionError(f"document {index}: {'empty' if not text else 'only whitespace'}; it has no chunk to embed")
    tokens = tokenize_document(encoder.tokenization, text)
    if len(tokens) == 0:
        raise OptionError(f"document {index}: no tokens; it has no chunk to embed")
    if isinstance(spec, TokenChunks):
        ranges = token_chunks(len(tokens), spec)
        chars = [(int(tokens.starts[a]), int(tokens.ends[b - 1])) for a, b in ranges]
    elif isinstance(spec, BoundaryChunks):  # character spans from the splitter, through the span path's mapping
        chars, ranges = splitter.chunks(text, tokens, index)
    else:
        ranges = span_chunks(tokens, spans, len(text), index)
        chars = check_spans(spans, len(text), index)
    return tokens, ranges, chars


def encode_chunks(
    encoder: Any,
    items: list[str],
    request: Any,
    *,
    prompt: str | None,
    spans: Iterable[Any] | None = None,
    names: Sequence[str] | None = None,
) -> ChunkEmbeddings:
    """One vector per chunk of every document (see `Encoder.encode_chunks`; ``request`` a checked
    `EncodeRequest`); ``names`` name the documents in messages (default: their positions)."""
    spec = parse_chunks(request.chunks)
    chunking, batch_size, max_batch_tokens = request.chunking, request.batch_size, request.max_batch_tokens
    spans = None if spans is None else list(spans)
    if spec == "spans":
        if spans is None or len(spans) != len(items):
            got = "none" if spans is None else len(spans)
            raise OptionError(f"chunks='spans' needs one list of spans per text: {len(items)} texts, {got} given")
    elif spans is not None:
        raise OptionError("spans are given only with chunks='spans'")
    engine = WindowEngine(encoder, prompt=prompt, stride=encoder.window_stride)
    capacity = engine.layout.capacity
    if isinstance(spec, (TokenChunks, BoundaryChunks)) and spec.size > capacity:
        raise OptionError(
            f"chunk size {spec.size} exceeds the {capacity} text tokens that fit one window "
            f"(max_length {encoder.max_length} less special and prompt tokens) in {spec}"
        )
    splitter = None
    if isinstance(spec, BoundaryChunks):
        from .boundaries import BoundarySplitter

        splitter = BoundarySplitter(encoder.tokenization, spec)
    plans = []
    for i, text in enumerate(items):
        tokens, ranges, chars = _chunk_plan(
            encoder, i if names is None else names[i], text, spec, None if spans is None else spans[i], capacity,
            splitter,
        )
        plans.append((tokens, ranges, chars))
    counts = [len(ranges) for _, ranges, _ in plans]
    doc = np.repeat(np.arange(len(items), dtype=np.int64), counts)
    chunk = np.concatenate([np.arange(c, dtype=np.int64) for c in counts]) if counts else np.zeros(0, np.int64)
    chars = np.array([pair for _, _, cs in plans for pair in cs], dtype=np.int64).reshape(-1, 2)
    try:
        if chunking == "naive":
            texts = [items[i][s:e] for i, (_, _, cs) in enumerate(plans) for s, e in cs]
            vectors = encode_truncated(
                encoder, texts, batch_size=batch_size, prompt=prompt, max_batch_tokens=max_batch_tokens
            )
        else:
            vectors = np.empty((len(doc), encoder.dimension), dtype=np.float32)
            first_row = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            docs = (engine.plan(i, tokens, ranges, False) for i, (tokens, ranges, _) in enumerate(plans))
            for done in engine.run(docs, batch_size, max_batch_tokens):
                vectors[first_row[done.index] : first_row[done.index + 1]] = engine.vectors(done)
    except ModelOutputError as err:  # name the document (and chunk), as the other errors of this call do
        if err.index is None:
            raise
        position = int(doc[err.index]) if chunking == "naive" else err.index
        name = position if names is None else names[position]
        where = f", chunk {int(chunk[err.index])}" if chunking == "naive" else ""
        raise err.at(f"document {name}{where}", position) from None
    return ChunkEmbeddings(doc, chunk, chars[:, 0].copy(), chars[:, 1].copy(), vectors)


def encode_truncated(
    encoder: Any, texts: list[str], *, batch_size: int, prompt: str | None, max_batch_tokens: int | None = None
) -> np.ndarray:
    """The encoder's ordinary (truncating) encode of ``texts``, whatever its long-document mode."""
    out = np.empty((len(texts), encoder.dimension), dtype=np.float32)
    for indices, vectors in encoder.iter_vector_batches(
        texts, batch_size=batch_size, prompt=prompt, max_batch_tokens=max_batch_tokens, long_documents="truncate"
    ):
        out[indices] = vectors
    return out
