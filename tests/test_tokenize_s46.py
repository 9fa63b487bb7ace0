"""Stop 46 tokenisation fixes: an explicit ``add_eos=True`` on a tokenizer that ends every text with EOS itself."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodels import bert_folder, edit_json, minilm_tokenizer

from tokenpool import Encoder
from tokenpool.model.tokenization import Tokenization

TEXT = "one two three four five six seven eight nine ten eleven twelve " * 3


@pytest.fixture(scope="module")
def eos_tokenizer():
    tokenizer = minilm_tokenizer()
    tokenizer.eos_token = "[SEP]"  # its own suffix, [SEP], is its EOS
    return tokenizer


@settings(max_examples=25, deadline=None)
@given(max_length=st.integers(3, 40), words=st.integers(0, 45))
def test_add_eos_on_a_tokenizer_ending_with_eos_keeps_max_length(eos_tokenizer, max_length, words):
    text = " ".join(TEXT.split()[:words])
    expected = eos_tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    for add_eos in (True, False):
        tokenization = Tokenization(eos_tokenizer, max_length=max_length, add_eos=add_eos, lowercase=False,
                                    include_prompt=True)  # fmt: skip
        assert tokenization.tokenize([text]) == [expected]


def test_encoder_with_add_eos_truncates_as_sentence_transformers(tmp_path):
    folder = bert_folder(tmp_path / "m")
    edit_json(folder / "tokenizer_config.json", eos_token="[SEP]")
    encoder = Encoder(folder, max_length=15, add_eos=True, device="cpu")
    tokenizer = copy.deepcopy(encoder.tokenizer)
    assert encoder.tokenize([TEXT]).ids == [tokenizer(TEXT, truncation=True, max_length=15)["input_ids"]]
    # a prompt of 12 + 2 special tokens leaves room for a text: no EOS is added to them
    assert encoder.tokenization.prompt_length(" ".join(TEXT.split()[:12])) is None
