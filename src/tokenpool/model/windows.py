"""Overlapping windows: every token of a long document read in context, pooled as the windows come out.

Body tokens are split into windows of at most ``capacity`` tokens, ``stride`` apart, the last ending at the
document's end, each run as ``prefix + prompt + body[s:e] + suffix``: the prompt's tokens and the body are
those of ``prompt + text`` read whole, as truncate mode reads them (`tokenize_document`). Every body token
takes its state from the window whose centre is nearest (ties to the earlier one); prefix and prompt from the
first window, the suffix from the last. A *unit* (the whole sequence, or a chunk) is pooled in float64 running sums."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from ..core.pooling import applicable_reduction, finish, finish_vectors, pool
from ..core.reductions import splade_activation
from ..core.strategies import Pooling, parse_strategies
from ..core.streaming import RunningPool
from ..errors import OptionError, check_int, shown_value
from .batching import check_finite, forward_splitting, longest_first_batches
from .document_tokens import DocumentTokens, tokenize_document, truncated_document
from .options import spell

__all__ = [
    "Cancelled", "Layout", "WindowEngine", "check_stride", "default_stride", "window_starts", "owned_ranges",
    "engine_for", "encode_long", "token_spans", "StopCheck", "stop_point", "stopping",
]  # fmt: skip

# Window rows length-sorted together (as `Encoder` sorts SORT_CHUNK texts).
ROW_BUFFER = 16384

T = TypeVar("T")
StopCheck = Callable[[], bool]  # a call's ``should_stop``: asked before each forward pass


class Cancelled(Exception):
    """A call's ``should_stop`` returned True before one of its forward passes: the call stopped there, and
    what it had computed is dropped (the server's check: the request's client went away)."""


def stop_point(should_stop: StopCheck | None) -> None:
    """Raise `Cancelled` when ``should_stop`` is given and returns True (called before each forward pass)."""
    if should_stop is not None and should_stop():
        raise Cancelled("stopped between forward passes: should_stop returned True")


def stopping(passes: Iterable[T], should_stop: StopCheck | None) -> Iterator[T]:
    """The items of a lazy iterable that runs one forward pass per item, `stop_point` before each one."""
    stop_point(should_stop)
    for item in passes:
        yield item
        stop_point(should_stop)


@dataclass(frozen=True)
class Layout:
    """How a window row is built: ``prefix + prompt + body + suffix``, and how many body tokens fit (with the
    prompt tokenised alone; a document's own prompt tokens, read with its text, may differ: `head_of`)."""

    prefix: tuple[int, ...]
    prompt: tuple[int, ...]  # the prompt tokenised alone
    suffix: tuple[int, ...]
    capacity: int  # body tokens per window
    # leading positions left out of a document's pooled tokens: `Tokenization.prompt_length` (include_prompt
    # false), as truncate mode leaves them out; 0: none
    skip: int
    # `Tokenization.appends_eos_after`, when the suffix is the EOS `add_eos` appends alone (else None)
    appends_eos: Callable[[Any], bool] | None = None

    def suffix_after(self, ids: Any) -> tuple[int, ...]:
        """The suffix of a row whose other tokens are ``ids``: the EOS `add_eos` appends only where
        `Tokenization.appends_eos_after` puts it after them, as in a row `Tokenization.encode` builds (it reads
        their last token only, given as a list)."""
        return self.suffix if self.appends_eos is None or self.appends_eos(list(ids[-1:])) else self.suffix[:-1]

    @property
    def head(self) -> int:
        return len(self.prefix) + len(self.prompt)

    def head_of(self, tokens: DocumentTokens) -> tuple[int, ...]:
        """The prefix and a document's prompt tokens (those of ``prompt + text``; the prompt's alone for
        tokens read without it)."""
        return self.prefix + (self.prompt if tokens.prompt is None else tokens.prompt)

    @classmethod
    def of(cls, tokenization: Any, prompt: str | None) -> Layout:
        found = tokenization.frame()
        if found is None:
            name = type(tokenization.tokenizer).__name__
            raise OptionError(f"cannot tell the special tokens of {name} apart from the text")
        prefix, suffix = found
        prompt_ids = tokenization.prompt_ids(prompt)
        capacity = tokenization.max_length - len(prefix) - len(suffix) - len(prompt_ids)
        if capacity < 1:
            raise OptionError(
                f"max_length {tokenization.max_length} leaves no room for text after {len(prefix) + len(suffix)} "
                f"special and {len(prompt_ids)} prompt tokens"
            )
        skip = tokenization.prompt_length(prompt) or 0
        appends_eos = tokenization.appends_eos_after if tokenization.add_eos and not tokenization.specials()[1] else None
        return cls(tuple(prefix), prompt_ids, tuple(suffix), capacity, skip, appends_eos)


def check_stride(stride: int, capacity: int) -> int:
    """``stride`` when it is a positive int below the window's ``capacity`` (windows must overlap)."""
    check_int(stride, spell("window_stride"), error=OptionError)
    if stride >= capacity:
        raise OptionError(
            f"{spell('window_stride')} {shown_value(stride, str)} must be smaller than the window ({capacity} text tokens per window), "
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
    hi = np.append((centres2[:-1] + centres2[1:]) // 4 + 1, n)  # t <= (c_j + c_{j+1}) / 2
    lo = np.concatenate([[0], hi[:-1]]).astype(np.int64)
    return lo, hi


@dataclass
class _Doc:
    index: int
    tokens: DocumentTokens
    head: tuple[int, ...]  # `Layout.head_of`: every window's first tokens
    capacity: int  # body tokens per window
    suffix: tuple[int, ...]  # its last window's (`Layout.suffix_after`)
    starts: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    units: np.ndarray  # int64 (units, 3): each unit's sequence positions [lo, hi) and its first position
    pool: RunningPool | None  # the units' running pooled rows (`tokenpool.core.streaming`)
    exact: bool  # one window, pooled as a whole by `pool` (identical to truncate)
    collect: bool  # keep every token's vector (output="tokens")
    pending: int
    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)
    exact_vector: Any = None


@dataclass
class _Row:
    doc: _Doc
    window: int
    ids: np.ndarray


class WindowEngine:
    """Runs documents as window rows through an Encoder's runner and pools units as the rows come out."""

    def __init__(
        self, encoder: Any, *, prompt: str | None, stride: int | None, truncate: bool = False,
        members: Sequence[Pooling] | None = None, plain: bool = False,
    ) -> None:  # fmt: skip
        """``members``: pool with these strategies instead of the encoder's; ``plain``: then without the
        encoder's normalisation and truncate_dim (as `Encoder.pool_batch` with a strategy)."""
        self.encoder = encoder
        self.tokenization = encoder.tokenization
        self.layout = Layout.of(self.tokenization, prompt)
        self.truncate = truncate  # only the first window (output="tokens" in truncate mode)
        capacity = self.layout.capacity
        # truncate mode reads one window: a stride (the encoder's, for its calls that read several) is not used
        self.stride = default_stride(capacity) if stride is None or truncate else check_stride(stride, capacity)
        self.own_stride = stride is None or truncate  # each document's: half its window (`plan`)
        self.members = parse_strategies(encoder.strategies) if members is None else tuple(members)
        # the folder's Dense / LayerNorm modules follow its own pooling; they run before the finishing step
        self.after = encoder.after_pooling if members is None and encoder.post_modules else None
        self.finishing = not plain
        finished_here = self.finishing and self.after is None
        self.normalize = encoder.normalize if finished_here else False
        self.truncate_dim = encoder.truncate_dim if finished_here else None
        self.reduction = applicable_reduction(encoder.config.splade_reduction, self.members)

    def plan(
        self, index: int, tokens: DocumentTokens, chunk_ranges: list[tuple[int, int]] | None, collect: bool,
        whole: bool = False,
    ) -> _Doc:  # fmt: skip
        """A document's windows and units: the whole sequence (chunk_ranges None) or chunks of body tokens;
        ``whole`` with chunk ranges: the whole sequence first, then the chunks (one pass for both)."""
        layout = self.layout
        head = layout.head_of(tokens)
        capacity = self.capacity_of(index, tokens)
        n = len(tokens)
        if self.truncate and n > capacity:  # the tokens truncate mode keeps, on the tokenizer's side
            keep = slice(n - capacity, n) if self.tokenization.truncation_side == "left" else slice(capacity)
            tokens = replace(tokens, ids=tokens.ids[keep], starts=tokens.starts[keep], ends=tokens.ends[keep])
            n = capacity
        # half the document's window, or the stride asked for, below the document's window (which its prompt tokens
        # may make smaller than the one the stride was checked against): windows overlap, as `check_stride` asks
        stride = default_stride(capacity) if self.own_stride else min(self.stride, max(capacity - 1, 1))
        starts = window_starts(n, capacity, stride)
        lo, hi = owned_ranges(starts, n, capacity)
        suffix = layout.suffix_after(tokens.ids if n else head)
        total = len(head) + n + len(suffix)
        # the whole sequence; weighted-mean ranks count the (left out) prompt too
        everything = [] if collect else [(min(layout.skip, total), total, 0)]
        chunks = [(len(head) + a, len(head) + b, len(head) + a) for a, b in chunk_ranges or ()]
        units = everything if chunk_ranges is None else (everything if whole else []) + chunks
        exact = chunk_ranges is None and not collect and len(starts) == 1
        running = None if exact or not units else RunningPool(
            self.members, len(units), self.encoder.runner_width, reduction=self.reduction, dtype="float64"
        )  # fmt: skip
        table = np.array(units, dtype=np.int64).reshape(-1, 3)
        return _Doc(index, tokens, head, capacity, suffix, starts, lo, hi, table, running, exact, collect, len(starts))

    def capacity_of(self, name: Any, tokens: DocumentTokens) -> int:
        """Body tokens per window of the document ``tokens`` (its prompt tokens are those read with its text,
        `Layout.head_of`, which may be one more or fewer than the prompt's alone); errors name it ``name``."""
        layout = self.layout
        head = layout.head_of(tokens)
        capacity = layout.capacity + layout.head - len(head)
        if capacity < 1:  # (its prompt tokens, read with its text, are more than the prompt's alone)
            raise OptionError(
                f"document {name}: max_length {self.tokenization.max_length} leaves no room for text after "
                f"{len(head) + len(layout.suffix)} special and prompt tokens"
            )
        return capacity

    def rows(self, doc: _Doc) -> Iterator[_Row]:
        head = np.array(doc.head, dtype=np.int64)
        for j, start in enumerate(doc.starts.tolist()):
            ids = np.concatenate([head, doc.tokens.ids[start : start + doc.capacity]])
            yield _Row(doc, j, np.concatenate([ids, np.array(self.layout.suffix_after(ids), dtype=np.int64)]))

    def run(
        self, docs: Iterable[_Doc], batch_size: int, max_batch_tokens: int | None = None,
        should_stop: StopCheck | None = None,
    ) -> Iterator[_Doc]:  # fmt: skip
        """Yield each document once all its windows are pooled (in completion order), the rows batched as
        `Encoder.encode` batches texts; ``should_stop`` is asked before each batch."""
        buffer: list[_Row] = []
        for doc in docs:
            for row in self.rows(doc):  # row by row: a huge document's windows are not all built at once
                buffer.append(row)
                if len(buffer) >= ROW_BUFFER:
                    yield from self._flush(buffer, batch_size, max_batch_tokens, should_stop)
                    buffer = []
        if buffer:
            yield from self._flush(buffer, batch_size, max_batch_tokens, should_stop)

    def _flush(
        self, rows: list[_Row], batch_size: int, max_batch_tokens: int | None, should_stop: StopCheck | None
    ) -> Iterator[_Doc]:
        lengths = np.fromiter((len(r.ids) for r in rows), dtype=np.int64, count=len(rows))
        for picked in longest_first_batches(lengths, batch_size, max_batch_tokens):
            stop_point(should_stop)
            input_ids, mask = self.tokenization.collate([rows[i].ids for i in picked], lengths[picked])
            for done, hidden, runner_mask in forward_splitting(self.encoder.runner.forward, picked, input_ids, mask):
                yield from self._consume([rows[i] for i in done], hidden, runner_mask)

    def _consume(self, batch: list[_Row], hidden: Any, runner_mask: Any) -> Iterator[_Doc]:
        runner = self.encoder.runner
        exact_rows = [i for i, row in enumerate(batch) if row.doc.exact]
        if exact_rows:
            with runner.inference():
                pooled = runner.to_float32_numpy(pool(  # raw, finished in float32 as `Encoder.pool_batch` does
                    hidden, runner_mask, list(self.members), prompt_length=self.layout.skip or None,
                    reduction=self.reduction,
                ))  # fmt: skip
            for i in exact_rows:
                batch[i].doc.exact_vector = pooled[i]
        other = [i for i, row in enumerate(batch) if not row.doc.exact]
        if other:
            with runner.inference():
                values = runner.to_float32_numpy(hidden[other] if len(other) < len(batch) else hidden)
            # token vectors of a SPLADE model are its activations (pooling activates them itself)
            shown = splade_activation(np, values) if Pooling.SPLADE in self.members else values
            left = self.tokenization.left_pad
            for k, i in enumerate(other):
                row = batch[i]
                offset = int(runner_mask.shape[1] - len(row.ids)) if left else 0  # (a half is trimmed)
                where = slice(offset, offset + len(row.ids))
                self._deliver(row, values[k, where], shown[k, where])
        for row in batch:
            row.doc.pending -= 1
            if row.doc.pending == 0:
                yield row.doc

    def _deliver(self, row: _Row, states: np.ndarray, shown: np.ndarray) -> None:
        """Hand the tokens this window owns to the document's units (by sequence position); ``shown``: the
        same tokens as ``output="tokens"`` gives them."""
        doc, j, head = row.doc, row.window, len(row.doc.head)
        n = len(doc.tokens)
        start = int(doc.starts[j])
        segments = []  # (first row position, first sequence position, length)
        if j == 0 and head:
            segments.append((0, 0, head))
        lo, hi = int(doc.lo[j]), int(doc.hi[j])
        if hi > lo:
            segments.append((head + lo - start, head + lo, hi - lo))
        if j == len(doc.starts) - 1 and doc.suffix:  # the last window ends at the document's end
            segments.append((head + n - start, head + n, len(doc.suffix)))
        unit_lo, unit_hi, unit_base = doc.units.T
        for r0, s0, length in segments:
            if doc.collect:
                doc.pieces.append((s0, shown[r0 : r0 + length]))
            # only the units that meet this segment (a document can have thousands of chunks)
            for u in np.flatnonzero((unit_lo < s0 + length) & (unit_hi > s0)).tolist():
                a, b = max(int(unit_lo[u]), s0), min(int(unit_hi[u]), s0 + length)
                doc.pool.add(u, states[r0 + a - s0 : r0 + b - s0], a - int(unit_base[u]))

    def vectors(self, doc: _Doc) -> np.ndarray:
        """float32 (units, D): the document's unit vectors (its exact one-window vector when it has one)."""
        if doc.exact:
            vectors = finish_vectors(doc.exact_vector[None, :], truncate_dim=self.truncate_dim, normalize=self.normalize)
        else:  # the pool's rows: float64 (units, width × strategies)
            vectors = finish(np, [doc.pool.read()], truncate_dim=self.truncate_dim, normalize=self.normalize,
                             dtypes=(np.float32, np.float64))
        if self.after is not None:
            vectors = self.after(vectors, finish=self.finishing)
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
        head = len(doc.head)
        spans[head : head + len(doc.tokens)] = np.column_stack((doc.tokens.starts, doc.tokens.ends))
        return ids[keep], spans[keep]

    def _sequence(self, doc: _Doc, special_tokens: bool) -> tuple[np.ndarray, np.ndarray]:
        """The ids of ``prefix + prompt + body + suffix`` and which are pooled / output; special tokens are
        left out by position, not by id (a text token that is [UNK] or spells a special token stays)."""
        layout = self.layout
        ids = np.concatenate([doc.head, doc.tokens.ids, doc.suffix]).astype(np.int64)
        keep = np.ones(len(ids), dtype=bool)
        keep[: layout.skip] = False  # as truncate mode leaves them out
        if not special_tokens:
            keep[: len(layout.prefix)] = False
            keep[len(ids) - len(doc.suffix) :] = False
        return ids, keep


def engine_for(encoder: Any, request: Any, prompt: str | None, truncate: bool = False) -> WindowEngine:
    """The window engine of a checked `EncodeRequest`: its pooling (raw) or the encoder's, finished or not."""
    members = None if request.pooling is None else parse_strategies(request.pooling)
    plain = request.pooling is not None or not request.finish
    return WindowEngine(
        encoder, prompt=prompt, stride=encoder.window_stride, truncate=truncate, members=members, plain=plain
    )


def encode_long(
    encoder: Any, items: list[str], request: Any, *, prompt: str | None, truncate: bool,
    should_stop: StopCheck | None, done_one: Callable[[int], Any],
) -> np.ndarray | list[np.ndarray]:  # fmt: skip
    """`Encoder.encode` for ``long_documents="windows"`` and ``output="tokens"``: (N, D) float32 vectors, or a
    list of (n_i, D) token arrays; ``truncate``: only each text's first window; ``done_one(1)`` after each
    document (a progress bar's update)."""
    collect = request.output == "tokens"
    engine = engine_for(encoder, request, prompt, truncate)
    tokenize = truncated_document if truncate else tokenize_document
    docs = (
        engine.plan(i, tokenize(encoder.tokenization, text, prompt), None, collect) for i, text in enumerate(items)
    )
    width = encoder.output_width(request.pooling, request.finish)
    out: Any = [None] * len(items) if collect else np.empty((len(items), width), dtype=np.float32)
    special = request.special_tokens is not False
    for doc in engine.run(docs, request.batch_size, request.max_batch_tokens, should_stop):
        out[doc.index] = engine.token_states(doc, special) if collect else engine.vectors(doc)[0]
        done_one(1)
    return out


def token_spans(
    encoder: Any, items: list[str], *, prompt: str | None, special_tokens: bool, truncate: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`Encoder.token_spans`: the ids and character spans of the tokens ``encode_long(output="tokens")`` gives,
    without running the model."""
    engine = WindowEngine(encoder, prompt=prompt, stride=encoder.window_stride, truncate=truncate)
    tokenize = truncated_document if truncate else tokenize_document
    return [
        engine.token_spans(engine.plan(i, tokenize(encoder.tokenization, text, prompt), None, True), special_tokens)
        for i, text in enumerate(items)
    ]
