"""Stop 46 tokenisation fixes: an explicit ``add_eos=True`` on a tokenizer that ends every text with EOS itself;
the onnx runtime's FolderTokenizer on BERT-family folders whose tokenizer.json differs from what transformers 5 builds."""

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


TRICKY = ["Héllo WORLD\x00 naïve 日本語 unbelievably\tok", "it's a test, isn't it?! [SEP] x", "", "   ", "ÀÉÎ\u200b\u00adz"]
_TEMPLATE = {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {}}  # fmt: skip
TOKENIZER_JSON_EDITS = {
    "no post-processor": {"post_processor": None},
    "another post-processor": {"post_processor": _TEMPLATE},
    "no normalizer": {"normalizer": None},
    "no pre-tokenizer": {"pre_tokenizer": None},
    "normalizer without clean_text": {"normalizer": {"type": "BertNormalizer", "clean_text": False,
                                                     "handle_chinese_chars": True, "strip_accents": None,
                                                     "lowercase": True}},
}  # fmt: skip


@pytest.mark.parametrize("tokenizer_class", ["BertTokenizer", "MPNetTokenizer", None])
@pytest.mark.parametrize("edit", list(TOKENIZER_JSON_EDITS))
def test_folder_tokenizer_rebuilds_a_bert_pipeline_as_transformers(tmp_path, edit, tokenizer_class):
    """transformers 5 rebuilds a BERT-family tokenizer's normalizer, pre-tokenizer and [CLS] … [SEP] template
    whatever tokenizer.json says: the onnx runtime's FolderTokenizer must give the same ids."""
    import json

    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    minilm_tokenizer().save_pretrained(tmp_path)
    edit_json(tmp_path / "config.json", model_type="bert")
    edit_json(tmp_path / "tokenizer.json", **TOKENIZER_JSON_EDITS[edit])
    path = tmp_path / "tokenizer_config.json"
    config = {k: v for k, v in json.loads(path.read_text()).items() if k != "tokenizer_class"}
    path.write_text(json.dumps({**config, **({"tokenizer_class": tokenizer_class} if tokenizer_class else {})}))
    expected = AutoTokenizer.from_pretrained(tmp_path)(TRICKY)["input_ids"]
    assert FolderTokenizer(tmp_path)(TRICKY)["input_ids"] == expected


@pytest.mark.parametrize("tokenizer_class", ["RobertaTokenizer", "GPT2Tokenizer", "DebertaTokenizer"])
def test_folder_tokenizer_drops_a_byte_level_normalizer_as_transformers(tmp_path, tokenizer_class):
    """transformers 5 builds RoBERTa / GPT-2 family tokenizers without the normalizer tokenizer.json may hold."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog", "Hello world, a test"] * 20, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.normalizer = normalizers.Lowercase()
    names = dict(zip(("bos_token", "pad_token", "eos_token", "unk_token", "mask_token"), specials, strict=True))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, cls_token="<s>", sep_token="</s>", **names).save_pretrained(tmp_path)
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": tokenizer_class}))
    texts = ["Hello World", " THE  quick\\tfox ", "", "ÀÉ x"]
    assert FolderTokenizer(tmp_path)(texts)["input_ids"] == AutoTokenizer.from_pretrained(tmp_path)(texts)["input_ids"]
