"""Windows and chunks of a tokenizer that lower-cases: truncate mode's vectors, spans that slice the caller's text.

References are independent of `tokenpool.model.windows` / `chunks`: truncate mode's `encode` (one forward pass
of the text as sentence-transformers builds it), ``text[start:end]`` for character spans.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
regex = pytest.importorskip("regex")

from test_encoder import _qwen2_weights  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.model import longdocs  # noqa: E402


@pytest.fixture(scope="module")
def cased_lowering(tmp_path_factory):
    """A cased byte-level BPE tokenizer in a folder whose sentence_bert_config.json says do_lower_case: the
    encoder lower-cases texts itself (``str.lower``, as sentence-transformers does)."""
    folder = tmp_path_factory.mktemp("tiny-qwen-lowercase")
    _qwen2_weights(folder, padding_side="right")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": True, "max_seq_length": 128}))
    encoder = Encoder(folder, pooling="mean", max_length=128, normalize=False, device="cpu")
    assert encoder.tokenization.lowercase
    return encoder


# "İ" lower-cases to two characters ("i" + U+0307); "Σ" at a word's end to the final sigma "ς"
LONGER_LOWER = ["İstanbul is big. Ankara too.", "ΟΔΟΣ İzmir ΟΔΟΣ", "no capital here İ"]


@pytest.mark.parametrize("text", LONGER_LOWER)
def test_windows_lower_case_the_text_as_truncate_mode_does(cased_lowering, text):
    """A document that fits one window is the same vector in windows and truncate mode (docs: bit for bit),
    also where a character lower-cases to several: windows tokenised a text that kept "İ" upper-case."""
    want = cased_lowering.encode([text])
    got = cased_lowering.encode([text], long_documents="windows")
    np.testing.assert_array_equal(got, want)
    ids, spans = cased_lowering.token_spans([text], special_tokens=False)[0]
    row = cased_lowering.tokenization.encode([text])[0][0]
    assert ids.tolist() == row[: len(ids)]
    # spans index the original text: in order, inside it, together covering every non-space character
    assert (spans[:, 0] <= spans[:, 1]).all() and spans.min() >= 0 and spans.max() <= len(text)
    covered = {i for s, e in spans.tolist() for i in range(s, e)}
    assert covered >= {i for i, ch in enumerate(text) if not ch.isspace()}


def test_late_chunks_of_a_longer_lower_case_text_slice_the_original(cased_lowering):
    """Late chunk rows' start/end index the caller's text (not its lower-cased form, which is longer)."""
    text = "İİİ İstanbul İzmir Ankara"
    chunks = cased_lowering.encode_chunks([text], chunks="tokens:2", chunking="late")
    assert chunks.end.max() <= len(text) and chunks.start[0] == 0 and chunks.end[-1] == len(text)
    naive = cased_lowering.encode_chunks([text], chunks="tokens:2", chunking="naive")
    pieces = [text[s:e] for s, e in zip(naive.start, naive.end, strict=True)]
    np.testing.assert_array_equal(naive.vectors, cased_lowering.encode(pieces))


def test_boundary_chunks_of_a_longer_lower_case_text_are_at_most_max_tokens(cased_lowering):
    """Boundary chunks are at most MAX tokens as naive chunking encodes them (the text lower-cased by
    ``str.lower``) and as late chunking pools them, and slice the original text."""
    pytest.importorskip("semantic_text_splitter")
    text = " ".join(["İİ İstanbul.", "ΟΔΟΣ İzmir ΣΣ.", "Ankara İİİ İ."] * 6)
    chunks = cased_lowering.encode_chunks([text], chunks="boundaries:6", chunking="naive")
    pieces = [text[s:e] for s, e in zip(chunks.start, chunks.end, strict=True)]
    specials = sum(map(len, cased_lowering.tokenization.specials())) + int(cased_lowering.tokenization.add_eos)
    alone = cased_lowering.tokenization.encode(pieces, truncation=None)[1] - specials
    assert alone.max() <= 6 and "".join(pieces).replace(" ", "") == text.replace(" ", "")
    ids, spans = cased_lowering.token_spans([text], special_tokens=False)[0]
    for s, e in zip(chunks.start.tolist(), chunks.end.tolist(), strict=True):
        assert ((spans[:, 0] < e) & (spans[:, 1] > s)).sum() <= 6


UNICODE = list("aZ İıΣσς éñ\u0301\u0300 日本語 😀👩‍👧\r\n\t.,!ß\u200bﬁ½Ⅻ\u00a0\u3000")


@given(text=st.text(st.sampled_from(UNICODE), min_size=1, max_size=30), which=st.booleans(), data=st.data())
def test_late_token_chunks_pool_one_full_pass_and_slice_the_text(full, cased_lowering, text, which, data):
    """A document that fits one window: each late token chunk is the float64 mean of truncate mode's token
    states over its tokens, its start/end are its first and last tokens' characters in the caller's text, and
    a naive chunk is ``encode(text[start:end])`` (WordPiece and a lower-casing byte-level BPE; accents,
    combining marks, "İ", emoji, CJK, \\r\\n, zero-width and compatibility characters)."""
    encoder = cased_lowering if which else full
    ids, spans = encoder.token_spans([text])[0]
    body = np.flatnonzero(spans[:, 0] >= 0)
    if not text.strip() or not len(body):
        return  # no chunk (an error, tested elsewhere)
    assert ids.tolist() == encoder.tokenization.encode([text])[0][0]
    size = data.draw(st.integers(1, 5))
    spec = f"tokens:{size}:{data.draw(st.integers(0, size - 1))}"
    late = encoder.encode_chunks([text], chunks=spec, chunking="late")
    states = encoder.encode([text], output="tokens")[0].astype(np.float64)
    for (a, b), vector, start, end in zip(longdocs.token_chunks(len(body), longdocs.parse_chunks(spec)),
                                          late.vectors, late.start, late.end, strict=True):  # fmt: skip
        np.testing.assert_allclose(vector, states[body[a:b]].mean(0), rtol=1e-5, atol=2e-5)
        # ... widened to whole characters: on over the combining marks after the last token (stop 54: those no token
        # covers; stop 63: also one that is a token of its own; stop 64: to the end of its grapheme cluster, the
        # `regex` module's \X, as a ZWJ), back to the cluster's start unless a whitespace character is before it
        cuts = {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}
        first_start, last_end = spans[body[a], 0], spans[body[b - 1], 1]
        marks = next(k for k in range(last_end, len(text) + 1) if k in cuts)
        letter = next(k for k in range(first_start, -1, -1) if k in cuts or text[k - 1].isspace())
        assert (start, end) == (letter, marks) and 0 <= start < end <= len(text)
    naive = encoder.encode_chunks([text], chunks=spec, chunking="naive")
    pieces = [text[s:e] for s, e in zip(naive.start, naive.end, strict=True)]
    np.testing.assert_array_equal(naive.vectors, encoder.encode(pieces))
