"""Stop 67, long documents: chunk edges against Unicode's own segmentation (the `regex` module's ``\\X``): a
chunk never starts between CR and LF, and the 31 Myanmar / Tai Tham / Ahom spacing marks that begin a character
of their own (Grapheme_Cluster_Break Other) do not widen a chunk."""

from __future__ import annotations

import bisect

import pytest

pytest.importorskip("transformers")
regex = pytest.importorskip("regex")  # (installed with transformers; an independent UAX #29 reference)


def _aligned(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened to the ``\\X`` clusters it meets: the smallest span of whole clusters."""
    cuts = sorted({m.start() for m in regex.finditer(r"\X", text)} | {len(text)})
    return cuts[bisect.bisect_right(cuts, start) - 1], cuts[bisect.bisect_left(cuts, end)]


# Unicode's list (UAX #29, SpacingMark's exceptions): Myanmar, Tai Tham, Myanmar Extended-A, Ahom
_SPACING_ALONE = [chr(c) for a, b in ((0x102B, 0x102C), (0x1038, 0x1038), (0x1062, 0x1064), (0x1067, 0x106D),
                                      (0x1083, 0x1083), (0x1087, 0x108C), (0x108F, 0x108F), (0x109A, 0x109C),
                                      (0x1A61, 0x1A61), (0x1A63, 0x1A64), (0xAA7B, 0xAA7B), (0xAA7D, 0xAA7D),
                                      (0x11720, 0x11721)) for c in range(a, b + 1)]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["a\r\nb", "ab\r\n\r\ncd", "x\r\n", "\u1000\u102c\u1000\u102c", "x \u1000\u102b\u1038 y",
     *(f"\u1000{mark}\u1000" for mark in _SPACING_ALONE), "\u1a20\u1a61\u1a20\u1a63 \u1a20\u1a64"],
)  # fmt: skip
def test_a_one_token_chunk_covers_just_the_characters_its_token_meets(bpe, text):
    """A byte-level BPE reads CR and LF as tokens of their own: the LF's chunk started at the LF, inside the one
    character CR LF is (UAX #29 GB3); and a chunk ending before a Myanmar AA (U+102C, a spacing mark that begins
    a character, GB9a's exceptions) took it in. Reference: each chunk is its token widened to whole ``\\X``
    clusters (no mark follows whitespace here)."""
    from tokenpool.model.document_tokens import tokenize_document

    tokens = tokenize_document(bpe.tokenization, text)
    got = bpe.encode_chunks([text], chunks="tokens:1")
    want = [_aligned(text, s, e) for s, e in zip(tokens.starts.tolist(), tokens.ends.tolist(), strict=True)]
    assert list(zip(got.start.tolist(), got.end.tolist(), strict=True)) == want


@pytest.mark.parametrize(
    "text",
    ["\u1780\u17d2\u1780 x", "\u179f\u17d2\u178f\u17d2\u179a\u17b8", "\u1019\u1039\u1018", "\u1a20\u1a60\u1a20",
     "\u1b13\u1b44\u1b13", "\ua98f\ua9c0\ua98f", "\u0915\u094d\u0937"],
)  # fmt: skip
def test_a_subscript_consonant_stays_with_its_stack(bpe, text):
    """Khmer COENG (U+17D2), the Myanmar, Tai Tham, Balinese and Javanese viramas join the consonant after them
    into one character (Unicode 17's InCB=Linker, UAX #29 GB9c): a one-token chunk started at the subscript
    consonant of "ស្ត្រី". Reference: each chunk is its token widened to whole ``\\X`` clusters."""
    from tokenpool.model.document_tokens import tokenize_document

    tokens = tokenize_document(bpe.tokenization, text)
    got = bpe.encode_chunks([text], chunks="tokens:1")
    want = [_aligned(text, s, e) for s, e in zip(tokens.starts.tolist(), tokens.ends.tolist(), strict=True)]
    assert list(zip(got.start.tolist(), got.end.tolist(), strict=True)) == want


def test_flag_runs_are_found_without_holding_the_text():
    """Finding where a run of regional indicators starts (a flag pairs them from it) kept the last 4 texts alive
    in an ``lru_cache`` (~3 MB for a 200,000-character one, a user's text held after the call); texts of one
    length, their runs in other places, read in turn, still pair each run from its own start. Reference:
    ``regex``'s ``\\X`` and the text's reference count."""
    import sys

    from tokenpool.model.document_tokens import joined_characters

    flag = "\U0001f1eb\U0001f1f7"
    texts = ["".join(["x", flag * 3, "y"]), "".join([flag * 3, "xy"]), "".join(["xy", flag * 3]), flag * 2 + "x" + flag]
    for text in texts * 2 + [f"a {flag * 5000}b"]:
        held = sys.getrefcount(text)
        ours = joined_characters(text)
        assert sys.getrefcount(text) == held
        want = [m.span() for m in regex.finditer(r"\X", text) if len(m.group()) > 1]
        assert ours == want, ascii(text)


@pytest.mark.parametrize("text", ["\u1780\u17d2\u1780 \u1780\u17b6 " * 4, "\u1019\u1039\u1018\u102c\u1000" * 4])
def test_a_boundary_chunk_never_splits_a_stacked_consonant(bpe, text):
    """The splitter cut "ក្ក" (KA, COENG, KA: one character, 9 byte-level tokens) into "ក្" and "ក" at a chunk
    maximum of 6, silently; a character over the maximum is refused, naming it whole, as a ZWJ emoji is; at 9
    every chunk is whole ``\\X`` clusters. Reference: ``regex``'s ``\\X``."""
    pytest.importorskip("semantic_text_splitter")
    from tokenpool.errors import OptionError

    first = regex.match(r"\X", text).group()
    with pytest.raises(OptionError, match=rf"the text at \[0, {len(first)}\] \({first!r}\) is \d+ tokens, over"):
        bpe.encode_chunks([text], chunks="boundaries:6")
    got = bpe.encode_chunks([text], chunks="boundaries:9")
    cuts = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
    assert all(s in cuts and e in cuts for s, e in zip(got.start.tolist(), got.end.tolist(), strict=True))
