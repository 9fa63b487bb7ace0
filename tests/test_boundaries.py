"""Chunks at text boundaries (``chunks="boundaries:MAX[:OVERLAP]"``, semantic-text-splitter).

Checked independently of `tokenpool.model.boundaries`: sentence boundaries come from how the test texts are
built, token counts from the model's own tokenizer (in the document through its offsets, and each chunk's text
alone), late vectors from `pool` over one full forward pass, naive vectors from `encode` of the chunk text.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenpool.core.chunking import BoundaryChunks, TokenChunks, parse_chunks
from tokenpool.errors import OptionError, install_hint

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
regex = pytest.importorskip("regex")
pytest.importorskip("semantic_text_splitter")

from clitools import assert_one_error_line  # noqa: E402
from test_encoder import _qwen2_weights  # noqa: E402

from tokenpool import Encoder, pool  # noqa: E402
from tokenpool.model import boundaries, longdocs  # noqa: E402

WORDS = [
    *["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "hex"],
    *["bank", "clerk", "near", "old", "stone", "bridge", "at", "dawn", "nobody", "notices", "anything", "today"],
    *["café", "naïve", "façade", "😀", "👩‍👩‍👧", "日本語", "テキスト", "unbelievably", "photosynthesis"],
]
ENDS = [".", "!", "?"]
UNICODE_SENTENCES = [
    "Naïve café 😀 emoji, and more.",
    "日本語のテキストです。",
    "Ünïcode façade 👩‍👩‍👧 ends here!",
    "次の文です。",
]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A byte-level BPE tokenizer (emoji and CJK are several tokens, offsets still in characters)."""
    folder = tmp_path_factory.mktemp("tiny-qwen-boundaries")
    _qwen2_weights(folder, padding_side="right")
    return Encoder(folder, pooling="mean", max_length=128, normalize=False, device="cpu")


def _sentence(draw_words: list[str], end: str) -> str:
    """Words as one sentence, starting with a capital letter: Unicode's sentence rules (UAX #29, SB8), which
    the splitter follows, join ". 😀 the." to the sentence before it (no break before a lowercase word)."""
    words = draw_words if draw_words[0][:1].isalpha() else ["So", *draw_words]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]]) + end


sentences = st.builds(
    _sentence, st.lists(st.sampled_from(WORDS), min_size=1, max_size=8), st.sampled_from(ENDS)
) | st.sampled_from(UNICODE_SENTENCES)
paragraphs = st.lists(sentences, min_size=1, max_size=6)
documents = st.lists(paragraphs, min_size=1, max_size=4)


def _join(doc: list[list[str]]) -> tuple[str, set[int], set[int]]:
    """The text of paragraphs of sentences, and the character offsets where sentences start and end."""
    text, starts, ends = "", set(), set()
    for p, paragraph in enumerate(doc):
        if p:
            text += "\n\n"
        for s, sentence in enumerate(paragraph):
            if s:
                text += " "
            starts.add(len(text))
            text += sentence
            ends.add(len(text))
    return text, starts, ends


def _count_in_document(encoder: Encoder, text: str, start: int, end: int) -> int:
    """Tokens of the whole text whose characters meet [start, end) (brute force over the offsets)."""
    enc = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return sum(1 for s, e in enc["offset_mapping"] if s < end and e > start)


def _count_alone(encoder: Encoder, piece: str) -> int:
    return len(encoder.tokenizer(piece, add_special_tokens=False)["input_ids"])


def _split(encoder: Encoder, text: str, spec: str) -> list[tuple[int, int]]:
    parsed = parse_chunks(spec)
    splitter = boundaries.BoundarySplitter(encoder.tokenization, parsed)
    chars, ranges = splitter.chunks(text, longdocs.tokenize_document(encoder.tokenization, text), 0)
    assert len(chars) == len(ranges)
    return chars


# ------------------------------------------------------------------------------------ specs


def test_parse_boundaries_specs():
    assert parse_chunks("boundaries:256") == BoundaryChunks(256, 0)
    assert parse_chunks(" Boundaries:64:8 ") == BoundaryChunks(64, 8)
    assert parse_chunks("tokens:64:8") == TokenChunks(64, 8)
    assert str(BoundaryChunks(64, 8)) == "boundaries:64:8"
    spec = BoundaryChunks(5)
    assert parse_chunks(spec) is spec


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("boundaries:0", "chunk size must be an int >= 1, got 0 in chunks='boundaries:0'"),
        ("boundaries:abc", "got 'boundaries:abc'"),
        ("boundaries:", "got 'boundaries:'"),
        ("boundaries:8:8", "chunk overlap (8) must be smaller than the chunk maximum (8) in chunks='boundaries:8:8'"),
        ("boundaries:8:9", "chunk overlap (9)"),
        ("boundaries:-3", "got 'boundaries:-3'"),
        ("sentences:8", "got 'sentences:8'"),
    ],
)
def test_bad_specs_name_the_value(spec, needle):
    with pytest.raises(OptionError) as info:
        parse_chunks(spec)
    assert needle in str(info.value)


def test_max_over_a_window_is_refused(small):
    with pytest.raises(OptionError, match=r"chunk maximum 15 exceeds the 14 text tokens .* in chunks='boundaries:15'"):
        small.encode_chunks("Cats purr. Dogs bark.", chunks="boundaries:15")
    assert len(small.encode_chunks("Cats purr. Dogs bark.", chunks="boundaries:14")) >= 1


# ------------------------------------------------------------------------------------ the splitter's contract


def test_library_offsets_are_characters_not_bytes():
    """What `BoundarySplitter` relies on: `chunk_indices` offsets index the Python str (not its UTF-8 bytes)."""
    from semantic_text_splitter import TextSplitter

    text = " ".join(UNICODE_SENTENCES * 3)
    chunks = TextSplitter(12).chunk_indices(text)
    assert len(chunks) > 3
    assert all(text[offset : offset + len(chunk)] == chunk for offset, chunk in chunks)
    # the same offsets as bytes would point elsewhere once a multi-byte character has passed
    assert any(text.encode()[offset : offset + len(chunk.encode())] != chunk.encode() for offset, chunk in chunks)


def test_chunks_are_packed_to_max_without_special_tokens():
    """One-token words with no sentence breaks: every chunk but the last is exactly MAX tokens, MAX above the
    truncation length the bundled model's tokenizer.json saves (128) — counted without special tokens and with
    truncation off."""
    encoder = Encoder(device="cpu")
    assert encoder.tokenization.max_length == 256
    text = " ".join(["cat", "dog", "sun", "tree"] * 150)  # 600 tokens
    chars = _split(encoder, text, "boundaries:200")
    counts = [_count_alone(encoder, text[s:e]) for s, e in chars]
    assert counts == [200, 200, 200]
    chunks = encoder.encode_chunks(text, chunks="boundaries:250", chunking="late")
    assert [_count_in_document(encoder, text, s, e) for s, e in zip(chunks.start, chunks.end, strict=True)] == [
        250, 250, 100
    ]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents, size=st.integers(4, 40), which=st.sampled_from(["bert", "qwen"]))
def test_chunks_are_whole_sentences_that_fit_and_cover_the_text(full, qwen, doc, size, which):
    encoder = full if which == "bert" else qwen
    text, sentence_starts, sentence_ends = _join(doc)
    # a character over MAX (stop 64: a grapheme, as a ZWJ family emoji of 16 byte-level tokens) is refused whole
    largest = max(map(_count_alone, [encoder] * len(text), regex.findall(r"\X", text)))
    if largest > size:
        with pytest.raises(OptionError, match=r"is \d+ tokens, over the chunk maximum \d+, and has no boundary left"):
            _split(encoder, text, f"boundaries:{size}")
        return
    chars = _split(encoder, text, f"boundaries:{size}")
    # every chunk fits MAX: in the document (late chunking) and tokenised alone (naive chunking)
    for s, e in chars:
        assert text[s:e] == text[s:e].strip() and text[s:e]
        assert 1 <= _count_in_document(encoder, text, s, e) <= size
        assert _count_alone(encoder, text[s:e]) <= size
    # in order, disjoint, and together they hold every non-whitespace character
    assert chars == sorted(chars)
    assert all(a[1] <= b[0] for a, b in zip(chars, chars[1:], strict=False))
    covered = np.zeros(len(text), dtype=bool)
    for s, e in chars:
        covered[s:e] = True
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    # when every sentence fits, no chunk cuts one
    sentences = [(s, min(e for e in sentence_ends if e > s)) for s in sorted(sentence_starts)]
    if all(
        max(_count_in_document(encoder, text, s, e), _count_alone(encoder, text[s:e])) <= size for s, e in sentences
    ):
        assert {s for s, _ in chars} <= sentence_starts
        assert {e for _, e in chars} <= sentence_ends


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents, size=st.integers(6, 30), overlap=st.integers(1, 5))
def test_overlapping_chunks_fit_and_move_forward(full, doc, size, overlap):
    text, _, _ = _join(doc)
    chars = _split(full, text, f"boundaries:{size}:{overlap}")
    for s, e in chars:
        assert 1 <= _count_in_document(full, text, s, e) <= size
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(chars, chars[1:], strict=False))
    assert chars[0][0] == len(text) - len(text.lstrip()) and chars[-1][1] == len(text.rstrip())


def test_unicode_offsets_are_character_offsets(full, qwen):
    """Chunk rows' start/end slice the Python str at sentence edges, after emoji, ZWJ sequences and CJK (byte
    offsets would land elsewhere)."""
    text, starts, ends = _join([UNICODE_SENTENCES, UNICODE_SENTENCES[::-1]])
    assert len(text.encode()) > len(text) + 40
    for encoder in (full, qwen):
        size = max(_count_alone(encoder, sentence) for sentence in UNICODE_SENTENCES)  # every sentence fits
        for chunking in ("late", "naive"):
            chunks = encoder.encode_chunks(text, chunks=f"boundaries:{size}", chunking=chunking)
            pieces = [text[s:e] for s, e in zip(chunks.start, chunks.end, strict=True)]
            assert set(chunks.start.tolist()) <= starts and set(chunks.end.tolist()) <= ends, pieces
            assert len(pieces) >= 4
            assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)
            assert chunks.chunk.tolist() == list(range(len(pieces)))


# ------------------------------------------------------------------------------------ vectors


def _full_pass(encoder: Encoder, text: str) -> np.ndarray:
    ids = np.array([encoder.tokenization.tokenize([text])[0]], dtype=np.int64)
    hidden, _ = encoder.runner.forward(ids, np.ones_like(ids))
    return hidden[0].numpy()


def test_late_chunks_pool_their_span_of_one_full_forward_pass(full):
    text, _, _ = _join([["Cats purr softly.", "Dogs bark at night!"], UNICODE_SENTENCES, ["The end is near?"]])
    hidden = _full_pass(full, text)
    assert hidden.shape[0] <= 128  # the document fits one window
    offsets = full.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chunks = full.encode_chunks(text, chunks="boundaries:10", chunking="late")
    assert len(chunks) >= 4
    for k, (s, e) in enumerate(zip(chunks.start.tolist(), chunks.end.tolist(), strict=True)):
        inside = [t for t, (a, b) in enumerate(offsets) if a < e and b > s]
        assert inside == list(range(inside[0], inside[-1] + 1)) and len(inside) <= 10
        want = pool(hidden[1 + inside[0] : 2 + inside[-1]], None, "mean")
        np.testing.assert_allclose(chunks.vectors[k], want, rtol=1e-5, atol=1e-6)


def test_naive_chunks_equal_encoding_the_chunk_text(full):
    texts = [_join([["Cats purr softly.", "Dogs bark at night!"], UNICODE_SENTENCES])[0], "Short one."]
    naive = full.encode_chunks(texts, chunks="boundaries:9:3", chunking="naive", batch_size=4)
    pieces = [texts[d][s:e] for d, s, e in zip(naive.doc, naive.start, naive.end, strict=True)]
    assert np.array_equal(naive.vectors, full.encode(pieces, batch_size=4))
    late = full.encode_chunks(texts, chunks="boundaries:9:3", chunking="late")
    for name in ("doc", "chunk", "start", "end"):
        assert np.array_equal(getattr(late, name), getattr(naive, name))


# ------------------------------------------------------------------------------------ our count rules


def test_chunks_the_library_miscounts_are_split_again(full, monkeypatch):
    """The library counts with a word-level tokenizer (one token per whitespace word), ours is WordPiece with
    punctuation apart: the library's chunks are too long by our count and must be split again, still at word
    boundaries and never over MAX."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    def words_only(_tokenizer):
        counter = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        counter.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return counter

    monkeypatch.setattr(boundaries, "counting_tokenizer", words_only)
    text = "Photosynthesis, unbelievably, notices façades! " * 6 + "日本語のテキストです。"
    from semantic_text_splitter import TextSplitter

    raw = TextSplitter.from_huggingface_tokenizer(words_only(None), 6).chunks(text)
    assert max(_count_alone(full, piece) for piece in raw) > 6  # the library alone would overshoot
    chars = _split(full, text, "boundaries:6")
    honest = [_count_in_document(full, text, s, e) for s, e in chars]
    assert max(honest) <= 6 and len(chars) > 6
    word_edges = {m.start() for m in re.finditer(r"\S+", text)} | {m.end() for m in re.finditer(r"\S+", text)}
    # cut at words wherever a word fits; only the over-long words themselves are split further
    long_words = [m for m in re.finditer(r"\S+", text) if _count_alone(full, m.group()) > 6]
    for s, e in chars:
        inside_long = any(m.start() <= s < m.end() or m.start() < e <= m.end() for m in long_words)
        assert inside_long or (s in word_edges and e in word_edges)


def test_a_piece_without_tokens_is_left_out(full, monkeypatch):
    """A zero-width space counts as a word for a whitespace counter but is no token for WordPiece."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    def words_only(_tokenizer):
        counter = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        counter.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return counter

    monkeypatch.setattr(boundaries, "counting_tokenizer", words_only)
    text = "Cats.\n\n\u200b\n\nDogs."
    assert _count_alone(full, "\u200b") == 0
    from semantic_text_splitter import TextSplitter

    assert "\u200b" in TextSplitter.from_huggingface_tokenizer(words_only(None), 1).chunks(text)
    assert _split(full, text, "boundaries:1") == [(0, 4), (4, 5), (text.index("Dogs"), len(text) - 1), (len(text) - 1, len(text))]


def test_text_with_no_boundary_small_enough_is_an_error_naming_the_document(qwen):
    """A single character that is more tokens than MAX (an emoji in byte-level BPE) cannot be chunked."""
    emoji = "👩‍👩‍👧"
    assert _count_alone(qwen, emoji) > 2
    with pytest.raises(OptionError, match=r"document 1: the text at \[\d+, \d+\] \('👩.* over the chunk maximum 2, and has no boundary"):
        qwen.encode_chunks(["a b", f"aa. {emoji} bb."], chunks="boundaries:2")


def test_empty_documents_are_errors(full):
    with pytest.raises(OptionError, match="document 1: only whitespace"):
        full.encode_chunks(["Cats.", " \n\n "], chunks="boundaries:8")


def test_missing_library_names_the_extra(full, monkeypatch):
    monkeypatch.setitem(sys.modules, "semantic_text_splitter", None)
    with pytest.raises(ImportError, match="semantic-text-splitter") as info:
        full.encode_chunks("Cats purr.", chunks="boundaries:8")
    assert install_hint(info.value) == "pip install 'tokenpool[chunking]'"


# ------------------------------------------------------------------------------------ command line


def test_cli_writes_boundary_chunks_and_refuses_bad_specs(run, tiny_bert_folder, tmp_path):
    texts = [_join([["Cats purr softly.", "Dogs bark at night!"], UNICODE_SENTENCES])[0], "Short one."]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _, err = run("embed", src, "-o", out, "--chunks", "boundaries:10", "--model", tiny_bert_folder, "-q")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = Encoder(tiny_bert_folder, device="cpu").encode_chunks(texts, chunks="boundaries:10")
    assert [(r["doc"], r["chunk"], r["start"], r["end"]) for r in rows] == list(
        zip(want.doc.tolist(), want.chunk.tolist(), want.start.tolist(), want.end.tolist(), strict=True)
    )
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), want.vectors, rtol=1e-5, atol=1e-6)
    for spec in ("boundaries:abc", "boundaries:0", "boundaries:8:8"):
        code, _, err = run("embed", src, "-o", tmp_path / "bad.jsonl", "--chunks", spec, "--model", tiny_bert_folder)
        assert_one_error_line(code, err, spec)
    code, _, err = run(
        "embed", src, "-o", tmp_path / "bad.jsonl", "--chunks", "boundaries:127", "--model", tiny_bert_folder
    )
    assert_one_error_line(code, err, "boundaries:127", "exceeds the 126 text tokens")
    assert not (tmp_path / "bad.jsonl").exists()


def test_cli_without_the_library_says_what_to_install(run, tiny_bert_folder, tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Cats purr. Dogs bark."}\n', encoding="utf-8")
    monkeypatch.setitem(sys.modules, "semantic_text_splitter", None)
    out = tmp_path / "out.jsonl"
    code, _, err = run("embed", src, "-o", out, "--chunks", "boundaries:8", "--model", tiny_bert_folder)
    assert_one_error_line(code, err, "semantic-text-splitter", "pip install 'tokenpool[chunking]'")
    assert not out.exists() and not list(tmp_path.glob("*partial*"))


# ------------------------------------------------------------------------------------ retrieval modes


def test_retrieval_modes_give_boundary_chunk_vectors(small):
    from tokenpool.evaluation.modes import DOCUMENT_MODES

    assert {"late-boundaries-256", "naive-boundaries-128"} <= set(DOCUMENT_MODES)
    texts = [_join([["Cats purr softly.", "Dogs bark at night!"], UNICODE_SENTENCES])[0], "a b c", "   "]
    call = {"batch_size": 4, "prompt": None, "prompt_name": None, "progress": False}
    for kind in ("late", "naive"):
        units = DOCUMENT_MODES[f"{kind}-boundaries-128"](small, texts, [None], **call)[None]
        want = small.encode_chunks(texts[:2], chunks="boundaries:14", chunking=kind)  # 128 capped at 14
        assert len(want) > 4
        np.testing.assert_array_equal(units.doc_index[:-1], want.doc)
        np.testing.assert_allclose(units.vectors[:-1], want.vectors, atol=1e-6)
        assert units.doc_index[-1] == 2  # a blank document still scores (one unit), as in the token modes
