"""Long documents: windows, the most-central window rule, late and naive chunks, per-token output, spans.

References are independent of `tokenpool.model.longdocs`: windows are run one at a time through the model and
each token's window is chosen by brute force; chunks are checked against `pool` over one full forward pass and
against `encode` of the chunk's text.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_encoder import _qwen2_weights, _save_sentence_transformer  # noqa: E402

from tokenpool import Encoder, pool  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.model import document_tokens, longdocs  # noqa: E402

WORDS = [
    *["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "quietly", "hex", "one", "jovial"],
    *["bank", "clerk", "near", "the", "old", "stone", "bridge", "at", "dawn", "and", "nobody", "notices", "anything", "unusual", "today"],
]


def _text(n_words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=n_words))


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-qwen-left")
    _qwen2_weights(folder, padding_side="left")
    _save_sentence_transformer(folder, "lasttoken")
    return folder


_BUILT: dict = {}


def _with(encoder, **options):
    """An Encoder like ``encoder`` with other options (built once per option set: tiny, but not free)."""
    wanted = dataclasses.replace(encoder.options, **options)
    if wanted not in _BUILT:
        _BUILT[wanted] = Encoder.from_options(wanted)
    return _BUILT[wanted]


# ------------------------------------------------------------------------------------ brute-force reference


def _brute_force_tokens(encoder: Encoder, text: str, stride: int) -> np.ndarray:
    """Every token's hidden state ([CLS], body, [SEP]) from the window where min(left, right) context is
    largest (ties: the earlier window), each window run alone."""
    tok = encoder.tokenizer
    body = tok(text, add_special_tokens=False)["input_ids"]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    capacity = encoder.max_length - 2
    n = len(body)
    starts = [0] if n <= capacity else [*range(0, n - capacity, stride), n - capacity]
    states = []
    for s in starts:
        ids = np.array([[cls, *body[s : s + capacity], sep]], dtype=np.int64)
        hidden, _ = encoder.runner.forward(ids, np.ones_like(ids))
        states.append(hidden[0].double().numpy())
    rows = [states[0][0]]
    for t in range(n):
        best, best_score = None, None
        for j, s in enumerate(starts):
            e = min(s + capacity, n)
            if s <= t < e:
                score = min(t - s, e - 1 - t)
                if best_score is None or score > best_score:
                    best, best_score = j, score
        rows.append(states[best][1 + t - starts[best]])
    last = starts[-1]
    rows.append(states[-1][1 + min(last + capacity, n) - last])
    return np.stack(rows)


@settings(max_examples=12)
@given(n_words=st.integers(1, 60), stride=st.integers(1, 13), seed=st.integers(0, 5))
def test_each_token_takes_its_most_central_window(small, n_words, stride, seed):
    text = _text(n_words, seed)
    # the engine behind encode(output="tokens") with long_documents="windows", at this stride (one model load)
    engine = longdocs.WindowEngine(small, prompt=None, stride=stride)
    plan = engine.plan(0, longdocs.tokenize_document(small.tokenization, text), None, True)
    (done,) = engine.run([plan], batch_size=3)
    got = engine.token_states(done, special_tokens=True)
    want = _brute_force_tokens(small, text, stride)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ["mean", "max", "weightedmean", "cls", "lasttoken", "mean_sqrt_len_tokens"])
def test_windows_vector_pools_every_token_once(small, strategy):
    text = _text(70, seed=3)
    encoder = _with(small, pooling=strategy, long_documents="windows", window_stride=5)
    want = pool(_brute_force_tokens(encoder, text, 5), None, strategy)
    np.testing.assert_allclose(encoder.encode(text), want, rtol=1e-5, atol=1e-6)
    # a truncating encoder sees only the first window (the first token is the same either way)
    if strategy != "cls":
        assert not np.allclose(_with(small, pooling=strategy).encode(text), want, atol=1e-4)


@pytest.mark.parametrize("strategy", ["mean", "max", "weightedmean", "cls", "lasttoken"])
def test_windows_equal_truncate_exactly_when_documents_fit(tiny_bert_folder, strategy):
    texts = [_text(k, seed=k) for k in (1, 3, 8, 12, 13, 14)] + ["", "  "]
    truncate = Encoder(tiny_bert_folder, pooling=strategy, max_length=16, device="cpu")
    windows = _with(truncate, long_documents="windows")
    assert np.array_equal(truncate.encode(texts, batch_size=3), windows.encode(texts, batch_size=3))


def test_windows_equal_truncate_exactly_left_padded_last_token(qwen_folder):
    texts = ["the quick fox", "a lazy dog sleeps", "x"]
    truncate = Encoder(qwen_folder, device="cpu")
    windows = _with(truncate, long_documents="windows")
    assert np.array_equal(truncate.encode(texts, batch_size=2), windows.encode(texts, batch_size=2))
    # and a long text through windows on a left-padded model: the last token is the EOS of the last window
    long = " ".join(["the quick fox jumps over the lazy dog"] * 40)
    tokens = windows.encode([long, "x"], output="tokens", batch_size=2)
    np.testing.assert_allclose(windows.encode(long), tokens[0][-1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ chunks


def _full_pass(encoder: Encoder, text: str) -> np.ndarray:
    ids = np.array([encoder.tokenization.tokenize([text])[0]], dtype=np.int64)
    hidden, _ = encoder.runner.forward(ids, np.ones_like(ids))
    return hidden[0].numpy()


@pytest.mark.parametrize("strategy", ["mean", "max", "cls", "weightedmean"])
def test_late_chunks_pool_the_span_of_one_full_forward_pass(full, strategy):
    text = _text(50, seed=1)
    encoder = _with(full, pooling=strategy)
    hidden = _full_pass(encoder, text)
    chunks = encoder.encode_chunks(text, chunks="tokens:16:4", chunking="late")
    n = hidden.shape[0] - 2
    starts = list(range(0, n, 12))
    starts = starts[: next(i for i, s in enumerate(starts) if s + 16 >= n) + 1]
    assert chunks.chunk.tolist() == list(range(len(starts)))
    for k, s in enumerate(starts):
        want = pool(hidden[1 + s : 1 + min(s + 16, n)], None, strategy)
        np.testing.assert_allclose(chunks.vectors[k], want, rtol=1e-5, atol=1e-6)


def test_late_chunks_of_spans_and_their_character_offsets(full):
    text = "Cats purr. Dogs bark loudly at night! Birds sing."
    spans = [[11, 37], [0, 10], [5, 20]]  # unsorted and overlapping: allowed, kept in the given order
    chunks = full.encode_chunks([text], chunks="spans", spans=[spans], chunking="late")
    assert chunks.start.tolist() == [11, 0, 5] and chunks.end.tolist() == [37, 10, 20]
    hidden = _full_pass(full, text)
    tokens = longdocs.tokenize_document(full.tokenization, text)
    for k, (s, e) in enumerate(spans):
        inside = [t for t in range(len(tokens)) if tokens.starts[t] < e and tokens.ends[t] > s]
        want = pool(hidden[1 + inside[0] : 2 + inside[-1]], None, "mean")
        np.testing.assert_allclose(chunks.vectors[k], want, rtol=1e-5, atol=1e-6)


def test_naive_chunks_equal_encoding_the_chunk_text(full):
    texts = [_text(40, seed=2), "Cats purr. Dogs bark."]
    chunks = full.encode_chunks(texts, chunks="tokens:8:2", chunking="naive", batch_size=4)
    pieces = [texts[d][s:e] for d, s, e in zip(chunks.doc, chunks.start, chunks.end, strict=True)]
    assert np.array_equal(chunks.vectors, full.encode(pieces, batch_size=4))
    late = full.encode_chunks(texts, chunks="tokens:8:2", chunking="late")
    assert np.array_equal(late.start, chunks.start) and np.array_equal(late.doc, chunks.doc)
    # every chunk's characters re-tokenise to its tokens
    for piece in pieces:
        assert 1 <= len(full.tokenizer(piece, add_special_tokens=False)["input_ids"]) <= 8


def test_late_chunks_across_windows_match_windows_tokens(small):
    """Chunk vectors of a multi-window document = pool over the windowed token states of their span."""
    text = _text(60, seed=4)
    encoder = _with(small, window_stride=6)
    tokens = _with(encoder, long_documents="windows").encode(text, output="tokens")
    chunks = encoder.encode_chunks(text, chunks="tokens:10:3")
    for k, (s, e) in enumerate(longdocs.token_chunks(tokens.shape[0] - 2, longdocs.TokenChunks(10, 3))):
        np.testing.assert_allclose(chunks.vectors[k], tokens[1 + s : 1 + e].mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["mean", "max", "weightedmean", "cls", "lasttoken", "mean_sqrt_len_tokens"])
def test_late_chunks_are_the_float64_loop_over_their_windowed_tokens(small, strategy):
    """Units are pooled as windows come out (`core.streaming.RunningPool`); each chunk vector equals the plain
    float64 loop over the windowed token states of its span, weights counted from the chunk's first token."""
    from reference import reference_row

    text = _text(80, seed=11)
    encoder = _with(small, pooling=strategy, window_stride=4)
    tokens = _with(encoder, long_documents="windows").encode(text, output="tokens")
    chunks = encoder.encode_chunks(text, chunks="tokens:9:4")
    ranges = longdocs.token_chunks(tokens.shape[0] - 2, longdocs.TokenChunks(9, 4))
    assert len(ranges) == len(chunks) > 10
    for k, (s, e) in enumerate(ranges):
        want = reference_row(tokens, list(range(1 + s, 1 + e)), strategy)
        np.testing.assert_allclose(chunks.vectors[k], want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ spans and tokenising


UNICODE = "naïve café 😀 emoji, 日本語のテキスト and Ünïcode façade 👩‍👩‍👧 end"


def test_spans_map_to_tokens_through_offsets_on_unicode(full):
    tokens = longdocs.tokenize_document(full.tokenization, UNICODE)
    ref = full.tokenizer(UNICODE, add_special_tokens=False, return_offsets_mapping=True)
    assert tokens.ids.tolist() == ref["input_ids"]
    for word in ("café", "😀", "日本語", "テキスト", "façade", "👩‍👩‍👧"):
        s = UNICODE.index(word)
        ranges = longdocs.span_chunks(tokens, [[s, s + len(word)]], len(UNICODE), 0)
        a, b = ranges[0]
        assert a < b
        covered = "".join(UNICODE[tokens.starts[t] : tokens.ends[t]] for t in range(a, b))
        assert covered.replace(" ", "") == word.replace(" ", "")  # the tokens spell the span exactly
    # one CJK character: exactly its own token
    s = UNICODE.index("本")
    (a, b), = longdocs.span_chunks(tokens, [[s, s + 1]], len(UNICODE), 0)
    assert b - a == 1 and UNICODE[tokens.starts[a] : tokens.ends[a]] == "本"


def test_a_span_over_no_token_names_the_document_and_span(full):
    text = "cats   dogs"
    with pytest.raises(OptionError, match=r"document 1: span 1 \[4, 6\] covers no token"):
        full.encode_chunks(["a b", text], chunks="spans", spans=[[[0, 1]], [[0, 4], [4, 6]]])


@pytest.mark.parametrize(
    ("spans", "needle"),
    [
        ([[0, 99]], r"span \[0, 99\] is not within the text"),
        ([[3, 3]], r"span \[3, 3\] is not within"),
        ([[-1, 2]], r"span \[-1, 2\]"),
        ([[0, 1, 2]], "a span must be a pair of integers"),
        ([[0.5, 2]], "a span must be a pair of integers"),
        ([], "no spans"),
        ("0-4", "spans must be a list of"),
    ],
)
def test_bad_spans(full, spans, needle):
    with pytest.raises(OptionError, match=r"document 0: " + needle):
        full.encode_chunks(["cats and dogs"], chunks="spans", spans=[spans])


def test_sliced_tokenisation_equals_whole(full, monkeypatch):
    text = " ".join([UNICODE, _text(300, seed=9), UNICODE] * 3)
    whole = longdocs.tokenize_document(full.tokenization, text)
    monkeypatch.setattr(document_tokens, "SLICE_CHARS", 97)  # (its owner: longdocs only re-exports the name)
    calls = []
    original = full.tokenization.tokenizer.__call__
    monkeypatch.setattr(
        type(full.tokenization.tokenizer), "__call__", lambda self, *a, **k: calls.append(a) or original(*a, **k)
    )
    sliced = longdocs.tokenize_document(full.tokenization, text)
    assert sum(len(call[0]) for call in calls) > 1  # the text went to the tokenizer in several slices
    for name in ("ids", "starts", "ends"):
        assert np.array_equal(getattr(whole, name), getattr(sliced, name))


@settings(max_examples=40)
@given(n=st.integers(0, 400), capacity=st.integers(2, 40), data=st.data())
def test_owned_ranges_partition_the_body(n, capacity, data):
    stride = data.draw(st.integers(1, capacity - 1))
    starts = longdocs.window_starts(n, capacity, stride)
    lo, hi = longdocs.owned_ranges(starts, n, capacity)
    assert lo[0] == 0 and hi[-1] == n and np.array_equal(lo[1:], hi[:-1])
    assert np.all(starts + capacity >= np.minimum(hi, n)) and np.all(lo >= starts)  # inside own window
    assert starts[-1] + min(capacity, n) == n or n == 0


# ------------------------------------------------------------------------------------ per-token output


def test_token_output_is_unpadded_and_can_drop_special_tokens(full):
    texts = ["a b c", _text(20, seed=5), ""]
    with_special = full.encode(texts, output="tokens", batch_size=2)
    without = full.encode(texts, output="tokens", special_tokens=False, batch_size=2)
    for text, a, b in zip(texts, with_special, without, strict=True):
        n = len(full.tokenizer(text)["input_ids"])
        assert a.shape == (n, 32) and b.shape == (n - 2, 32) and a.dtype == np.float32
        np.testing.assert_allclose(a, _full_pass(full, text), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(a[1:-1], b)


def test_token_output_truncates_in_truncate_mode(small):
    tokens = small.encode(_text(40), output="tokens")
    assert tokens.shape == (16, 32)


# ------------------------------------------------------------------------------------ bad input


def test_bad_options(tiny_bert_folder, small):
    with pytest.raises(OptionError, match="window_stride 14 must be smaller than the window"):
        Encoder(tiny_bert_folder, max_length=16, long_documents="windows", window_stride=14, device="cpu")
    with pytest.raises(OptionError, match="long_documents must be one of"):
        Encoder(tiny_bert_folder, max_length=16, long_documents="split", device="cpu")
    with pytest.raises(OptionError, match="chunk size 15 exceeds the 14 text tokens"):
        small.encode_chunks("a b", chunks="tokens:15")
    with pytest.raises(OptionError, match="chunk overlap"):
        small.encode_chunks("a b", chunks="tokens:4:4")
    with pytest.raises(OptionError, match="chunks must be"):
        small.encode_chunks("a b", chunks="sentences:3")
    with pytest.raises(OptionError, match="document 1: only whitespace"):
        small.encode_chunks(["a b", "   "], chunks="tokens:4")
    with pytest.raises(OptionError, match="document 0: empty"):
        small.encode_chunks([""], chunks="tokens:4", chunking="naive")
    with pytest.raises(OptionError, match="chunking must be"):
        small.encode_chunks("a b", chunks="tokens:4", chunking="early")
    dim = Encoder(tiny_bert_folder, max_length=16, truncate_dim=8, device="cpu")
    with pytest.raises(OptionError, match="truncate_dim=8"):
        dim.encode("a b", output="tokens")
    with pytest.raises(OptionError, match="output must be"):
        small.encode("a b", output="matrix")


def test_llama_index_embeds_documents_through_windows(tiny_bert_folder, small):
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    text = _text(50, seed=7)
    embedding = TokenPoolEmbedding(
        str(tiny_bert_folder), pooling="mean", max_length=16, normalize=False, device="cpu", long_documents="windows"
    )
    want = _with(small, long_documents="windows").encode(text)
    np.testing.assert_allclose(embedding.get_text_embedding(text), want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(small.encode(text), want, atol=1e-4)


def test_retrieval_modes_give_the_encoders_vectors(small):
    from tokenpool.evaluation.modes import DOCUMENT_MODES

    assert {"windows", "late-128", "naive-128"} <= set(DOCUMENT_MODES)
    texts = [_text(40, seed=8), "a b c", _text(25, seed=9)]
    call = {"batch_size": 4, "prompt": None, "prompt_name": None, "progress": False}
    windows = DOCUMENT_MODES["windows"](small, texts, [None, "max"], **call)
    np.testing.assert_array_equal(windows[None].doc_index, [0, 1, 2])
    np.testing.assert_allclose(windows[None].vectors, _with(small, long_documents="windows").encode(texts), atol=1e-6)
    plain_max = _with(small, pooling="max", normalize=False, long_documents="windows").encode(texts)
    np.testing.assert_allclose(windows["max"].vectors, plain_max, atol=1e-6)
    for kind in ("late", "naive"):
        units = DOCUMENT_MODES[f"{kind}-128"](small, texts, [None], **call)[None]
        want = small.encode_chunks(texts, chunks="tokens:14", chunking=kind)  # 128 capped at the window (14)
        np.testing.assert_array_equal(units.doc_index, want.doc)
        np.testing.assert_allclose(units.vectors, want.vectors, atol=1e-6)
