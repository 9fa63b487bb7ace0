"""Tokenisation and batching for an `Encoder`: truncation, EOS for last-token models, prompts, length-sorted
batches padded on the tokenizer's side, as numpy arrays (runner-independent)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelFolderError, OptionError, is_int, shown_int, shown_value
from .batching import longest_first_batches

__all__ = [
    "Tokenization", "Tokenized", "IdBatch", "SORT_CHUNK", "CHARS_PER_TOKEN", "ONE_BY_ONE", "TRUNCATIONS",
    "silence_length_warning", "direct_backend", "prepends_to_every_text", "prompt_tokens", "check_ids", "cut_row",
]

# Texts tokenised (and length-sorted) together: large enough to sort well, small enough to bound memory.
SORT_CHUNK = 16384
# A text is cut to max_length × CHARS_PER_TOKEN characters before tokenising, so that one huge line costs no
# more than a long text (the tokenizer would otherwise build every token of it before truncating). 64 is far
# above the characters per token of real text (4-6 for English; a WordPiece word longer than 100 characters is
# one [UNK]); a text whose first max_length tokens span more (e.g. long runs of whitespace) is embedded from
# its first max_length × 64 characters.
CHARS_PER_TOKEN = 64
# A direct call with at most this many texts tokenises them one by one (`Tokenizer.encode`) rather than as a batch
# (`encode_batch`, which hands the texts to the tokenizer's thread pool and releases the GIL): 28-30 µs of CPU a
# text against 40-73 from 2 texts up, and in the server 0.43-0.45 ms of CPU per single-text request against
# 0.53-0.57 (stop 41, docs/serve.md). Larger calls keep the pool: less wall time for an offline chunk of texts.
ONE_BY_ONE = 16


TRUNCATIONS = ("auto", "right", "left", None)


@dataclass
class IdBatch:
    """A padded batch of token ids, ready for a runner."""

    indices: np.ndarray  # int64 positions of these rows in the caller's texts
    input_ids: np.ndarray  # b×L int64
    attention_mask: np.ndarray  # b×L int64, 1 = real token


@dataclass
class Tokenized:
    """Texts as token ids for a forward pass (`Encoder.tokenize`): per text its ids and its token count before
    truncation; ``prompt_lengths``: the leading tokens pooling leaves out (None: pooled too)."""

    ids: list[list[int]]
    counts: np.ndarray  # int64 (N,)
    prompt_lengths: np.ndarray | None = None  # int64 (N,)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        """int64 (N,): tokens per row as it will run."""
        return np.fromiter(map(len, self.ids), dtype=np.int64, count=len(self.ids))

    @property
    def truncated(self) -> np.ndarray:
        """bool (N,): which texts lost tokens to truncation."""
        return self.counts > self.lengths

    def select(self, rows: Any) -> Tokenized:
        """These rows only, in this order: positions, or a boolean mask (numpy's indexing; IndexError else)."""
        rows = np.asarray(rows)  # (positions as they are: no array of every row per call, the server's per pass)
        rows = (rows if rows.dtype.kind == "i" else np.arange(len(self))[rows if rows.size else []]).reshape(-1)
        lengths = None if self.prompt_lengths is None else self.prompt_lengths[rows]
        return Tokenized([self.ids[i] for i in rows.tolist()], self.counts[rows], lengths)

    @classmethod
    def concat(cls, parts: list[Tokenized]) -> Tokenized:
        """One `Tokenized` of ``parts``' rows in order (e.g. several requests' texts for one forward pass)."""
        ids = [row for part in parts for row in part.ids]
        counts = (np.concatenate([part.counts for part in parts]) if parts else np.zeros(0)).astype(np.int64)
        if all(part.prompt_lengths is None for part in parts):
            return cls(ids, counts, None)
        lengths = [np.zeros(len(p), np.int64) if p.prompt_lengths is None else p.prompt_lengths for p in parts]
        return cls(ids, counts, np.concatenate(lengths))


class Tokenization:
    """A tokenizer with the encoder's rules. Thread-safe: fast tokenizers must not be shared between threads
    without a lock, so every call into the tokenizer holds ``self.lock``."""

    def __init__(
        self, tokenizer: Any, *, max_length: int, add_eos: bool, lowercase: bool, include_prompt: bool,
        vocab_size: int | None = None, vocab_source: Any = "config.json",
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size  # the model's embedding rows (checked by `collate`); None: not checked
        self.vocab_source = vocab_source
        self.max_length = max_length
        self.add_eos = add_eos
        self.lowercase = lowercase
        self.include_prompt = include_prompt
        self.lock = threading.RLock()
        # (a pad token transformers added past the model's vocabulary, masked anyway, gives way to the next)
        candidates = (tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
        self.pad_id = next(int(v) for v in candidates if isinstance(v, int) and v < (vocab_size or v + 1))
        self.left_pad = getattr(tokenizer, "padding_side", "right") == "left"
        self._special_ids = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())
        self._prompt_lengths: dict[str, int] = {}
        self._prompt_ids: dict[str, tuple[int, ...]] = {}
        self._specials: tuple[list[int], list[int]] | None | bool = False  # False: not probed yet
        self._direct: tuple[Any, Any, Any] | None = None  # (tokenizer, its direct_backend, its class's __call__)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy (an Encoder sent to a worker process, an EMA copy) without the lock."""
        return {**self.__dict__, "lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.RLock())

    @property
    def truncation_side(self) -> str:
        """The tokenizer's side ("left" or "right"), read at each call: a later ``tokenizer.truncation_side =
        "left"`` cuts as in sentence-transformers."""
        return "left" if getattr(self.tokenizer, "truncation_side", "right") == "left" else "right"

    @staticmethod
    def appends_eos(tokenizer: Any) -> bool:
        """Whether the tokenizer already ends every text with its EOS token."""
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[-1] == tokenizer.eos_token_id

    def appends_eos_after(self, tokens: list[int] | tuple[int, ...] | None) -> bool:
        """Whether this encoder appends its EOS after ``tokens`` (a row, or the tokenizer's suffix; None: not
        known): with ``add_eos``, unless they end with it already. The one rule for rows, windows and limits."""
        return self.add_eos and (not tokens or tokens[-1] != self.tokenizer.eos_token_id)

    @property
    def limit(self) -> int:
        """Tokens a row may hold before the EOS this encoder appends (``max_length``, less one where it appends
        one after the tokenizer's own suffix, as windows count it)."""
        specials = self.specials()
        return self.max_length - self.appends_eos_after(None if specials is None else specials[1])

    def frame(self) -> tuple[list[int], list[int]] | None:
        """``(prefix, suffix)``: the special tokens around every row, with the EOS this encoder appends; None
        when the tokenizer's cannot be told apart from the text."""
        specials = self.specials()
        if specials is None:
            return None
        prefix, suffix = specials
        return prefix, [*suffix, self.tokenizer.eos_token_id] if self.appends_eos_after(suffix) else suffix

    def specials(self) -> tuple[list[int], list[int]] | None:
        """``(prefix, suffix)``: the special tokens the tokenizer puts around every text (found by tokenising
        "a" with and without them); None when they cannot be told apart from the text."""
        if self._specials is False:
            with self.lock:
                whole = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
                bare = list(self.tokenizer("a", add_special_tokens=False)["input_ids"])
            at = next((i for i in range(len(whole) - len(bare) + 1) if whole[i : i + len(bare)] == bare), None)
            self._specials = None if not bare or at is None else (whole[:at], whole[at + len(bare) :])
        return self._specials  # type: ignore[return-value]

    def kept_chars(self, length: int, side: str | None = None) -> tuple[int, int]:
        """``[start, stop)`` of the characters a text of ``length`` is tokenised from when truncated on ``side``
        (default: the tokenizer's): at most ``max_length × CHARS_PER_TOKEN``, on the kept side."""
        side = side or self.truncation_side
        budget = self.max_length * CHARS_PER_TOKEN
        if length <= budget:
            return 0, length
        return (length - budget, length) if side == "left" else (0, budget)

    def encode(
        self, texts: list[str], prompt: str | None = None, truncation: str | None = "auto", exact_counts: bool = False
    ) -> tuple[list[list[int]], np.ndarray]:
        """``(ids, counts)`` of ``prompt + text`` per text, in one tokenizer call: ids truncated on the
        ``truncation`` side ("auto": the tokenizer's; None: not), counts before truncation; texts cut to
        `kept_chars` unless ``exact_counts``."""
        if truncation not in TRUNCATIONS:
            raise OptionError(f"truncation must be one of {TRUNCATIONS}, got {shown_value(truncation, short=True)}")
        side = self.truncation_side if truncation == "auto" else truncation
        if side is not None and not exact_counts:  # the text is cut, never the prompt in front of it
            texts = [t[slice(*self.kept_chars(len(t), side))] for t in texts]
        texts = [prompt + text for text in texts] if prompt else list(texts)
        if self.lowercase:
            texts = [text.lower() for text in texts]
        # a left cut keeps the prompt's tokens: found from the offsets of ``prompt + text`` (`prompt_tokens`)
        offsets = side == "left" and bool(prompt) and bool(getattr(self.tokenizer, "is_fast", False))
        rows, spans = self._call(texts, offsets=True) if offsets else (self._call(texts), None)
        counts = np.fromiter((len(r) + self.appends_eos_after(r) for r in rows), np.int64, count=len(rows))
        if side is not None:
            rows = self._truncated(rows, texts, side, prompt, spans)
        if self.add_eos:
            eos = self.tokenizer.eos_token_id
            rows = [[*row, eos] if self.appends_eos_after(row) else row for row in rows]
        return rows, counts

    def _call(self, texts: list[str], offsets: bool = False, **options: Any) -> Any:
        """The tokenizer's ids of ``texts`` with its special tokens (its length warning silenced: rows longer
        than the model's limit are truncated here); ``offsets``: ``(ids, character offsets)``. A plain call runs
        on the Rust tokenizer itself (`direct_backend`) once the wrapper's call has set it as a plain call needs:
        ~40% less CPU for a single text, which the server tokenises on its event loop (issue 21, stop 39)."""
        with self.lock:
            backend = None if options else self._direct_backend()
            if backend is not None:
                one_by_one = len(texts) <= ONE_BY_ONE
                encodings = [backend.encode(text, add_special_tokens=True) for text in texts] if one_by_one else (
                    backend.encode_batch(texts, add_special_tokens=True)
                )  # fmt: skip
                ids = [encoding.ids for encoding in encodings]
                return (ids, [encoding.offsets for encoding in encodings]) if offsets else ids
            silence_length_warning(self.tokenizer)
            encoded = self.tokenizer(
                texts, add_special_tokens=True, padding=False, return_attention_mask=False,
                return_token_type_ids=False, return_offsets_mapping=offsets, **{"truncation": False, **options},
            )  # fmt: skip
        return (encoded["input_ids"], encoded["offset_mapping"]) if offsets else encoded["input_ids"]

    def _direct_backend(self) -> Any | None:
        """`direct_backend` of the tokenizer (found again when the tokenizer or its class's ``__call__`` changed: a
        tokenizer swapped in, a call wrapped to count or spy on it, must then run), when it is set as a plain call
        needs (no truncation or padding, special tokens split as the tokenizer says); else None."""
        tokenizer, direct = self.tokenizer, self._direct
        if direct is None or direct[0] is not tokenizer or direct[2] is not type(tokenizer).__call__:
            direct = self._direct = (tokenizer, direct_backend(tokenizer), type(tokenizer).__call__)
        backend = direct[1]
        if backend is None or backend.truncation is not None or backend.padding is not None:
            return None
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        return backend if getattr(backend, "encode_special_tokens", False) == split else None

    def _truncated(
        self, rows: list[list[int]], texts: list[str], side: str, prompt: str | None, offsets: Any = None
    ) -> list[list[int]]:
        """Rows over `limit` cut on ``side``, keeping the special tokens (and a left cut keeps the prompt's
        tokens: `prompt_tokens` of the rows' ``offsets`` where given, else as many as the prompt has alone)."""
        limit = self.limit
        long = [i for i, row in enumerate(rows) if len(row) > limit]
        if not long:
            return rows
        specials = self.specials()
        rows = list(rows)
        if specials is None:  # special tokens not found: let the tokenizer cut (right side only)
            if side != "right":
                raise OptionError(f"cannot truncate on the left: the special tokens of {type(self.tokenizer).__name__} are not known")
            cut = self._call([texts[i] for i in long], truncation=True, max_length=limit)
            for i, row in zip(long, cut, strict=True):
                rows[i] = row
            return rows
        prefix, suffix = len(specials[0]), len(specials[1])
        width = len(prompt.lower() if self.lowercase else prompt) if prompt else 0
        for i in long:
            head = prefix
            if side == "left":  # (a left cut keeps the prompt's tokens too)
                spans = None if offsets is None else np.asarray(offsets[i], dtype=np.int64).reshape(-1, 2)[prefix:]
                count = len(self.prompt_ids(prompt)) if spans is None else prompt_tokens(spans, width)
                head = min(prefix + count, limit - suffix)  # (the prompt never pushes out the suffix)
            rows[i] = cut_row(rows[i], limit, side, head, suffix)
        return rows

    def cut_ids(self, rows: Sequence[Sequence[int]], side: str | None) -> Tokenized:
        """Token ids a caller sent as the rows the model runs (a server's token-id inputs): each as given (no
        special token, prompt or EOS added), one over ``max_length`` cut on ``side`` ("right" or "left"; None:
        kept whole); counts: each row's length as sent. A row framed by `frame` (the tokenizer's special tokens,
        with the EOS this encoder appends) keeps its frame, as a text's row does (`cut_row`), so that a text's ids
        run as the text would; any other row is cut as it is."""
        if side not in ("right", "left", None):
            raise OptionError(f"side must be 'right', 'left' or None, got {shown_value(side, short=True)}")
        limit, frame = self.max_length, self.frame() if side is not None else None
        out = [list(row) for row in rows]
        for i, row in enumerate(out):
            if side is not None and len(row) > limit:
                head, tail = _frame_sizes(row, frame)
                if head + tail >= limit:  # (a frame as long as the window: nothing to keep inside it)
                    head = tail = 0
                out[i] = cut_row(row, limit, side, head, tail)
        return Tokenized(out, np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))

    def prompt_ids(self, prompt: str | None) -> tuple[int, ...]:
        """The ids of ``prompt`` tokenised alone, without special tokens (lower-cased like the texts)."""
        if not prompt:
            return ()
        if prompt not in self._prompt_ids:
            text = prompt.lower() if self.lowercase else prompt
            with self.lock:
                self._prompt_ids[prompt] = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._prompt_ids[prompt]

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to max_length, with EOS appended where `add_eos` asks for it."""
        return self.encode(texts)[0]

    def prompt_length(self, prompt: str | None) -> int | None:
        """Tokens of ``prompt`` to leave out of pooling: its length alone, less a trailing special token
        (what sentence-transformers counts); None when the model pools the prompt too."""
        if not prompt:
            return None
        if prompt not in self._prompt_lengths:
            # the prompt as rows read it (lower-cased where the encoder lower-cases), with the EOS appended
            whole = int(self.encode([""], prompt, truncation=None)[1][0])
            if whole >= self.max_length:
                raise ValueError(
                    f"the prompt {prompt!r:.80} takes {whole} tokens with the special tokens, "
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
        try:
            for r, (row, n) in enumerate(zip(rows, lengths.tolist(), strict=True)):
                start = width - n if self.left_pad else 0
                input_ids[r, start : start + n] = row
                mask[r, start : start + n] = 1
            low, top = (int(input_ids.min()), int(input_ids.max())) if input_ids.size else (0, 0)
        except OverflowError:  # (an id past int64, so past every embedding table: named below)
            if self.vocab_size is None:
                raise
            low, top = int(min(map(min, filter(len, rows)))), int(max(map(max, filter(len, rows))))
        if self.vocab_size is not None and not 0 <= low <= top < self.vocab_size:  # the lookup: a bare IndexError
            bad = low if low < 0 else top
            try:  # (an id past the tokenizer's u32 ids: OverflowError)
                token = self.tokenizer.convert_ids_to_tokens(bad) if bad >= 0 else None
            except OverflowError:
                token = None
            what = (f"the tokenizer's {token!r}; the tokenizer's files and the model's do not match" if token is not None
                    else "an edited id, in neither the model's vocabulary nor the tokenizer's")  # fmt: skip
            raise ModelFolderError(
                f"token id {shown_int(bad)} is not in the model's embedding table (ids 0..{self.vocab_size - 1}) of "
                f"{self.vocab_source} (vocab_size): {what}"
            )
        return input_ids, mask

    def id_batches(
        self, rows: list[list[int]], batch_size: int, max_batch_tokens: int | None = None
    ) -> Iterator[IdBatch]:
        """Length-sorted padded batches of token rows: at most ``batch_size`` rows and, when given,
        ``max_batch_tokens`` padded tokens per batch (`batching.longest_first_batches`)."""
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        for picked in longest_first_batches(lengths, batch_size, max_batch_tokens):
            input_ids, mask = self.collate([rows[i] for i in picked], lengths[picked])
            yield IdBatch(indices=picked, input_ids=input_ids, attention_mask=mask)


def cut_row(row: list[int], limit: int, side: str, head: int, tail: int) -> list[int]:
    """``row`` cut to ``limit`` tokens on ``side``, keeping its first ``head`` and last ``tail`` tokens (special
    tokens, a prompt's): the one cut of text rows (`Tokenization.encode`) and token-id rows (`cut_ids`)."""
    room = limit - head - tail
    kept = row[head : head + room] if side == "right" else row[len(row) - tail - room : len(row) - tail]
    return row[:head] + kept + row[len(row) - tail :]


def _frame_sizes(row: list[int], frame: tuple[list[int], list[int]] | None) -> tuple[int, int]:
    """``(len(prefix), len(suffix))`` of ``frame`` (`Tokenization.frame`) when ``row`` begins with its prefix
    and ends with its suffix, with tokens between; else ``(0, 0)``: a row of other ids has no frame to keep."""
    if frame is None:
        return 0, 0
    prefix, suffix = frame
    framed = len(row) > len(prefix) + len(suffix) and row[: len(prefix)] == prefix
    return (len(prefix), len(suffix)) if framed and row[len(row) - len(suffix) :] == suffix else (0, 0)


def check_ids(rows: list[Any]) -> None:
    """TypeError naming the first row of ``rows`` that is no sequence of ids (text, bytes, a set or a mapping, whose
    order or items are no ids; a 2-D array) or the first id that is not an integer (a float, even 2000.0, a bool, a
    string), which the padded batch would cast to another id; Python ints and integer arrays pass at a glance."""
    for r, row in enumerate(rows):
        if isinstance(row, (str, bytes, bytearray)) or not (isinstance(row, Sequence) or getattr(row, "ndim", 0) == 1):
            raise TypeError(f"token ids: row {r} is not a sequence of ids: {shown_value(row)[:80]}")
        if isinstance(row, np.ndarray) and row.dtype.kind in "iu" or set(map(type, row)) <= {int}:
            continue
        for p, value in enumerate(row):
            if not is_int(value):
                raise TypeError(f"the token id at row {r}, position {p} is not an integer: {shown_value(value)}")


# what a transformers tokenizer class may redefine on the way from its call to the Rust tokenizer's encode_batch
_ENCODING_PATH = (
    "__call__", "_call_one", "encode_plus", "batch_encode_plus", "_encode_plus", "_batch_encode_plus",
    "prepare_for_tokenization", "set_truncation_and_padding", "_convert_encoding",
)  # fmt: skip


def direct_backend(tokenizer: Any) -> Any | None:
    """The `tokenizers.Tokenizer` behind a transformers fast tokenizer when calling it directly gives what the
    tokenizer's own call does: no class between the tokenizer's and `PreTrainedTokenizerFast` redefines a step of
    that call (`_ENCODING_PATH`); else None (slow tokenizers, and models whose tokenizer adds its own Python)."""
    transformers = sys.modules.get("transformers")
    fast = getattr(transformers, "PreTrainedTokenizerFast", None)
    if fast is None or not isinstance(tokenizer, fast):
        return None
    for cls in type(tokenizer).__mro__:
        if cls is fast:
            break
        if any(name in vars(cls) for name in _ENCODING_PATH):
            return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend if callable(getattr(backend, "encode_batch", None)) else None


def prompt_tokens(offsets: np.ndarray, width: int) -> int:
    """How many of the tokens of ``prompt + text`` (their (n, 2) character ``offsets``) are the prompt's, whose
    ``width`` characters lead: the leading ones that end within it (one straddling its end is the text's). The
    one rule for truncated rows (a left cut keeps them) and long documents (every window starts with them)."""
    count = 0
    while count < len(offsets) and offsets[count, 1] <= width:
        count += 1
    return count


def silence_length_warning(tokenizer: Any) -> None:
    """Switch off a transformers tokenizer's warning about rows longer than the model's limit (tokenpool
    truncates, windows or counts such rows itself); call it holding the tokenization's lock."""
    warnings = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(warnings, dict):
        warnings["sequence-length-is-longer-than-the-specified-maximum"] = True


def prepends_to_every_text(tokenizer: Any) -> bool:
    """Whether the normalizer of ``tokenizer`` (a transformers fast tokenizer or a `FolderTokenizer`) prepends to
    every text it reads (Llama 2's Prepend("▁"), alone or in a sequence): a text cut in pieces gets it at each."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    saved = json.loads(normalizer.__getstate__()) if normalizer is not None else {}
    steps = saved.get("normalizers", [saved]) if saved.get("type") == "Sequence" else [saved]
    return any(step.get("type") == "Prepend" for step in steps)
