"""Stop 64, long documents: token chunks and whole characters (grapheme clusters), naive-chunk refusals, against
Unicode's own segmentation (the `regex` module's ``\\X``) and the tokenizer read directly."""

from __future__ import annotations

import pytest

from tokenpool.errors import OptionError

pytest.importorskip("transformers")
regex = pytest.importorskip("regex")  # (installed with transformers; an independent UAX #29 reference)

# characters of several code points that a byte-level BPE cuts into byte tokens: ZWJ sequences, a skin tone, a
# tag sequence (the flag of Scotland), conjoining Hangul jamo (L V T, L V, a syllable + T), a keycap, an accent
CLUSTERS = [
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\U0001f44d\U0001f3fd", "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "\u1100\u1161\u11a8", "\u1112\u1161", "\uac00\u11a8", "1\ufe0f\u20e3", "e\u0301",
]  # fmt: skip


def _boundaries(text: str) -> set[int]:
    return {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}


def test_token_chunks_never_cut_a_zwj_sequence_or_a_hangul_syllable(bpe):
    """docs/long-documents.md: a token chunk's ``text[start:end]`` never cuts a character apart. Only combining
    marks were taken on: a byte-level BPE's chunk ended inside a family emoji (``'👨'`` | ``'\\u200d'`` |
    ``'👩'`` ...), between a skin tone and its hand, or between the jamo of one Hangul syllable. Reference:
    Unicode's grapheme clusters (``regex`` ``\\X``); every chunk still covers its tokens."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    words = st.sampled_from([*CLUSTERS, "ok ", "a", " ", "hi there "])

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(words, min_size=1, max_size=8).map("".join), st.sampled_from(["tokens:1", "tokens:2", "tokens:3:1"]))
    def check(text: str, spec: str) -> None:
        if not text.strip():
            return
        got = bpe.encode_chunks([text], chunks=spec)
        cuts = _boundaries(text)
        tokens = bpe.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
            assert start in cuts and end in cuts, (text, start, end, text[start:end])
        assert got.start.min() <= min(a for a, _ in tokens) and got.end.max() >= max(b for _, b in tokens)

    check()


@pytest.mark.parametrize("text", ["ok x" + "\u0301" * 40 + " end", "ok " + CLUSTERS[0] + " end"])
def test_a_naive_refusal_for_one_character_over_max_length_does_not_ask_for_a_smaller_chunk_size(bpe, text):
    """One character whose code points are more tokens than max_length (a letter with 40 accents; a family
    emoji, 22 byte tokens with the special ones) is refused for naive token chunks at every chunk size, since
    chunks never cut a character; the refusal still said "use a smaller chunk size" (notes 63, left alone). It
    now names the character and that no chunk size avoids it; late chunking embeds the document."""
    start = 3
    end = text.index(" end")
    assert len(bpe.tokenizer(text[start:end])["input_ids"]) > 16  # the character alone, read by the tokenizer
    for size in (1, 4, 14):  # every size is refused: the advice of a smaller one was false
        with pytest.raises(OptionError, match="naive chunking would truncate it") as caught:
            bpe.encode_chunks([text], chunks=f"tokens:{size}", chunking="naive")
        message = str(caught.value)
        assert "smaller chunk size" not in message, message
        assert f"its character at [{start}, {end}] " in message and "no chunk size avoids; use chunking='late'" in message
    assert len(bpe.encode_chunks([text], chunks="tokens:4", chunking="late")) > 1



def test_boundary_chunks_never_cut_a_character_apart(bpe):
    """docs/long-documents.md: boundary chunks split at words, "then graphemes", and text that cannot be split
    small enough is an error naming it. A character of several code points over MAX (a family emoji of 20 byte
    tokens, a letter with 40 accents) was split between its code points by the library, silently: chunks of
    orphan accents or a lone ZWJ. Now every chunk is whole characters (``regex``'s ``\\X``), or the call is
    refused naming a whole character that the tokenizer reads as more than MAX tokens."""
    pytest.importorskip("semantic_text_splitter")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    words = st.sampled_from([*CLUSTERS, "x" + "\u0301" * 12, "ok ", "a", " ", "hi there. ", "\n\n"])

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(words, min_size=1, max_size=8).map("".join), st.sampled_from([2, 5, 9, 14]))
    def check(text: str, size: int) -> None:
        if not text.strip():
            return
        cuts = _boundaries(text)
        try:
            got = bpe.encode_chunks([text], chunks=f"boundaries:{size}")
        except OptionError as err:
            start, end = (int(v) for v in str(err).split("the text at [", 1)[1].split("]", 1)[0].split(", "))
            assert start in cuts and end in cuts and len(regex.findall(r"\X", text[start:end])) == 1, (text, str(err))
            assert len(bpe.tokenizer(text[start:end], add_special_tokens=False)["input_ids"]) > size, str(err)
            return
        for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
            assert start in cuts and end in cuts, (text, size, start, end, text[start:end])

    check()
