"""Stop 63, long documents: chunk specs, spans and windows at the edges, against the documented text and
independent references."""

from __future__ import annotations

import pytest

from tokenpool.errors import OptionError

pytest.importorskip("transformers")


def test_a_naive_boundary_chunk_over_the_window_is_told_to_lower_the_chunk_maximum(small, tiny_bert_folder):
    """A naive boundary chunk read after a prompt that joins its first word ("zq" + "xylophone") can be more tokens
    than the splitter counted alone, and is refused (never truncated). The refusal told a ``boundaries:MAX`` user
    to "use a smaller chunk size", which that spec does not have (its MAX is the "chunk maximum",
    docs/long-documents.md and the spec's own errors)."""
    from transformers import AutoTokenizer

    text = ("unbelievable ok hyperparameter antidisestablishment zebra a. xylophone quizzically hyperparameter "
            "xylophone tokenisation a. a unbelievable hyperparameter hyperparameter. ok a zebra I "
            "antidisestablishment. unbelievable zebra zebra quizzically.")  # fmt: skip
    with pytest.raises(OptionError, match="naive chunking would truncate it") as caught:
        small.encode_chunks([text], chunks="boundaries:13", chunking="naive", prompt="zq")
    message = str(caught.value)
    assert "use a smaller chunk maximum (" in message and "chunk size" not in message, message
    # the refusal is real: transformers reads the named chunk after the prompt as more than max_length tokens
    start, end = (int(v) for v in message.split("its text [", 1)[1].split("]", 1)[0].split(", "))
    assert len(AutoTokenizer.from_pretrained(tiny_bert_folder)("zq" + text[start:end])["input_ids"]) > 16


def test_a_piece_too_large_for_boundaries_is_named_in_the_users_terms(tmp_path):
    """One character that is more tokens than MAX (an emoji in byte-level BPE, MAX 2) cannot be split; the error
    quoted the spec as ``boundaries:2:0``, a form the user never typed (the parse errors quote it as written).
    It now names the chunk maximum, as docs/long-documents.md and the spec's other errors call MAX."""
    from test_encoder import _qwen2_weights

    from tokenpool import Encoder

    _qwen2_weights(tmp_path, padding_side="right")
    encoder = Encoder(tmp_path, pooling="mean", max_length=16, normalize=False, device="cpu")
    text = "hi 😀 there"
    assert len(encoder.tokenizer("😀", add_special_tokens=False)["input_ids"]) > 2  # the reference: one emoji
    for chunking in ("late", "naive"):
        with pytest.raises(OptionError) as caught:
            encoder.encode_chunks([text], chunks="boundaries:2", chunking=chunking)
        message = str(caught.value)
        assert "document 0: the text at [3, 4] ('😀')" in message and "over the chunk maximum 2," in message, message
        assert "boundaries:2:0" not in message, message


@pytest.mark.parametrize("chunking", ["late", "naive"])
@pytest.mark.parametrize("spec", ["tokens:1", "tokens:2", "tokens:3:1"])
def test_token_chunks_never_cut_a_letter_from_a_vowel_sign_that_is_a_token_of_its_own(tmp_path, spec, chunking):
    """docs/long-documents.md: a token chunk's ``text[start:end]`` "never cuts a character from its marks". Only
    marks no token covers (a stripped accent) were taken on: where the tokenizer makes a mark a token of its own
    (byte-level BPE on Thai and Hindi vowel signs; WordPiece on Devanagari), a chunk ended on the bare letter and
    the next began with an orphan sign ("ด" | "ีมาก"). Reference: transformers' offsets of each chunk's tokens and
    Unicode's categories."""
    import unicodedata

    from test_encoder import _qwen2_weights

    from tokenpool import Encoder

    _qwen2_weights(tmp_path, padding_side="right")
    encoder = Encoder(tmp_path, pooling="mean", max_length=16, normalize=False, device="cpu")
    text = "cafe\u0301 \u0e14\u0e35\u0e21\u0e32\u0e01 \u0939\u093f\u0902\u0926\u0940 Z\u0300oe\u0308 plain"
    offsets = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    size, overlap = (int(v) for v in (spec.split(":")[1:] + ["0"])[:2])
    rows = encoder.encode_chunks([text], chunks=spec, chunking=chunking)
    starts = range(0, max(len(offsets) - overlap, 1), size - overlap)
    assert len(rows) == len(starts)
    for first, start, end in zip(starts, rows.start.tolist(), rows.end.tolist(), strict=True):
        held = offsets[first : first + size]
        assert start <= min(s for s, _ in held) and end >= max(e for _, e in held)  # its tokens' characters
        assert not unicodedata.category(text[start]).startswith("M"), (spec, text[start:end])
        assert end == len(text) or not unicodedata.category(text[end]).startswith("M"), (spec, text[start:end])


def test_token_chunks_over_a_long_run_of_marks_are_widened_in_linear_time(tmp_path, monkeypatch):
    """Widening each token chunk to whole characters walked the whole run of marks around its edges once per
    chunk: a letter with 20,000 combining accents (Zalgo text; a byte-level BPE makes each accent tokens of its
    own) cost 8,001,200 category look-ups for 20,018 characters (quadratic: 44 s to plan 60,000 marks, a 1 MB
    server document minutes). Each run is now walked once; the spans are the documented rule's, read from a
    per-chunk walk over Unicode categories."""
    import unicodedata

    from test_encoder import _qwen2_weights

    from tokenpool import Encoder
    from tokenpool.model import document_tokens

    _qwen2_weights(tmp_path, padding_side="right")
    encoder = Encoder(tmp_path, pooling="mean", max_length=128, normalize=False, device="cpu")
    text = "word \u0301\u0300 a" + "\u0301\u0308" * 10_000 + " \u0e14\u0e35 \u0301tail"
    offsets = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    def mark(k: int) -> bool:
        return k < len(text) and unicodedata.category(text[k]).startswith("M")

    expected = []  # docs/long-documents.md: on over the marks after the end, back from marks at the start to
    for first in range(0, len(offsets), 100):  # their letter (none after whitespace or at the text's start)
        start, end = offsets[first][0], offsets[min(first + 100, len(offsets)) - 1][1]
        while start > 0 and mark(start) and not text[start - 1].isspace():
            start -= 1
        while mark(end):
            end += 1
        expected.append((start, end))
    looked = []

    class Counting:
        def category(self, char: str) -> str:
            looked.append(char)
            return unicodedata.category(char)

    monkeypatch.setattr(document_tokens, "unicodedata", Counting())
    rows = encoder.plan_chunks([text], chunks="tokens:100")
    assert list(zip(rows.start.tolist(), rows.end.tolist(), strict=True)) == expected
    assert len(looked) < 3 * len(text), len(looked)  # each character looked at about once (not once per chunk)
