"""Plain tokenizer calls run on the Rust tokenizer itself (`tokenization.direct_backend`; text by text up to
`ONE_BY_ONE` texts, as a batch above): the same ids as the transformers tokenizer's own call, for every text, and
never while the wrapper left it truncating or padding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from test_encoder import _qwen2_weights  # noqa: E402
from tinymodels import minilm_tokenizer  # noqa: E402

from tokenpool.model.tokenization import ONE_BY_ONE, Tokenization, direct_backend  # noqa: E402

TRICKY = ["", " ", "\t\n", "[CLS] x [SEP]", "<|endoftext|>", "héllo wörld ÄÖÜ ß", "日本語のテキスト", "a\u0000b", "x" * 3000]
texts = st.lists(
    st.one_of(st.text(max_size=60), st.sampled_from(TRICKY), st.text(alphabet="ab [SEP]<|>", max_size=30)),
    min_size=1, max_size=6,
)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """The bundled WordPiece tokenizer, a byte-level BPE (tiny Qwen2) and the WordPiece one splitting specials."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("qwen2")
    _qwen2_weights(folder, padding_side="left")
    splitting = minilm_tokenizer()
    splitting.split_special_tokens = True
    return {"wordpiece": minilm_tokenizer(), "bpe": AutoTokenizer.from_pretrained(folder), "split": splitting}


def _both(tokenizer, batch: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """(ids by a tokenization's call, ids by the tokenizer's own call) of ``batch``."""
    tokenization = Tokenization(tokenizer, max_length=512, add_eos=False, lowercase=False, include_prompt=True)
    options = {"padding": False, "return_attention_mask": False, "return_token_type_ids": False, "truncation": False}
    return tokenization.encode(batch, truncation=None)[0], tokenizer(batch, add_special_tokens=True, **options)["input_ids"]


@settings(max_examples=60, deadline=None)
@given(batch=texts, name=st.sampled_from(["wordpiece", "bpe", "split"]), wide=st.booleans())
def test_direct_calls_give_the_tokenizers_own_ids(tokenizers, batch, name, wide):
    tokenizer = tokenizers[name]
    if wide:  # past ONE_BY_ONE: one batch call
        batch = (batch * (ONE_BY_ONE + 1))[: ONE_BY_ONE + len(batch)]
    assert direct_backend(tokenizer) is not None
    first, own = _both(tokenizer, batch)  # (the tokenizer's own call leaves the backend set for a plain call)
    tokenizer.backend_tokenizer.enable_truncation(3)  # as a truncating call leaves it: the next one must not cut
    again, _ = _both(tokenizer, batch)
    assert first == own and again == own


def test_a_direct_call_never_inherits_the_wrappers_truncation(tokenizers):
    tokenizer = tokenizers["wordpiece"]
    tokenization = Tokenization(tokenizer, max_length=512, add_eos=False, lowercase=False, include_prompt=True)
    long = ["one two three four five six seven"]
    full = tokenization._call(long)
    assert len(full[0]) == 9
    cut = tokenization._call(long, truncation=True, max_length=4)  # the wrapper leaves the backend truncating
    assert len(cut[0]) == 4 and tokenizer.backend_tokenizer.truncation is not None
    assert tokenization._call(long) == full  # so this call goes through the wrapper, which switches it off


def test_a_spy_on_the_tokenizers_call_sees_every_text(tokenizers, monkeypatch):
    tokenizer = tokenizers["wordpiece"]
    tokenization = Tokenization(tokenizer, max_length=512, add_eos=False, lowercase=False, include_prompt=True)
    assert tokenization.tokenize(["warm"]) == [[101, 4010, 102]]  # (the direct call, from now on)
    seen, original = [], type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, texts, *a, **k: seen.extend(texts) or original(
        self, texts, *a, **k))  # fmt: skip
    tokenization.tokenize(["one", "two"])
    assert seen == ["one", "two"]


def test_a_tokenizer_class_with_its_own_call_is_not_bypassed(tokenizers):
    tokenizer = minilm_tokenizer()

    class Custom(type(tokenizer)):
        def __call__(self, *args, **kwargs):  # e.g. a model's tokenizer that rewrites its texts first
            return super().__call__(*args, **kwargs)

    tokenizer.__class__ = Custom
    assert direct_backend(tokenizer) is None
    assert direct_backend(object()) is None
