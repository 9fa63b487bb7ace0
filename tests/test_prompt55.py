"""A prompt is read with the text in every mode (stop 55).

Truncate mode (`Encoder.encode`, as sentence-transformers) tokenises ``prompt + text`` together. The long-document
paths (windows, ``output="tokens"``, `Encoder.token_spans`, late chunks) tokenised the prompt alone and the text
alone, so where a tokenizer does not split ``prompt + text`` at the prompt's end (a byte-level BPE merges the
space ending "query: " into the first word, a WordPiece continues a prompt ending in a letter into the text)
their tokens and vectors differed from truncate mode's. The reference here is truncate mode's own rows
(`Encoder.tokenize`, `Encoder.iter_token_batches`): a document that fits one window must give their ids and
vectors in every path; a longer one, the ids of ``prompt + text`` tokenised whole, read window by window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from test_encoder import _bert_weights, _qwen2_weights, _save_sentence_transformer  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.model import document_tokens  # noqa: E402

PROMPTS = ["query: ", "Represent this sentence here", "Instruct: find it.", "passage:\n", "", " ", "query:  "]
TEXTS = ["the cat sat", "Hello world, hello!", "x", "", " leading space", "\nnew line first", "cat"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    made = {}
    for kind in ("bert", "qwen2"):
        for include in (True, False):
            folder = tmp_path_factory.mktemp(f"{kind}-{include}")
            if kind == "bert":  # WordPiece (all-MiniLM-L6-v2's tokenizer)
                _bert_weights(folder)
            else:  # a byte-level BPE
                _qwen2_weights(folder, padding_side="right")
            made[kind, include] = _save_sentence_transformer(folder, "mean", include_prompt=include)
    return made


def _encoder(folders, kind, include, **options):
    return Encoder(folders[kind, include], pooling="mean", normalize=False, device="cpu", **options)


def _truncate_row(encoder, text, prompt):
    """Truncate mode's row of ``prompt + text``: ids, hidden states (float32), the positions it pools."""
    ids = encoder.tokenize([text], prompt=prompt).ids[0]
    (batch,) = encoder.iter_token_batches([text], prompt=prompt, batch_size=1)
    hidden = batch.hidden[0].detach().float().numpy()[: len(ids)]
    skip = int(np.asarray(batch.prompt_length).reshape(-1)[0]) if batch.prompt_length is not None else 0
    return np.array(ids), hidden, skip


def test_the_reported_case_token_spans_have_truncate_modes_ids(folders):
    encoder = _encoder(folders, "qwen2", True)
    want = encoder.tokenize(["the cat sat"], prompt="query: ").ids[0]
    ids, spans = encoder.token_spans("the cat sat", prompt="query: ")
    assert ids.tolist() == want
    assert spans.min() >= -1 and spans.max() <= len("the cat sat")


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
@pytest.mark.parametrize("include", [True, False])
def test_one_window_documents_equal_truncate_mode_in_every_path(folders, kind, include):
    truncate = _encoder(folders, kind, include)
    windows = _encoder(folders, kind, include, long_documents="windows")
    for prompt in PROMPTS:
        for text in TEXTS:
            where = (prompt, text)
            ids, hidden, skip = _truncate_row(truncate, text, prompt)
            want = truncate.encode([text], prompt=prompt, batch_size=1)
            np.testing.assert_array_equal(windows.encode([text], prompt=prompt, batch_size=1), want, err_msg=str(where))
            for encoder in (truncate, windows):
                got_ids, spans = encoder.token_spans(text, prompt=prompt)
                assert got_ids.tolist() == ids[skip:].tolist(), where
                assert ((spans == -1).all(1) | ((spans >= 0).all(1) & (spans <= len(text)).all(1))).all(), where
                (tokens,) = encoder.encode([text], prompt=prompt, output="tokens", batch_size=1)
                np.testing.assert_array_equal(tokens, hidden[skip:], err_msg=str(where))
            if text.strip() and include:  # a late chunk of the whole text: truncate mode's text tokens, pooled
                chunk = windows.encode_chunks([text], chunks="spans", spans=[[(0, len(text))]], prompt=prompt)
                body = (truncate.token_spans(text, prompt=prompt)[1] >= 0).all(1)
                np.testing.assert_allclose(
                    chunk.vectors[0], hidden[body].astype(np.float64).mean(0), rtol=1e-5, atol=1e-6, err_msg=str(where)
                )


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
def test_long_documents_read_prompt_plus_text_whole_in_every_window(folders, kind, monkeypatch):
    encoder = _encoder(folders, kind, True, max_length=32, long_documents="windows", window_stride=3)
    text = "the cat sat on the mat and it was happy. Hello world, " * 6
    for prompt in PROMPTS:
        whole = encoder.tokenize([text], prompt=prompt, truncation=None).ids[0]
        ids, spans = encoder.token_spans(text, prompt=prompt)
        assert ids.tolist() == whole, prompt
        body = (spans >= 0).all(1)
        assert spans[body].min() >= 0 and spans[body].max() <= len(text)
        assert spans[body][0, 0] == 0  # the first body token starts the text (it may straddle the prompt's end)
        monkeypatch.setattr(document_tokens, "SLICE_CHARS", 40)  # tokenised slice by slice
        sliced_ids, sliced_spans = encoder.token_spans(text, prompt=prompt)
        monkeypatch.undo()
        assert sliced_ids.tolist() == whole and sliced_spans.tolist() == spans.tolist(), prompt


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
def test_every_window_carries_the_documents_own_prompt_tokens(folders, kind):
    """Each window row starts with the special tokens and the prompt tokens of ``prompt + text`` read whole."""
    encoder = _encoder(folders, kind, True, max_length=32, long_documents="windows", window_stride=3)
    text = "Hello world, the cat sat on the mat and it was happy. " * 3
    seen = []
    forward = encoder.runner.forward

    def spy(input_ids, mask, *args, **kwargs):
        seen.extend(np.asarray(row)[np.asarray(m) == 1].tolist() for row, m in zip(input_ids, mask, strict=True))
        return forward(input_ids, mask, *args, **kwargs)

    encoder.runner.forward = spy
    prompt = "query: " if kind == "qwen2" else "Represent this sentence here"
    ids, spans = encoder.token_spans(text, prompt=prompt)
    head = int(np.argmax((spans >= 0).all(1)))  # the prefix and prompt tokens: before the first text token
    encoder.encode([text], prompt=prompt)
    assert len(seen) > 2
    assert all(row[:head] == ids[:head].tolist() for row in seen)


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
def test_token_spans_have_truncate_modes_ids_for_any_prompt(folders, kind):
    encoder = _encoder(folders, kind, True)  # one model load for all examples (token_spans only reads it)

    @settings(max_examples=60, deadline=None)
    @given(prompt=st.text(alphabet="ab :.\nQ", max_size=8), text=st.text(alphabet="ab :.\nQthe", max_size=20))
    def any_prompt_and_text(prompt, text):
        ids, spans = encoder.token_spans(text, prompt=prompt)
        assert ids.tolist() == encoder.tokenize([text], prompt=prompt).ids[0]
        body = (spans >= 0).all(1)
        assert (spans[~body] == -1).all() and (spans[body] <= len(text)).all()

    any_prompt_and_text()


def _sentencepiece_like(style: str):
    """A small BPE tokenizer read as SentencePiece ones are: a metaspace pre-tokenizer, or Llama 2's
    normalizer prepending "▁" to every text it reads."""
    import threading
    import types

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    if style == "prepend":
        bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")  # (pieces never cross a "▁")
    else:
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=style)
    bpe.train_from_iterator(["query: the cat sat here. passage:\nHello world"] * 20, trainers.BpeTrainer(vocab_size=90))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    return types.SimpleNamespace(tokenizer=tokenizer, lowercase=False, lock=threading.Lock())


@pytest.mark.parametrize("style", ["always", "first", "prepend"])
def test_sentencepiece_like_tokenizers_read_prompt_plus_text_whole(style):
    tokenization = _sentencepiece_like(style)

    def check(prompt, text):
        want = tokenization.tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
        tokens = document_tokens.tokenize_document(tokenization, text, prompt)
        assert list(tokens.prompt) + tokens.ids.tolist() == want
        assert (tokens.starts >= 0).all() and (tokens.ends <= len(text)).all() and (tokens.starts <= tokens.ends).all()
        return tokens

    prompts, texts = st.text(alphabet="qury: \nthe.", max_size=8), st.text(alphabet="the cat :\n.here", max_size=30)

    @settings(max_examples=80, deadline=None)
    @given(prompt=prompts, text=texts)
    def any_prompt_and_text(prompt, text):
        check(prompt, text)

    any_prompt_and_text()
    text = "the cat sat here. passage: Hello world " * 4
    for prompt in PROMPTS:
        whole = check(prompt, text)
        for size in range(20, 40):  # slice by slice: the prompt read with the first slice
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(document_tokens, "SLICE_CHARS", size)
                sliced = check(prompt, text)
            assert sliced.prompt == whole.prompt and sliced.starts.tolist() == whole.starts.tolist(), (prompt, size)


def _left_truncating(folders, kind, tmp_path_factory):
    """The tiny model of ``kind`` with a tokenizer that truncates on the left (keeping the prompt)."""
    import json

    folder = tmp_path_factory.mktemp(f"{kind}-left")
    for item in folders[kind, True].iterdir():
        (folder / item.name).symlink_to(item)
    config = json.loads((folders[kind, True] / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "truncation_side": "left"}))
    return Encoder(folder, pooling="mean", normalize=False, device="cpu", max_length=32)


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
def test_a_left_cut_keeps_the_prompts_tokens_of_prompt_plus_text(folders, kind, tmp_path_factory):
    """Truncating on the left kept as many leading tokens as the prompt has alone: with "query: " on a byte-level
    BPE that kept the text's first word (" the", the prompt's lone space joined to it) and one text token fewer
    at the end."""
    encoder = _left_truncating(folders, kind, tmp_path_factory)
    prefix, suffix = encoder.tokenization.specials()
    text = "the cat sat on the mat and it was happy. " * 5
    for prompt in ["query: ", "Query: ", "Represent this: ", "Represent this sentence here"]:
        joint = encoder.tokenization.tokenizer(prompt + text, add_special_tokens=False, return_offsets_mapping=True)
        ends = [end for _, end in joint["offset_mapping"]] + [len(prompt) + 1]
        count = next(k for k, end in enumerate(ends) if end > len(prompt))  # the prompt's: those ending in it
        ids = joint["input_ids"]
        want = prefix + ids[:count] + ids[len(ids) - (32 - len(prefix) - len(suffix) - count) :] + suffix
        assert encoder.tokenize([text], prompt=prompt).ids[0] == want, prompt
        assert encoder.tokenize([text] * 20, prompt=prompt).ids == [want] * 20  # (one batch call, not text by text)
        got, _ = encoder.token_spans(text, prompt=prompt)
        assert got.tolist() == want, prompt
        (tokens,) = encoder.encode([text], prompt=prompt, output="tokens", batch_size=1)
        np.testing.assert_array_equal(tokens, _truncate_row(encoder, text, prompt)[1])


def test_a_lowercasing_encoder_reads_the_lowercased_prompt_with_the_text():
    """An encoder that lower-cases (`do_lower_case`) reads ``(prompt + text).lower()`` whole, as truncate mode;
    spans still index the original text (a character such as "İ" lower-cases to two)."""
    tokenization = _sentencepiece_like("always")
    tokenization.lowercase = True
    for prompt in ["Query: ", "QUERY İ: ", "HereİS"]:
        for text in ["İstanbul The Cat", "THE cat sat HERE.", "", "İ"]:
            want = tokenization.tokenizer((prompt + text).lower(), add_special_tokens=False)["input_ids"]
            tokens = document_tokens.tokenize_document(tokenization, text, prompt)
            assert list(tokens.prompt) + tokens.ids.tolist() == want, (prompt, text)
            assert (tokens.starts >= 0).all() and (tokens.ends <= len(text)).all(), (prompt, text)


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
@pytest.mark.parametrize("mode", ["windows", "late-128", "naive-128"])
def test_retrieval_document_modes_read_the_prompt_as_the_encoder_does(folders, kind, mode):
    """Retrieval's document modes (evaluation/longdoc_modes.py) are the Encoder's long-document paths: with a
    document prompt, their units are `encode(long_documents="windows")`'s vectors and `encode_chunks`' (they
    tokenised the text without its prompt after stop 55's fix of the Encoder's paths)."""
    from tokenpool.evaluation.modes import DOCUMENT_MODES

    encoder = _encoder(folders, kind, True, max_length=40)
    texts = [" ".join(f"word{i} the cat sat" for i in range(n)) for n in (3, 25, 60)]
    prompt = "query: "
    call = {"batch_size": 4, "prompt": prompt, "prompt_name": None, "progress": False}
    units = DOCUMENT_MODES[mode](encoder, texts, [None], **call)[None]
    if mode == "windows":
        want = _encoder(folders, kind, True, max_length=40, long_documents="windows").encode(texts, prompt=prompt)
        np.testing.assert_array_equal(units.doc_index, np.arange(len(texts)))
    else:
        chunking = mode.split("-")[0]
        size = min(128, encoder.window_capacity(prompt=prompt))  # (as the modes cut: a window's text tokens)
        got = encoder.encode_chunks(texts, chunks=f"tokens:{size}", chunking=chunking, prompt=prompt)
        want = got.vectors
        np.testing.assert_array_equal(units.doc_index, got.doc)
    np.testing.assert_allclose(units.vectors, want, rtol=0, atol=1e-6)


def test_a_documents_smaller_window_still_overlaps_under_a_given_stride(folders, monkeypatch):
    """A document whose prompt tokens of ``prompt + text`` outnumber the prompt's alone has a smaller window than the
    one ``window_stride`` was checked against: the stride is kept below that window, so windows overlap (with the
    stride at the checked window's size less one, the windows of such a document met end to end)."""
    from tokenpool.model import windows

    encoder = _encoder(folders, "qwen2", True, max_length=8, long_documents="windows", window_stride=6)
    seen = []
    real = windows.window_starts
    monkeypatch.setattr(windows, "window_starts", lambda n, capacity, stride: seen.append((capacity, stride)) or
                        real(n, capacity, stride))  # fmt: skip
    encoder.encode(["ing the cat sat on the mat and then the dog sat on the cat"], prompt="query")
    assert seen and all(stride < capacity or capacity == 1 for capacity, stride in seen)
