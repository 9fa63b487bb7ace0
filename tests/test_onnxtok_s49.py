"""The onnx runtime's tokenizer (stop 49): the SentencePiece-style families transformers 5 rebuilds (Llama, CodeLlama,
Gemma) — their BPE model's unknown-token settings and their Metaspace prepend scheme — each compared with
transformers' AutoTokenizer (the torch runtime's tokenizer) on tiny tokenizers trained here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from tokenpool.model.fast_tokenizer import FolderTokenizer  # noqa: E402

_CORPUS = ["Hello World, the quick brown fox jumps over the lazy dog.", "naïve café über 日本語",
           "don't stop!!! max six taxis"] * 40  # fmt: skip
_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<bos>", "<eos>", "<mask>", "[CLS]", "[SEP]", "[MASK]"]
# characters outside the trained vocabulary (no byte tokens either): unknown to the model
_UNKNOWN_TEXTS = ["Hello Ω World €€ x", "naïve ☃☃ ok", "x  €", "€", "hello"]


def _trained(kind: str) -> dict:
    """The vocabulary and merges of a tiny Metaspace BPE (a Llama-like SentencePiece layout) for the BPE classes,
    else the vocabulary of a tiny Unigram one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if kind not in ("LlamaTokenizer", "CodeLlamaTokenizer"):
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=_SPECIALS, unk_token="<unk>")
        tokenizer.train_from_iterator(_CORPUS, trainer)
        return {"vocab": [tuple(item) for item in json.loads(tokenizer.to_str())["model"]["vocab"]]}
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.train_from_iterator(_CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=_SPECIALS))
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return {"vocab": model["vocab"], "merges": merges}


def _saved(folder: Path, kind: str, *, tokenizer_class: str | None = None, model: dict | None = None,
           pre_tokenizer: dict | None = None, normalizer: dict | None = None) -> Path:
    """A folder saved by transformers' ``kind``, then named ``tokenizer_class`` in tokenizer_config.json, its
    tokenizer.json's BPE model updated with ``model`` and its pre-tokenizer / normalizer replaced where given."""
    import transformers

    getattr(transformers, kind)(**_trained(kind)).save_pretrained(folder)
    config_path, tokenizer_path = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if tokenizer_class is not None:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config_path.write_text(json.dumps({**config, "tokenizer_class": tokenizer_class}), encoding="utf-8")
    saved = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    saved["model"].update(model or {})
    if pre_tokenizer is not None:
        saved["pre_tokenizer"] = pre_tokenizer
    if normalizer is not None:
        saved["normalizer"] = normalizer
    tokenizer_path.write_text(json.dumps(saved), encoding="utf-8")
    return folder


def _transformers_ids(folder: Path, texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)(texts)["input_ids"]


def _saved_ids(folder: Path, texts: list[str]) -> list[list[int]]:
    """The ids of ``texts`` by tokenizer.json's own pipeline and model, as saved."""
    from tokenizers import Tokenizer

    return [encoding.ids for encoding in Tokenizer.from_file(str(folder / "tokenizer.json")).encode_batch(texts)]


@pytest.mark.parametrize("settings", [{"unk_token": "<unk>", "fuse_unk": False, "byte_fallback": False},
                                      {"unk_token": None, "fuse_unk": False, "byte_fallback": True},
                                      {"unk_token": "<pad>", "fuse_unk": True, "byte_fallback": True}])  # fmt: skip
@pytest.mark.parametrize(("kind", "named"), [("LlamaTokenizer", None), ("LlamaTokenizer", "GemmaTokenizer"),
                                             ("CodeLlamaTokenizer", None)])  # fmt: skip
def test_rebuilt_bpe_model_unknown_token_settings_as_transformers(tmp_path, kind, named, settings):
    """transformers 5 rebuilds the BPE model of Llama (no unk token), CodeLlama and Gemma (the config's unk_token)
    with fuse_unk and byte_fallback on, whatever tokenizer.json's model says; the onnx runtime kept tokenizer.json's
    unk_token / fuse_unk / byte_fallback, so a text with characters outside the vocabulary got other ids (an
    unknown id where transformers drops the character, one per character where it fuses them), silently."""
    folder = _saved(tmp_path, kind, tokenizer_class=named, model=settings)
    expected = _transformers_ids(folder, _UNKNOWN_TEXTS)
    got = FolderTokenizer(folder)(_UNKNOWN_TEXTS)["input_ids"]
    assert got == expected


# texts of several segments: words, and special tokens that split a text into pieces tokenised one by one
_SEGMENTED_TEXTS = ["Hello World the fox", "max six</s>taxis over", "a <s> b", " lead", "the  dog</s> x", "</s>x"]
_LLAMA_2_NORMALIZER = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                          {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}  # fmt: skip


def _metaspace(scheme: str, split: bool) -> dict:
    return {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split}


@pytest.mark.parametrize(("kind", "saved"), [
    ("CodeLlamaTokenizer", {"pre_tokenizer": _metaspace("always", False)}),
    ("CodeLlamaTokenizer", {"pre_tokenizer": _metaspace("always", True)}),
    ("CodeLlamaTokenizer", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": []},
                            "normalizer": _LLAMA_2_NORMALIZER}),
    ("BigBirdTokenizer", {"pre_tokenizer": _metaspace("first", True)}),
    ("BarthezTokenizer", {"pre_tokenizer": _metaspace("first", True)}),
    ("XGLMTokenizer", {"pre_tokenizer": _metaspace("first", False)}),
])  # fmt: skip
def test_metaspace_prepend_scheme_as_transformers(tmp_path, kind, saved):
    """transformers 5 rebuilds CodeLlama's pre-tokenizer as a Metaspace prepending ▁ to the text's first piece only
    ("first", no normalizer) and BigBird's, Barthez's and XGLM's as one prepending it to every piece ("always"),
    whatever tokenizer.json says; the onnx runtime only checked that tokenizer.json prefixes a space at all, so a
    folder saved with the other scheme (or Llama 2's Prepend normalizer) got other ids on texts of several pieces
    (a special token in the text), silently. Now it gives transformers' ids."""
    folder = _saved(tmp_path, kind, **saved)
    expected = _transformers_ids(folder, _SEGMENTED_TEXTS)
    assert _saved_ids(folder, _SEGMENTED_TEXTS) != expected
    assert FolderTokenizer(folder)(_SEGMENTED_TEXTS)["input_ids"] == expected


@pytest.mark.parametrize("alias", ["n_embed", None])
def test_onnx_reads_the_hidden_size_as_the_torch_runtime(tmp_path, monkeypatch, alias):
    """config.json's width under a key transformers maps to hidden_size but the onnx runtime did not know (Bloom's
    and Falcon's n_embed), or under none (transformers' default width), ran on the torch runtime but was refused by
    the onnx runtime ("names no hidden size"). Now the onnx runtime reads the width transformers reads: the same
    vectors, or (a default width the weights do not have) the same refusal naming config.json."""
    from tinymodels import tiny_decoder

    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = tiny_decoder(tmp_path / "bloom", "bloom")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    width = config.pop("hidden_size")
    (folder / "config.json").write_text(json.dumps(config if alias is None else {**config, alias: width}))
    if alias is None:  # (BloomConfig's default, 64, is not these weights' width)
        for runtime in ("torch", "onnx"):
            with pytest.raises(ModelFolderError, match=r"config\.json"):
                Encoder(folder, device="cpu", runtime=runtime).encode(["a text"])
        return
    torch_encoder, onnx_encoder = (Encoder(folder, device="cpu", runtime=runtime) for runtime in ("torch", "onnx"))
    texts = ["a text", "another, longer text"]
    np.testing.assert_allclose(onnx_encoder.encode(texts), torch_encoder.encode(texts), atol=1e-5)


@pytest.fixture(scope="module")
def llama_2_layout(tmp_path_factory) -> Path:
    """A folder whose tokenizer.json has Llama 2's layout (a Prepend("▁") + Replace(" ", "▁") normalizer, no
    pre-tokenizer), kept as saved by both runtimes (tokenizer_class TokenizersBackend)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.train_from_iterator(_CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=_SPECIALS))
    bpe.pre_tokenizer = None
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    folder = tmp_path_factory.mktemp("llama2")
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_sliced_document_with_a_prepending_normalizer_equals_whole(llama_2_layout, monkeypatch, runtime):
    """A long document is tokenised in slices of `SLICE_CHARS` cut before a space; a normalizer that prepends ▁ to
    every text it reads (Llama 2's layout) gave every slice after the first an extra ▁ ("▁▁word" where the whole
    text has "▁word"): other ids and spans than the whole text, on both runtimes' tokenizers. Now a later slice
    starts after that space, whose ▁ the normalizer gives back, and its first token's span starts at the space."""
    import threading
    import types

    from transformers import AutoTokenizer

    from tokenpool.model import document_tokens

    tokenizer = (AutoTokenizer.from_pretrained(llama_2_layout, local_files_only=True) if runtime == "torch"
                 else FolderTokenizer(llama_2_layout))  # fmt: skip
    tokenization = types.SimpleNamespace(tokenizer=tokenizer, lowercase=False, lock=threading.Lock())
    text = " ".join(_CORPUS[:9]) + "  x  y  café "
    whole = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    reference = AutoTokenizer.from_pretrained(llama_2_layout, local_files_only=True)
    assert whole["input_ids"] == reference(text, add_special_tokens=False)["input_ids"]
    spans = [tuple(span) for span in whole["offset_mapping"]]
    for size in range(20, 60):
        monkeypatch.setattr(document_tokens, "SLICE_CHARS", size)
        sliced = document_tokens.tokenize_document(tokenization, text)
        assert sliced.ids.tolist() == whole["input_ids"], size
        assert list(zip(sliced.starts.tolist(), sliced.ends.tolist(), strict=True)) == spans, size


@pytest.mark.parametrize("kind", ["XLMRobertaTokenizer", "T5Tokenizer", "CamembertTokenizer", "AlbertTokenizer",
                                  "XLNetTokenizer", "DebertaV2Tokenizer", "BigBirdTokenizer", "BarthezTokenizer",
                                  "XGLMTokenizer"])  # fmt: skip
def test_rebuilt_unigram_model_unknown_id_as_transformers(tmp_path, kind):
    """transformers 5 rebuilds these classes' Unigram model from tokenizer.json's vocabulary with its own unknown id
    (fixed per class, the unk token's position, or tokenizer_config.json's unk_id) and no byte fallback; the onnx
    runtime kept tokenizer.json's unk_id, so a character outside the vocabulary got another id than on the torch
    runtime, silently. Now the model is rebuilt as transformers does."""
    folder = _saved(tmp_path, kind, model={"unk_id": 5, "byte_fallback": True})
    expected = _transformers_ids(folder, _UNKNOWN_TEXTS)
    assert _saved_ids(folder, _UNKNOWN_TEXTS) != expected
    assert FolderTokenizer(folder)(_UNKNOWN_TEXTS)["input_ids"] == expected


@pytest.mark.parametrize("normalizer", [_LLAMA_2_NORMALIZER, {"type": "Lowercase"}, {"type": "NFKC"}])
@pytest.mark.parametrize("kind", ["BigBirdTokenizer", "BarthezTokenizer", "XGLMTokenizer"])
def test_rebuilt_unigram_normalizer_as_transformers(tmp_path, kind, normalizer):
    """transformers 5 rebuilds the normalizer of BigBird (trailing spaces dropped, runs of spaces to ▁), Barthez
    (tabs and runs to a space, NFC, right strip; with a charsmap: charsmap, strip, runs to ▁) and XGLM (runs of
    spaces to one) whatever tokenizer.json holds; the onnx runtime kept tokenizer.json's, so texts with runs of
    spaces, trailing spaces, tabs or (a Prepend normalizer) special tokens got other ids, silently."""
    texts = [*_SEGMENTED_TEXTS, "tail  ", "a  b   c", "x\tmax\nsix", "ｆｏｘ café"]
    folder = _saved(tmp_path, kind, normalizer=normalizer)
    expected = _transformers_ids(folder, texts)
    assert _saved_ids(folder, texts) != expected
    assert FolderTokenizer(folder)(texts)["input_ids"] == expected
