"""Chunks at text boundaries (``chunks="boundaries:MAX[:OVERLAP]"``), split by semantic-text-splitter.

The library splits at the highest level whose pieces fit (paragraphs, sentences, words, graphemes), counting
with a copy of the `tokenizers.Tokenizer` with truncation and padding off (else every text counts as at most
the truncation length). Each chunk is counted in the document (late chunking) and alone (naive chunking); one
over MAX either way is split again at a smaller capacity, so none is over MAX or truncated."""

from __future__ import annotations

from typing import Any

from ..core.chunking import BoundaryChunks
from ..errors import OptionError, require
from .document_tokens import DocumentTokens, cut_character, same_length_lower, token_range
from .options import spell
from .tokenization import silence_length_warning

__all__ = ["BoundarySplitter", "counting_tokenizer", "splitter_for"]


def counting_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer``'s `tokenizers.Tokenizer` with truncation and padding off, for counting tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - a fast tokenizer implies the library
        Tokenizer = None  # noqa: N806
    if Tokenizer is None or not isinstance(backend, Tokenizer):
        raise OptionError(
            f"{spell('chunks', 'boundaries:MAX')} counts tokens with a fast tokenizer (tokenizer.json); "
            f"{type(tokenizer).__name__} is not one"
        )
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


class BoundarySplitter:
    """Splits documents into chunks of whole paragraphs / sentences (words only when one sentence alone is over
    ``spec.size`` tokens) of at most ``spec.size`` tokens by ``tokenization``'s tokenizer."""

    def __init__(self, tokenization: Any, spec: BoundaryChunks) -> None:
        self.tokenization = tokenization
        self.spec = spec
        self._library = require("semantic_text_splitter", f"{spell('chunks', 'boundaries:MAX')} splits texts with the "
                                "semantic-text-splitter library, which is not installed: pip install "
                                "'tokenpool[chunking]'").TextSplitter
        self._counter = counting_tokenizer(tokenization.tokenizer)
        self._splitters: dict[tuple[int, int, bool], Any] = {}

    def _splitter(self, capacity: int, overlap: int, ours: bool) -> Any:
        """The library's splitter counting with the tokenizers copy (Rust, fast) or, ``ours``, through
        `_alone` (a Python callback: used only to split again the rare chunks the first count got wrong)."""
        key = (capacity, overlap, ours)
        if key not in self._splitters:
            library = self._library
            self._splitters[key] = (
                library.from_callback(lambda text: self._alone([text])[0], capacity, overlap=overlap) if ours
                else library.from_huggingface_tokenizer(self._counter, capacity, overlap=overlap)
            )  # fmt: skip
        return self._splitters[key]

    def _pieces(self, view: str, start: int, end: int, capacity: int, overlap: int, ours: bool) -> list[tuple[int, int]]:
        """Character spans of the library's chunks of ``view[start:end]`` (offsets into ``view``; the chunks
        come trimmed of whitespace)."""
        return [
            (start + offset, start + offset + len(chunk))
            for offset, chunk in self._splitter(capacity, overlap, ours).chunk_indices(view[start:end])
        ]

    def _alone(self, texts: list[str]) -> list[int]:
        """Token counts of ``texts`` each tokenised alone, without special tokens (what naive chunking sees)."""
        tokenizer = self.tokenization.tokenizer
        with self.tokenization.lock:
            silence_length_warning(tokenizer)  # an over-long piece is counted here, not run
            ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(row) for row in ids]

    def _refuse(self, doc: Any, text: str, view: str, start: int, end: int, count: int) -> None:
        """Refuse ``text[start:end]``, ``count`` tokens, over the chunk maximum with no boundary left to split it
        at; named as the whole character it cuts at either end, if it cuts one."""
        cut = cut_character(view, start, end)
        if cut is not None:
            (start, end), count = cut, self._alone([view[cut[0] : cut[1]]])[0]
        raise OptionError(
            f"document {doc}: the text at [{start}, {end}] ({text[start:end]!r:.40}) is {count} tokens, over the "
            f"chunk maximum {self.spec.size}, and has no boundary left to split it at"
        )

    def chunks(self, text: str, tokens: DocumentTokens, doc: Any) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``(character spans, body-token ranges)`` of ``text``'s chunks in text order, each at most
        ``spec.size`` tokens in the document and alone: one over is split again until it fits."""
        size, overlap = self.spec.size, self.spec.overlap
        view = same_length_lower(text) if self.tokenization.lowercase else text
        # stack of (span, capacity it was cut at, overlap, whether our count cut it); pop() gives text order
        todo = [(span, size, overlap, False) for span in self._pieces(view, 0, len(view), size, overlap, False)]
        todo.reverse()
        chars: list[tuple[int, int]] = []
        ranges: list[tuple[int, int]] = []
        while todo:
            # check a run of pieces with one tokenizer call; split again the first one over the maximum
            batch = [todo.pop() for _ in range(min(len(todo), 256))]
            alone = self._alone([view[s:e] for (s, e), _, _, _ in batch])
            for k, ((s, e), capacity, lap, ours) in enumerate(batch):
                a, b = token_range(tokens, s, e)
                if b <= a and alone[k] == 0:
                    continue  # characters the tokenizer drops (a zero-width space, a control character)
                if b <= a:
                    raise OptionError(f"document {doc}: chunk [{s}, {e}] ({text[s:e]!r:.40}) covers no token")
                count = max(b - a, alone[k])
                # the library splits a grapheme over the maximum between its code points: refused, as one code point
                cut = cut_character(view, s, e) if count <= size else None
                if cut and self._alone([view[cut[0] : cut[1]]])[0] > size:
                    self._refuse(doc, text, view, s, e, count)
                if count <= size:
                    chars.append((s, e))
                    ranges.append((a, b))
                    continue
                smaller = capacity - max(1, count - size) if ours else capacity
                if smaller < 1:
                    self._refuse(doc, text, view, s, e, count)
                lap = min(lap, smaller - 1)
                parts = self._pieces(view, s, e, smaller, lap, True)
                todo.extend(reversed(batch[k + 1 :]))  # back on the stack, after the new parts
                todo.extend((span, smaller, lap, True) for span in reversed(parts))
                break
        return chars, ranges


def splitter_for(tokenization: Any, spec: Any) -> BoundarySplitter | None:
    """The `BoundarySplitter` of a chunk spec that splits at text boundaries, else None (token and span chunks)."""
    return BoundarySplitter(tokenization, spec) if isinstance(spec, BoundaryChunks) else None
