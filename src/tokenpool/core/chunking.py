"""Chunk specifications, independent of any model: fixed token counts (`TokenChunks`, parsed from
``tokens:SIZE[:OVERLAP]``), text boundaries (`BoundaryChunks`, parsed from ``boundaries:MAX[:OVERLAP]``; the
splitting itself is `tokenpool.model.boundaries`) and character spans (`check_spans`). Used by
`tokenpool.model.longdocs` and by the embed job's checks before a model loads."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OptionError, is_int, parse_int, shown_int, shown_value

__all__ = ["CHUNKINGS", "DEFAULT_CHUNKS", "TokenChunks", "BoundaryChunks", "parse_chunks", "token_chunks", "check_spans"]

# encode_chunks' default: fits the window of every model of 130 tokens or more (the bundled model holds 254
# text tokens; 128-token late chunks are what lifted QMSum retrieval most, docs/long-documents.md)
DEFAULT_CHUNKS = "tokens:128:16"
CHUNKINGS = ("late", "naive")


@dataclass(frozen=True)
class _SizedChunks:
    """A chunk spec of a size and an overlap, written ``KIND:SIZE:OVERLAP``."""

    size: int
    overlap: int = 0
    _kind = ""  # what the spec string starts with
    size_name = ""  # what the size is, in an error

    def __post_init__(self) -> None:
        """Check the size and overlap, and store them as Python ints (numpy's are accepted)."""
        self._check(self.size, self.overlap, type(self).__name__)  # (str(self) fails on a 5000-digit int)
        for name in ("size", "overlap"):
            object.__setattr__(self, name, int(getattr(self, name)))  # (frozen dataclass: json and str see plain ints)

    @classmethod
    def _check(cls, size: Any, overlap: Any, said: str) -> None:
        """`OptionError` for a size below 1, an overlap below 0 or not below the size, naming the spec as
        ``said`` (what the caller wrote)."""
        for name, value, low in (("size", size, 1), ("overlap", overlap, 0)):
            if not is_int(value) or value < low:
                shown = shown_value(value, short=True)
                raise OptionError(f"chunk {name} must be an int >= {low}, got {shown} in {said}")
            if value >= 2**63:  # (no text that long; and past 4300 digits Python cannot even print the int)
                raise OptionError(f"chunk {name} must be below 2**63, got a {int(value).bit_length()}-bit int in {said:.80}")
        if overlap >= size:
            raise OptionError(f"chunk overlap ({overlap}) must be smaller than the {cls.size_name} "
                              f"({size}) in {said}")

    def __str__(self) -> str:
        return f"{self._kind}:{self.size}:{self.overlap}"


class TokenChunks(_SizedChunks):
    """Chunks of ``size`` body tokens, consecutive ones sharing ``overlap`` tokens; the last may be short."""

    _kind, size_name = "tokens", "chunk size"


class BoundaryChunks(_SizedChunks):
    """Chunks of whole paragraphs / sentences (words only when one sentence alone is too long) of at most
    ``size`` text tokens each; consecutive chunks may share up to ``overlap`` tokens of whole units."""

    _kind, size_name = "boundaries", "chunk maximum"


_SIZED_SPEC = re.compile(r"(tokens|boundaries):([0-9]+)(?::([0-9]+))?")  # (\d would take other scripts' digits)


def parse_chunks(
    spec: Any, name: str = "chunks", said: str | None = None, form: Callable[[Any], str] = repr
) -> TokenChunks | BoundaryChunks | str:
    """``"tokens:SIZE[:OVERLAP]"`` → `TokenChunks`; ``"boundaries:MAX[:OVERLAP]"`` → `BoundaryChunks`;
    ``"spans"`` → ``"spans"``; a `TokenChunks` or `BoundaryChunks` is returned as it is. For the error: ``name``,
    the option as the caller writes it (``--chunks`` on a command line); ``said``, the option and its value
    (default ``name=SPEC``); ``form``, how a value is written (`shown_value`'s: JSON for a server)."""
    if isinstance(spec, _SizedChunks):
        return spec
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "spans":
            return "spans"
        match = _SIZED_SPEC.fullmatch(text)
        if match:
            kind = TokenChunks if match.group(1) == "tokens" else BoundaryChunks
            size, overlap = parse_int(match.group(2)), parse_int(match.group(3) or "0")
            kind._check(size, overlap, said or f"{name}={shown_value(spec, short=True)}")  # (as written)
            return kind(size, overlap)
    raise OptionError(f"{name} must be 'tokens:SIZE[:OVERLAP]' (e.g. tokens:128:16), 'boundaries:MAX[:OVERLAP]' "
                      f"(e.g. boundaries:128) or 'spans', got {shown_value(spec, form, short=True)}")


def token_chunks(n: int, spec: TokenChunks) -> list[tuple[int, int]]:
    """Body-token ranges of fixed-size chunks: starts every ``size - overlap`` tokens, until one reaches ``n``."""
    if n == 0:
        return []
    # every start until a chunk reaches n: the previous chunk, ending at start + overlap, ended short of n
    starts = range(0, max(n - spec.overlap, 1), spec.size - spec.overlap)
    return [(start, min(start + spec.size, n)) for start in starts]


def chunk_count(n: int, spec: TokenChunks | BoundaryChunks) -> int:
    """How many chunks ``token_chunks`` cuts from ``n`` body tokens (boundaries: the fewest, ``size`` tokens each),
    counted without building them; a document of no tokens counts one (it is one chunk, or refused)."""
    if isinstance(spec, TokenChunks):  # starts every size - overlap tokens, until a chunk reaches n
        return 1 + max(0, -(-(n - spec.size) // (spec.size - spec.overlap)))
    return max(1, -(-n // spec.size))


def check_spans(spans: Any, text_length: int, doc: Any, field: str = "") -> list[tuple[int, int]]:
    """``spans`` as ``[(start, end), ...]`` after checking each is a pair of ints with 0 <= start < end <= len.
    Errors name ``document {doc}``; given a ``field`` (the server's ``spans[0]``), span k as ``'field[k]'`` of ``doc``."""
    where, of = (lambda k: f"'{field}[{k}]'", f" of {doc}") if field else (lambda k: f"document {doc}", "")
    if isinstance(spans, np.ndarray):
        spans = spans.tolist()
    if spans is None or isinstance(spans, (str, bytes, dict)) or not isinstance(spans, Iterable):
        raise OptionError(f"document {doc}: spans must be a list of [start, end] pairs, got {spans!r:.80}")
    out = []
    for k, item in enumerate(spans):
        pair = item.tolist() if isinstance(item, np.ndarray) else item
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(is_int(v) for v in pair):
            raise OptionError(f"{where(k)}: a span must be a pair of integers [start, end], got {pair!r:.80}")
        start, end = int(pair[0]), int(pair[1])
        if not 0 <= start < end <= text_length:
            raise OptionError(f"{where(k)}: span [{shown_int(start)}, {shown_int(end)}] is not within the text{of} "
                              f"(need 0 <= start < end <= {text_length})")
        out.append((start, end))
    if not out:
        raise OptionError(f"'{field}' is an empty list: no spans given for {doc}" if field else f"document {doc}: no spans given")
    return out
