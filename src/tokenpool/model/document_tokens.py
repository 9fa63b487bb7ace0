"""A document's *body* tokens — its ids without special tokens, and each token's character span in the text —
for the long-document modes: tokenised without truncation, in character slices of `SLICE_CHARS` cut between
words, with the fast tokenizer's character offsets; and the tokens that meet a character span."""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import numpy as np

from ..core.chunking import check_spans
from ..errors import OptionError
from .tokenization import prepends_to_every_text, prompt_tokens, silence_length_warning

__all__ = [
    "SLICE_CHARS", "DocumentTokens", "same_length_lower", "tokenize_document", "truncated_document", "token_range",
    "span_chunks", "checked_span_chunks", "chunk_characters", "joined_characters", "cut_character",
]

# Characters tokenised per call: a document longer than this is tokenised slice by slice (cut at whitespace).
SLICE_CHARS = 200_000
SLICES_PER_CALL = 16  # slices per tokenizer call (it encodes a list on its own threads)
LONGER_LOWER = "\u0130"  # "İ": Unicode's one character whose lower case is longer (two characters, "i" and U+0307)
_Function = TypeVar("_Function", bound=Callable[..., Any])

# the run of regional indicators last looked up in this thread, as (text, start, end), until the call that looked
# it up returns (`_forgets_flag_run`): a chunk edge in a long run of flags does not read back to its start again,
# a text is told from another by identity (not a hash), and no user text is held after the call
_flag_run = threading.local()


def _forgets_flag_run(function: _Function) -> _Function:
    """``function``, forgetting the flag run `_flag_letters_before` looked up in its text when it returns."""

    @functools.wraps(function)
    def forgetting(*args: Any) -> Any:
        try:
            return function(*args)
        finally:
            _flag_run.last = None

    return cast(_Function, forgetting)


@dataclass
class DocumentTokens:
    """A document's body tokens (no special tokens) and their character spans in the original text."""

    ids: np.ndarray  # int64 (n,)
    starts: np.ndarray  # int64 (n,)
    ends: np.ndarray  # int64 (n,)
    # the prompt's tokens in front of the body, ``prompt + text`` read whole (`tokenize_document`); None: the
    # text was tokenised without its prompt
    prompt: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def same_length_lower(text: str) -> str:
    """``text.lower()``, except that `LONGER_LOWER` stays as it is (offsets stay valid; each character lower-cased
    alone made a word-final "Σ" "σ", not the "ς" of ``text.lower()``)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    parts, at = [], 0
    for k, found in enumerate(re.finditer(LONGER_LOWER, text)):  # the k-th is at start + k in ``lowered``
        parts += [lowered[at : found.start() + k], LONGER_LOWER]
        at = found.start() + k + 2
    return "".join([*parts, lowered[at:]])


def _separates(char: str) -> bool:
    """Whether ``char`` is whitespace that separates words for a tokenizer: Python's ``isspace`` less the control
    characters (``\\x0b``, ``\\x1c``-``\\x1f``, ``\\x85``...) that tokenizers drop, joining the word around them."""
    return char.isspace() and (char in "\t\n\r" or unicodedata.category(char) != "Cc")


@_forgets_flag_run
def _cut(text: str, start: int, limit: int) -> int:
    """Where to end the slice that starts at ``start``: before the last whitespace in its second half that ends a
    run (a byte-level BPE reads a run of spaces but its last as one piece, the last with the next word), a space
    if there is one (a SentencePiece metaspace marks a piece that starts with a space, not a newline, as in text);
    without a separating one, before a punctuation character after a letter or digit (WordPiece and byte-level
    BPE split there) unless the slice already ends before one; a cut not at whitespace moves back to the start of
    the character it falls in (`_joins`)."""
    cut = punctuation = limit
    for i in range(limit - 1, start + (limit - start) // 2, -1):
        if text[i + 1].isspace():
            continue
        if text[i] == " ":
            return i
        if cut == limit and _separates(text[i]):
            cut = i
        if punctuation == limit and text[i - 1].isalnum() and unicodedata.category(text[i]).startswith("P"):
            punctuation = i
    cut = punctuation if cut == limit and not _separates(text[limit]) else cut
    if _separates(text[cut]):  # (where the tokenizer splits: CR LF too, GPT-2 reads "\r\n\r" "\n")
        return cut
    at = cut  # not inside a character (a letter and its marks, a flag), unless it is the slice
    while at > start + 1 and _joins(text, at):
        at -= 1
    return cut if _joins(text, at) else at


def tokenize_document(tokenization: Any, text: str, prompt: str | None = None) -> DocumentTokens:
    """Body token ids and character offsets of ``text``, with no truncation (bounded calls of `SLICE_CHARS`);
    lower-cased first where the encoder lower-cases (``str.lower``, as `Tokenization.encode` does). With a
    ``prompt``, ``prompt + text`` is read as `Tokenization.encode` reads it, in one piece: the prompt's tokens
    are the leading ones that end within it, the rest are the body (a token that straddles the prompt's end
    starts at 0 in the text)."""
    if not getattr(tokenization.tokenizer, "is_fast", False):
        raise OptionError(
            "long-document modes, chunks and per-token output need a fast tokenizer (tokenizer.json) for the "
            f"character offsets; {type(tokenization.tokenizer).__name__} is not one"
        )
    lead, lowered = _lowered(prompt, text) if tokenization.lowercase else (prompt, text)
    tokens = _tokenize_slices(tokenization, lowered, lead)
    return tokens if len(lowered) == len(text) else _original_spans(tokens, text)


def _lowered(prompt: str | None, text: str) -> tuple[str | None, str]:
    """``prompt`` and ``text`` lower-cased as ``(prompt + text).lower()`` lower-cases them (`Tokenization.encode`,
    sentence-transformers): each alone but for "Σ", whose final form "ς" depends on the letters around it, so
    one at the prompt's end or the text's start is read across (a text that has none is not copied twice)."""
    if not prompt or ("Σ" not in prompt and "Σ" not in text):
        return (None if prompt is None else prompt.lower()), text.lower()
    whole = (prompt + text).lower()
    width = len(prompt.lower())  # (every character lower-cases to as many characters in any context)
    return whole[:width], whole[width:]


def _original_spans(tokens: DocumentTokens, text: str) -> DocumentTokens:
    """``tokens`` of ``text.lower()`` (new arrays, changed in place) with their spans mapped back to ``text``:
    `LONGER_LOWER` lower-cases to two characters, and a token meeting either meets it. Mapped by where those
    characters are, 8 bytes per token at a time (a map of every character of the text cost 16 bytes each)."""
    found = np.fromiter((m.start() for m in re.finditer(LONGER_LOWER, text)), dtype=np.int64)
    seconds = found + np.arange(1, len(found) + 1)  # where each one's second character is in the lower-cased text
    # a position is as many characters further in the lower-cased text as second characters lie before it; an end
    # right after a first character is that character's end, a zero-width token there stays at its start
    zero_width = np.flatnonzero(tokens.ends == tokens.starts)
    shift = np.searchsorted(seconds, tokens.ends, side="left")
    shift[zero_width] = np.searchsorted(seconds, tokens.ends[zero_width], side="right")
    tokens.ends -= shift
    del shift
    tokens.starts -= np.searchsorted(seconds, tokens.starts, side="right")
    return tokens


def _tokenize_slices(tokenization: Any, text: str, lead: str | None) -> DocumentTokens:
    """`tokenize_document` of a text as the tokenizer reads it: slices of at most `SLICE_CHARS` cut at
    whitespace, `SLICES_PER_CALL` slices per tokenizer call; ``lead`` (the prompt) read with the first slice."""
    tokenizer = tokenization.tokenizer
    bounds = []  # slices of at most SLICE_CHARS, cut at whitespace, tokenised together (tokenizers' threads)
    # a normalizer that prepends ▁ to every text gives it back for the space a later slice starts at: skip that
    # space (the slice's first token then spans it, as in the whole text)
    skip = prepends_to_every_text(tokenizer)
    skipped = set()  # the starts of slices after a skipped space
    position = 0
    while position < len(text):
        end = len(text) if len(text) - position <= SLICE_CHARS else _cut(text, position, position + SLICE_CHARS)
        bounds.append((position, end))
        position = end
        if skip and end < len(text) and text[end] == " ":
            position += 1
            skipped.add(position)
    if lead and not bounds:  # an empty text: its prompt alone
        bounds.append((0, 0))
    prompt = None if lead is None else ()  # "": read as no prompt, as `Tokenization.encode` reads it
    # each slice's ids, starts and ends apart: joined one array at a time, 32 bytes per token at the peak (`_joined`)
    ids, starts, ends = ([np.zeros(0, dtype=np.int64)] for _ in range(3))  # (an empty text has no slice)
    for first in range(0, len(bounds), SLICES_PER_CALL):
        group = bounds[first : first + SLICES_PER_CALL]
        with tokenization.lock:
            # the length warning is for model inputs; these ids are split into windows
            silence_length_warning(tokenizer)
            encoded = tokenizer(
                [(lead or "") + text[a:b] if a == 0 else text[a:b] for a, b in group], add_special_tokens=False,
                return_offsets_mapping=True, return_attention_mask=False, return_token_type_ids=False,
            )  # fmt: skip
        for (a, _), row_ids, row_offsets in zip(group, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            row_ids, row = np.asarray(row_ids, dtype=np.int64), np.asarray(row_offsets, dtype=np.int64).reshape(-1, 2) + a
            # the prompt's tokens (`prompt_tokens`); the text's offsets moved to the text (one that straddles the
            # prompt's end starts at 0)
            if a == 0 and lead:
                count = prompt_tokens(row, len(lead))
                prompt = tuple(row_ids[:count].tolist())
                row_ids, row = row_ids[count:], np.maximum(row[count:] - len(lead), 0)
            if a in skipped and len(row) and row[0, 0] == a:  # the ▁ prepended at a: the whole text's is the space
                row[0] = (a - 1, a) if len(row) > 1 and row[1, 0] == a else (a - 1, row[0, 1])  # (a ▁ token alone)
            ids.append(row_ids)
            starts.append(row[:, 0].copy())
            ends.append(row[:, 1].copy())
    return DocumentTokens(_joined(ids), _joined(starts), _joined(ends), prompt)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """``parts`` as one array, the list emptied: its parts are freed before the next array is joined."""
    whole = np.concatenate(parts)
    parts.clear()
    return whole


def truncated_document(tokenization: Any, text: str, prompt: str | None = None) -> DocumentTokens:
    """The body tokens of ``text`` that truncate mode can keep: tokenised from `Tokenization.kept_chars`, the
    characters `Tokenization.encode` keeps (a huge text costs no more than a long one), after ``prompt`` as
    there; spans index ``text``."""
    start, stop = tokenization.kept_chars(len(text))
    tokens = tokenize_document(tokenization, text[start:stop], prompt)
    return replace(tokens, starts=tokens.starts + start, ends=tokens.ends + start)


def span_chunks(tokens: DocumentTokens, spans: Any, text_length: int, doc: Any) -> list[tuple[int, int]]:
    """Body-token ranges of character spans (any order, may overlap; each its own chunk): the tokens that meet
    ``[start, end)``; a bad span or one meeting no token is an `OptionError` naming it (by its index too)."""
    return checked_span_chunks(tokens, check_spans(spans, text_length, doc), doc)


def checked_span_chunks(tokens: DocumentTokens, spans: list[tuple[int, int]], doc: Any) -> list[tuple[int, int]]:
    """`span_chunks` of spans `check_spans` has returned (not checked again); one meeting no token is an error."""
    out = []
    for k, (start, end) in enumerate(spans):
        first, last = token_range(tokens, start, end)
        if last <= first:
            raise OptionError(f"document {doc}: span {k} [{start}, {end}] covers no token")
        out.append((first, last))
    return out


@_forgets_flag_run
def chunk_characters(tokens: DocumentTokens, text: str, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` in ``text`` of each range of body tokens ``first <= t < last``: from the first one's start
    to the last one's end, taken on over the characters after it that continue its character (`_joins`: combining
    marks, an emoji's ZWJ sequence, skin tone or tags, Hangul jamo) and back from such characters at its start to
    the one they continue — a tokenizer that strips accents leaves a decomposed accent, a Thai or Hindi vowel sign,
    an emoji's variation selector out of its tokens' offsets, or makes such a sign a token of its own (a
    byte-level BPE, which also cuts a ZWJ sequence or a jamo syllable into byte tokens), and a chunk must not cut
    them from their character. Each range's walks end at the previous range's (ranges in text order, as
    `token_chunks` makes them), so a run of marks is walked once, not per chunk."""
    out: list[tuple[int, int]] = []
    back = ahead = (-1, -1)  # the previous range's (token start, widened start) and (token end, widened end)
    for first, last in ranges:
        start, end = int(tokens.starts[first]), int(tokens.ends[last - 1])
        at = start
        while at != back[0] and 0 < at < len(text) and _cuts_into(text, at):
            at -= 1
        back = (start, back[1] if at == back[0] else at)
        if not ahead[0] <= end <= ahead[1]:  # (else within what the previous end was taken over, or where it stopped)
            at = end
            while at < len(text) and _joins(text, at):
                at += 1
            ahead = (end, at)
        out.append((back[1], ahead[1]))
    return out


def _cuts_into(text: str, i: int) -> bool:
    """Whether a chunk starting at ``text[i]`` cuts the character before it apart (`_joins`), but for a mark after
    whitespace: a tokenizer reads it alone, and a chunk is not widened back to whitespace (LF after CR is)."""
    return _joins(text, i) and (text[i] == "\n" or not text[i - 1].isspace())


# Hangul conjoining jamo (leading, vowel, trailing) and precomposed syllables: Unicode's grapheme rules GB6-GB8
_JAMO = {"L": ((0x1100, 0x115F), (0xA960, 0xA97C)), "V": ((0x1160, 0x11A7), (0xD7B0, 0xD7C6)),
         "T": ((0x11A8, 0x11FF), (0xD7CB, 0xD7FB)), "S": ((0xAC00, 0xD7A3),)}  # fmt: skip
_JAMO_AFTER = {"L": ("L", "V", "LV", "LVT"), "V": ("V", "T"), "LV": ("V", "T"), "T": ("T",), "LVT": ("T",)}


def _jamo(char: str) -> str:
    """``char``'s Hangul class: "L", "V", "T", "LV" or "LVT" (a syllable without / with a trailing jamo), or ""."""
    code = ord(char)
    kind = next((k for k, ranges in _JAMO.items() if any(a <= code <= b for a, b in ranges)), "")
    return ("LV" if (code - 0xAC00) % 28 == 0 else "LVT") if kind == "S" else kind


def _joins(text: str, i: int) -> bool:
    """Whether ``text[i]`` continues the character before it (no grapheme break between them, Unicode UAX #29):
    a combining mark, what follows a prepended sign, a ZWJ and the pictograph after one that follows a pictograph,
    an emoji skin tone or tag, a flag's second regional indicator, an Indic conjunct's consonant after its virama,
    a Hangul jamo after the jamo or syllable it completes, LF after CR."""
    if i == 0:
        return False
    char, before = text[i], text[i - 1]
    category = unicodedata.category(char)  # (before's only when it may be a control: a mark's run is long)
    if _control(char, category) or (not before.isprintable() and _control(before, unicodedata.category(before))):
        return before == "\r" and char == "\n"
    if _extends(char, category) or before in _PREPENDED:
        return True
    if char in _FLAG_LETTERS and before in _FLAG_LETTERS:  # GB12/13: paired from the start of their run
        return _flag_letters_before(text, i) % 2 == 1
    if _consonant(char, category):  # (before the pictograph's rule: a conjunct's ZWJ asks for a half form)
        return _conjoined(text, i)
    if before == "\u200d":  # a pictograph (approximated: a symbol, So) after ZWJ after one, marks between
        j = i - 2
        while j > 0 and _extends(text[j], unicodedata.category(text[j])):
            j -= 1
        return j >= 0 and category == "So" == unicodedata.category(text[j])
    jamo = _jamo(char)
    return bool(jamo) and jamo in _JAMO_AFTER.get(_jamo(before), ())


# the viramas that join consonants into one character (Unicode 17's InCB=Linker: Devanagari, Bengali, Gujarati,
# Oriya, Telugu, Malayalam, Myanmar, Khmer, Tai Tham, Balinese, Sundanese, Vedic, Javanese, Meetei Mayek,
# Kharoshthi, Chakma, Tulu-Tigalari, Dives Akuru, Zanabazar Square, Soyombo, Kawi), and the 128-character
# blocks of those scripts (Myanmar's Shan and Extended-A consonants and Meetei Mayek's letters lie past theirs)
_LINKERS = ("\u094d\u09cd\u0acd\u0b4d\u0c4d\u0d4d\u1039\u17d2\u1a60\u1b44\u1bab\u1cf5\u1cf6\ua9c0\uaaf6"
            "\U00010a3f\U00011133\U000113d0\U0001193e\U00011a3a\U00011a47\U00011a99\U00011f42")
_CONJUNCT_BLOCKS = {ord(linker) >> 7 for linker in _LINKERS + "\u1080\uaa60\uabc0"}


def _consonant(char: str, category: str) -> bool:
    """A letter of a script whose virama joins conjuncts (approximates InCB=Consonant: its vowel letters too), not
    a linker (the Vedic ones are letters)."""
    return category == "Lo" and ord(char) >> 7 in _CONJUNCT_BLOCKS and char not in _LINKERS


def _conjoined(text: str, i: int) -> bool:
    """Whether the consonant ``text[i]`` ends a conjunct (GB9c): after a virama, among non-spacing marks and ZWJ,
    after a consonant."""
    j, linked = i - 1, False
    while j >= 0 and (text[j] in _LINKERS or text[j] == "\u200d" or unicodedata.category(text[j]) in ("Mn", "Me")):
        linked = linked or text[j] in _LINKERS
        j -= 1
    return linked and j >= 0 and _consonant(text[j], unicodedata.category(text[j]))


def _extends(char: str, category: str) -> bool:
    """A combining mark, ZWJ, ZWNJ, emoji skin tone or tag, or one of the letters Unicode makes marks (Thai / Lao
    SARA AM, halfwidth katakana sound marks) (``category``: its own): it continues any character."""
    code = ord(char)
    return ((category[0] == "M" and char not in _SPACING_ALONE) or char in "\u200c\u200d\u0e33\u0eb3\uff9e\uff9f"
            or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F)


# the spacing marks that begin a character of their own (Unicode's exceptions to SpacingMark, UAX #29 GB9a):
# Myanmar, Tai Tham, Myanmar Extended-A and Ahom vowel signs and tone marks
_SPACING_ALONE = ("\u102b\u102c\u1038\u1062\u1063\u1064\u1067\u1068\u1069\u106a\u106b\u106c\u106d\u1083\u1087"
                  "\u1088\u1089\u108a\u108b\u108c\u108f\u109a\u109b\u109c\u1a61\u1a63\u1a64\uaa7b\uaa7d"
                  "\U00011720\U00011721")

# the regional indicators A-Z: two make a flag
_FLAG_LETTERS = "".join(map(chr, range(0x1F1E6, 0x1F200)))
_FLAG_RUN = re.compile("[\U0001F1E6-\U0001F1FF]+")
_LAST_NOT_FLAG = re.compile("(?s:.*)[^\U0001F1E6-\U0001F1FF]")  # a text up to its last non-indicator


def _flag_letters_before(text: str, i: int) -> int:
    """How many regional indicators run up to ``text[i]`` (``text[i - 1]`` is one)."""
    held, start, end = getattr(_flag_run, "last", None) or (None, 0, 0)
    if held is not text or not start < i <= end:
        start = _flag_run_start(text, i - 1)
        _flag_run.last = (text, start, _FLAG_RUN.match(text, start).end())
    return i - start


def _flag_run_start(text: str, at: int) -> int:
    """Where the run of regional indicators through ``text[at]`` starts: read back by the regex engine in windows
    doubling in size (a call per chunk edge deep in a long run costs little)."""
    size = 16
    while at > 0 and _FLAG_RUN.fullmatch(text, max(0, at - size), at):
        at, size = max(0, at - size), size * 2
    head = _LAST_NOT_FLAG.match(text, max(0, at - size), at)
    return head.end() if head else 0


# signs that begin the character after them (Unicode's Prepend: an Arabic number sign before its digits, UAX #29 GB9b)
_PREPENDED = ("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\u0d4e\U000110bd\U000110cd"
              "\U000111c2\U000111c3\U000113d1\U0001193f\U00011941\U00011a84\U00011a85\U00011a86\U00011a87\U00011a88"
              "\U00011a89\U00011d46\U00011f02")


def _control(char: str, category: str) -> bool:
    """A control, line or paragraph separator or format character (not ZWJ / ZWNJ / a tag / a prepended sign):
    characters alone."""
    if category != "Cf":
        return category in ("Cc", "Zl", "Zp")
    return not _extends(char, category) and char not in _PREPENDED


@_forgets_flag_run
def joined_characters(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each of ``text``'s characters of several code points (`_joins`: a letter and the marks
    after it, an emoji ZWJ sequence), in text order."""
    out, start = [], 0
    for i in range(1, len(text) + 1):
        if i == len(text) or not _joins(text, i):
            if i - start > 1:
                out.append((start, i))
            start = i
    return out


@_forgets_flag_run
def cut_character(text: str, start: int, end: int) -> tuple[int, int] | None:
    """``[a, b)`` of the character (`_joins`) that ``text[start:end]`` cuts at its start or end, else None (a mark
    after whitespace, as `chunk_characters` leaves it, is no cut)."""
    at = start if _cuts_into(text, start) else end if end < len(text) and _joins(text, end) else -1
    if at < 0:
        return None
    a, b = at - 1, at + 1
    while a > 0 and _joins(text, a):
        a -= 1
    while b < len(text) and _joins(text, b):
        b += 1
    return a, b


def token_range(tokens: DocumentTokens, start: int, end: int) -> tuple[int, int]:
    """``(first, last)``: body tokens ``first <= t < last`` meet the characters ``[start, end)`` (empty when
    ``last <= first``)."""
    # token t meets [start, end) when starts[t] < end and (ends[t] > start, or a zero-width token inside)
    first = int(np.searchsorted(tokens.ends, start, side="right"))
    last = int(np.searchsorted(tokens.starts, end, side="left"))
    while first > 0 and tokens.starts[first - 1] == tokens.ends[first - 1] == start:
        first -= 1  # a zero-width token at the span's start belongs to it
    return first, last
