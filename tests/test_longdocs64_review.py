"""Stop 64 review of the long-documents fixes: grapheme widening of token chunks stays linear, and the naive
refusal's "no chunk size avoids it" looks at every chunk over max_length; against Unicode's own segmentation
(the `regex` module's ``\\X``) and the tokenizer read directly."""

from __future__ import annotations

import unicodedata
from types import SimpleNamespace

import pytest

from tokenpool.errors import OptionError

pytest.importorskip("transformers")
regex = pytest.importorskip("regex")  # (installed with transformers; an independent UAX #29 reference)

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"


def test_token_chunks_before_a_pictograph_after_a_zwj_after_marks_are_widened_in_linear_time(bpe, monkeypatch):
    """A letter with a long run of accents, a ZWJ and a pictograph (the pictograph starts a new character: no
    pictograph before the ZWJ): every token chunk in the run was widened to the pictograph, and the check that
    it starts a character (a walk back over the whole run of accents) ran again for each chunk — quadratic, 50
    million category look-ups and 42 s to plan 5,000 accents, 9 minutes for 20,000. Each character is looked at
    about once again; the spans are Unicode's grapheme clusters' (a chunk start after whitespace stays)."""
    from tokenpool.model import document_tokens

    run = "\u0301" * 1500
    text = f"a{run}\u200d\U0001f600 \U0001f600{run}\u200d\U0001f600 end"  # the second: one ZWJ sequence
    offsets = bpe.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cuts = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
    expected = []
    for first, last in zip(offsets[::2], offsets[1::2] + offsets[-1:] * (len(offsets) % 2), strict=True):
        start = next(k for k in range(first[0], -1, -1) if k in cuts or text[k - 1].isspace())
        expected.append((start, next(k for k in range(last[1], len(text) + 1) if k in cuts)))
    looked: list[str] = []  # the characters whose category is looked up
    counting = SimpleNamespace(category=lambda char: looked.append(char) or unicodedata.category(char))
    monkeypatch.setattr(document_tokens, "unicodedata", counting)
    rows = bpe.plan_chunks([text], chunks="tokens:2")
    assert list(zip(rows.start.tolist(), rows.end.tolist(), strict=True)) == expected
    assert len(looked) < 4 * len(text), len(looked)  # each character about once (not once per chunk)


@pytest.mark.parametrize("spec", ["tokens:4", "tokens:1", "tokens:6:2"])
def test_a_naive_refusal_names_a_character_over_max_length_in_any_chunk_over_not_only_the_first(bpe, spec):
    """The refusal's "no chunk size avoids it" looked only in the first chunk over max_length, and there only at
    its longest character in code points: ``"ok " + "e" + 8 accents + family emoji`` (the accented letter fits
    alone, the family emoji is 22 tokens) said "use a smaller chunk size", which no chunk size obeys. It now
    names the family emoji, its chunk and late chunking; the counts are the tokenizer's, read directly."""
    accented = "e" + "\u0301" * 8
    text = f"ok {accented}{FAMILY} end"
    assert len(bpe.tokenizer(accented)["input_ids"]) <= 16 < len(bpe.tokenizer(FAMILY)["input_ids"])
    start = text.index(FAMILY)
    with pytest.raises(OptionError, match="naive chunking would truncate it") as caught:
        bpe.encode_chunks([text], chunks=spec, chunking="naive")
    message = str(caught.value)
    assert "smaller chunk size" not in message, message
    assert f"its character at [{start}, {start + len(FAMILY)}] " in message, message
    assert f"alone is {len(bpe.tokenizer(FAMILY)['input_ids'])} tokens" in message, message
    assert "no chunk size avoids; use chunking='late'" in message, message
    chunk = int(message.split(", chunk ", 1)[1].split(":", 1)[0])
    rows = bpe.plan_chunks([text], chunks=spec)
    assert rows.start[chunk] <= start and start + len(FAMILY) <= rows.end[chunk]  # the chunk named holds it
