"""Stop 66 review (s66-longdocs): the characters `_joins` keeps whole against Unicode's own segmentation (the
`regex` module's ``\\X``, an independent UAX #29 reference): an Indic conjunct written with ZWJ (its half form),
the prepended signs Unicode lists, and random well-formed text of mixed scripts never cut inside a cluster."""

from __future__ import annotations

import random

import pytest

regex = pytest.importorskip("regex")

from tokenpool.model.document_tokens import joined_characters  # noqa: E402


def _uncut(text: str) -> list[str]:
    """The ``\\X`` clusters of several code points that `joined_characters` cuts (one of its ranges does not
    hold the cluster whole)."""
    ours = joined_characters(text)
    out = []
    for match in regex.finditer(r"\X", text):
        a, b = match.span()
        if b - a > 1 and not any(s <= a and b <= e for s, e in ours):
            out.append(match.group())
    return out


@pytest.mark.parametrize("text", ["\u0915\u094d\u200d\u0937", "x \u0915\u094d\u200d\u0937\u093f", "\u0995\u09cd\u200d\u09af ok"])
def test_a_conjunct_written_with_zwj_is_one_character(text):
    """"क्‍ष" (KA, virama, ZWJ, SSA: the half form asked for) is one character (UAX #29 GB9c: ZWJ is InCB
    Extend between the linker and the consonant); the ZWJ rule for emoji answered first, and cut the SSA off."""
    assert _uncut(text) == []


@pytest.mark.parametrize("sign", ["\U00011f02", "\U000113d1"])
def test_every_prepended_sign_begins_the_character_after_it(sign):
    """Kawi sign repha (U+11F02) and Tulu-Tigalari repha (U+113D1) are Prepend (UAX #29 GB9b) as the Arabic
    number sign is: the letter after them is part of their character."""
    assert _uncut(f"a {sign}b c") == []


# well-formed clusters of many scripts, joined at random (a cluster never continues the one before it)
_CLUSTERS = [
    "a", "e\u0301", "\u0915", "\u0915\u094d\u0937", "\u0924\u094d\u0930\u093f", "\u0936\u094d\u0930\u0940",
    "\u0915\u094d\u200d\u0937", "\u0995\u09cd\u09b7", "\u0a95\u0acd\u0ab7", "\u0b15\u0b4d\u0b37", "\u0c15\u0c4d\u0c37",
    "\u0d15\u0d4d\u0d37", "\u0d4e\u0d15", "\u0600\u0661\u0662", "\u06dd\u0661", "\U0001f1e9\U0001f1ea",
    "\U0001f1eb\U0001f1f7", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f44d\U0001f3fd", "\u2764\ufe0f",
    "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", "\r\n", "\n", " ", ".", "1",
    "\u1100\u1161\u11a8", "\uac00\u11a8", "\uac01", "\u0e19\u0e49\u0e33", "\u0e17\u0e33", "\u0eaa\u0eb3",
    "\uff76\uff9e", "\uff8a\uff9f", "\u0627\u064e", "\u05e9\u05c1", "\u00e9",
]


@pytest.mark.parametrize("seed", range(20))
def test_random_well_formed_text_is_never_cut_inside_a_cluster(seed):
    """Random runs of well-formed clusters (flags, emoji ZWJ sequences and tags, conjuncts, CR LF, Hangul,
    Thai, prepended signs, marks): every ``\\X`` cluster is one `joined_characters` range or inside one."""
    rng = random.Random(seed)
    for _ in range(200):
        text = "".join(rng.choice(_CLUSTERS) for _ in range(rng.randint(1, 12)))
        assert _uncut(text) == [], ascii(text)


@pytest.mark.parametrize("text", ["x \u0915\u094d\u200d\u0937 ok", "\u0924\u094d\u200d\u0930\u093f\u092f"])
def test_token_chunks_never_cut_a_zwj_conjunct(bpe, text):
    """A token chunk ended after the ZWJ of "क्‍ष", the next began with its SSA. Reference: ``regex``'s ``\\X``."""
    got = bpe.encode_chunks([text], chunks="tokens:1")
    cuts = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
    for start, end in zip(got.start.tolist(), got.end.tolist(), strict=True):
        assert start in cuts and end in cuts, (text, start, end, text[start:end])


def _gpt2_tokenization():
    """A byte-level BPE with GPT-2's pre-tokenizer (``\\s+(?!\\S)``: a whitespace run but its last, then the last)
    that merges CR LF and CR LF CR: a slice cut elsewhere in a run of line ends reads other tokens."""
    import threading
    from types import SimpleNamespace

    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = [("\u010d", "\u010a"), ("\u010d\u010a", "\u010d"), ("\u010d\u010a\u010d", "\u010a")]  # č Ċ: CR LF
    for a, b in merges:
        vocab[a + b] = len(vocab)
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    return SimpleNamespace(tokenizer=tokenizer, lock=threading.Lock(), lowercase=False)


@pytest.mark.parametrize("before", [10, 3])
def test_a_slice_cut_in_a_run_of_crlf_line_ends_stays_before_its_last_lf(before):
    """A slice of a long text ends before the last whitespace of a run, as GPT-2's ``\\s+(?!\\S)`` reads it
    ("\\r\\n\\r" then "\\n"); the cluster back-off moved a cut before that LF to before its CR, and a byte-level
    BPE then read "\\r\\n" | "\\r" "\\n" where the text read whole has "\\r\\n\\r" "\\n". Reference: the tokenizer
    read whole (the cut falls in the second half's run, or at the slice's last character, ``before``)."""
    from tokenpool.model.document_tokens import SLICE_CHARS, tokenize_document

    tokenization = _gpt2_tokenization()
    text = "w" * (SLICE_CHARS - before) + "\r\n\r\n" + "z" * 100
    whole = tokenization.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenize_document(tokenization, text).ids.tolist() == whole
