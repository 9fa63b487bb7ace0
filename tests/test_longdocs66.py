"""Stop 66, long documents: chunk edges and tokenizer slices never cut a grapheme cluster (a flag's two regional
indicators, a letter and its mark at the 200,000-character slice edge, Thai / Lao SARA AM, halfwidth katakana
sound marks); against Unicode's own segmentation (the `regex` module's ``\\X``) and the tokenizer read whole."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")
regex = pytest.importorskip("regex")  # (installed with transformers; an independent UAX #29 reference)

FLAGS = "\U0001f1e9\U0001f1ea\U0001f1eb\U0001f1f7\U0001f1ee\U0001f1f9"  # 🇩🇪🇫🇷🇮🇹: three flags, six indicators


def _boundaries(text: str) -> set[int]:
    return {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}


@pytest.mark.parametrize("text", [f"hi {FLAGS} ok", f"{FLAGS[:2]}x{FLAGS}", f"a {FLAGS * 3}"])
@pytest.mark.parametrize("spec", ["tokens:1", "tokens:2", "tokens:3:1"])
def test_token_chunks_never_cut_a_flag_between_its_two_regional_indicators(bpe, text, spec):
    """A byte-level BPE makes each regional indicator tokens of its own; a token chunk could end between the two
    indicators of a flag (``'🇩'`` | ``'🇪'``): Unicode pairs them from the start of a run (UAX #29 GB12/13).
    Reference: ``regex``'s ``\\X``; every chunk still covers its tokens."""
    got = bpe.encode_chunks([text], chunks=spec)
    cuts = _boundaries(text)
    for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
        assert start in cuts and end in cuts, (text, start, end, text[start:end])


@pytest.mark.parametrize("text", ["\u0e19\u0e49\u0e33 \u0e17\u0e33", "\u0eaa\u0eb3 x", "\uff76\uff9e\uff8a\uff9f"])
def test_thai_lao_sara_am_and_halfwidth_sound_marks_stay_with_their_letter(bpe, text):
    """Thai / Lao SARA AM (U+0E33, U+0EB3: Grapheme_Cluster_Break SpacingMark, though letters) and the halfwidth
    katakana (semi-)voiced sound marks (U+FF9E/F: Extend, though modifier letters) continue the character before
    them; a token chunk of "น้ำ" (water) ended before its SARA AM. Reference: ``regex``'s ``\\X``."""
    got = bpe.encode_chunks([text], chunks="tokens:1")
    cuts = _boundaries(text)
    for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
        assert start in cuts and end in cuts, (text, start, end, text[start:end])


def _nfc_tokenization():
    """A transformers fast tokenizer that composes (NFC) before a byte-level BPE of bytes alone: a slice cut
    between a letter and its accent tokenises differently from the text read whole, one cut between grapheme
    clusters does not (NFC composes only within a cluster)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE({ch: i for i, ch in enumerate(sorted(alphabet))}, []))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    return SimpleNamespace(tokenizer=tokenizer, lock=threading.Lock(), lowercase=False)


def test_a_slice_edge_with_no_word_boundary_falls_between_grapheme_clusters():
    """A text over `SLICE_CHARS` with no whitespace or punctuation in a slice's second half was cut at exactly
    200,000 characters, inside a cluster when one straddles it (here between a letter and its accent);
    the slice after it began with a lone accent, which no longer composed (NFC) with its letter. Now cut back to
    the cluster's start: the tokens are those of the text read whole, as at any cut between clusters."""
    from tokenpool.model.document_tokens import SLICE_CHARS, tokenize_document

    tokenization = _nfc_tokenization()
    text = "1" + "e\u03011" * (SLICE_CHARS // 3 + 10)
    assert SLICE_CHARS not in _boundaries(text[: SLICE_CHARS + 5])  # the exact cut is inside a cluster
    whole = tokenization.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenize_document(tokenization, text).ids.tolist() == whole


@pytest.mark.parametrize("text", ["\u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f \u0936\u094d\u0930\u0940", "\u0995\u09cd\u09b7 ok"])
def test_token_chunks_never_cut_an_indic_conjunct_after_its_virama(bpe, text):
    """A consonant after a virama that follows a consonant ("क्ष", "त्र", "श्री"; Bengali "ক্ষ") continues that
    character (UAX #29 GB9c, Unicode 15.1): a token chunk ended after the virama, its next one began with the
    conjunct's second consonant. Reference: ``regex``'s ``\\X``."""
    got = bpe.encode_chunks([text], chunks="tokens:1")
    cuts = _boundaries(text)
    for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
        assert start in cuts and end in cuts, (text, start, end, text[start:end])


@pytest.mark.parametrize("text", ["\u0600\u0661\u0662\u0663 ok", "x \u06dd\u0661\u0662", "\u0d4e\u0d15 ok"])
def test_token_chunks_never_cut_a_prepended_sign_from_what_follows(bpe, text):
    """A prepended concatenation mark (the Arabic number sign U+0600 before its digits, the end of ayah U+06DD,
    Malayalam dot reph U+0D4E) begins the character after it (UAX #29 GB9b); it was read as a control character
    alone, and a token chunk ended right after it. Reference: ``regex``'s ``\\X``."""
    got = bpe.encode_chunks([text], chunks="tokens:1")
    cuts = _boundaries(text)
    for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
        assert start in cuts and end in cuts, (text, start, end, text[start:end])
