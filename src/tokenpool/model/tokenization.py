"""Tokenisation and batching for an `Encoder`: truncation, EOS for last-token models, prompts (and how many
of their tokens pooling leaves out), length-sorted batches padded on the tokenizer's side.

Runner-independent: batches are numpy arrays of ids and masks; a `Runner` turns them into token outputs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batching import longest_first_batches

__all__ = ["Tokenization", "IdBatch", "SORT_CHUNK", "CHARS_PER_TOKEN"]

# Texts tokenised (and length-sorted) together: large enough to sort well, small enough to bound memory.
SORT_CHUNK = 16384
# A text is cut to max_length × CHARS_PER_TOKEN characters before tokenising, so that one huge line costs no
# more than a long text (the tokenizer would otherwise build every token of it before truncating). 64 is far
# above the characters per token of real text (4-6 for English; a WordPiece word longer than 100 characters is
# one [UNK]); a text whose first max_length tokens span more (e.g. long runs of whitespace) is embedded from
# its first max_length × 64 characters.
CHARS_PER_TOKEN = 64


@dataclass
class IdBatch:
    """A padded batch of token ids, ready for a runner."""

    indices: np.ndarray  # int64 positions of these rows in the caller's texts
    input_ids: np.ndarray  # b×L int64
    attention_mask: np.ndarray  # b×L int64, 1 = real token


class Tokenization:
    """A tokenizer with the encoder's rules. Thread-safe: fast tokenizers must not be shared between threads
    without a lock, so every call into the tokenizer holds ``self.lock``."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int,
        add_eos: bool,
        lowercase: bool,
        include_prompt: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.add_eos = add_eos
        self.lowercase = lowercase
        self.include_prompt = include_prompt
        self.lock = threading.RLock()
        self.pad_id = _first_int(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
        self.left_pad = getattr(tokenizer, "padding_side", "right") == "left"
        self._special_ids = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())
        self._prompt_lengths: dict[str, int] = {}

    @staticmethod
    def appends_eos(tokenizer: Any) -> bool:
        """Whether the tokenizer already ends every text with its EOS token."""
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[-1] == tokenizer.eos_token_id

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to max_length, with EOS appended where `add_eos` asks for it."""
        budget = self.max_length * CHARS_PER_TOKEN
        texts = [text if len(text) <= budget else text[:budget] for text in texts]
        if self.lowercase:
            texts = [text.lower() for text in texts]
        limit = self.max_length - 1 if self.add_eos else self.max_length
        with self.lock:
            ids = self.tokenizer(
                texts,
                add_special_tokens=True,
                truncation=True,
                max_length=limit,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        if self.add_eos:
            eos = self.tokenizer.eos_token_id
            ids = [row if row and row[-1] == eos else [*row, eos] for row in ids]
        return ids

    def prompt_length(self, prompt: str | None) -> int | None:
        """Tokens of ``prompt`` to leave out of pooling: its length alone, less a trailing special token
        (what sentence-transformers counts); None when the model pools the prompt too."""
        if not prompt:
            return None
        if prompt not in self._prompt_lengths:
            with self.lock:
                whole = len(self.tokenizer(prompt, add_special_tokens=True, truncation=False)["input_ids"])
            if whole + int(self.add_eos) >= self.max_length:
                raise ValueError(
                    f"the prompt {prompt!r:.80} takes {whole + int(self.add_eos)} tokens with the special tokens, "
                    f"but max_length is {self.max_length}: no room is left for the texts"
                )
            ids = self.tokenize([prompt])[0]
            self._prompt_lengths[prompt] = len(ids) - (1 if ids and ids[-1] in self._special_ids else 0)
        return None if self.include_prompt else self._prompt_lengths[prompt]

    def collate(self, rows: list[list[int]], lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pad to the longest row (on the tokenizer's padding side) → (input_ids, attention_mask)."""
        width = max(1, int(lengths.max()))
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, (row, n) in enumerate(zip(rows, lengths.tolist(), strict=True)):
            start = width - n if self.left_pad else 0
            input_ids[r, start : start + n] = row
            mask[r, start : start + n] = 1
        return input_ids, mask

    def batches(
        self, items: list[str], batch_size: int, prompt: str | None, max_batch_tokens: int | None = None
    ) -> Iterator[IdBatch]:
        """Length-sorted padded batches of ``items`` (prompt prepended), ``SORT_CHUNK`` texts sorted at a time:
        at most ``batch_size`` rows and, when given, ``max_batch_tokens`` padded tokens per batch."""
        for start in range(0, len(items), SORT_CHUNK):
            chunk = items[start : start + SORT_CHUNK]
            ids = self.tokenize([prompt + text for text in chunk] if prompt else chunk)
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            for rows in longest_first_batches(lengths, batch_size, max_batch_tokens):
                input_ids, mask = self.collate([ids[i] for i in rows], lengths[rows])
                yield IdBatch(indices=rows + start, input_ids=input_ids, attention_mask=mask)


def _first_int(*values: Any) -> int:
    return next(int(v) for v in values if isinstance(v, int))
