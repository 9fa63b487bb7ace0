"""The onnx runtime's tokenizer and model config (stop 48's hunt): tokenizer classes transformers 5 rebuilds from
tokenizer_config.json (RemBERT; add_prefix_space of Qwen2, GPT-NeoX, Cohere, CodeLlama, BigBird, Barthez, XGLM) and
config.json's vocab_size, each compared with transformers (the torch runtime) or checked as a refusal naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from tokenpool.errors import ModelFolderError  # noqa: E402
from tokenpool.model.fast_tokenizer import FolderTokenizer  # noqa: E402

_CORPUS = ["Hello World, the quick brown fox jumps over the lazy dog.", "naïve café über 日本語",
           "don't stop!!! max six taxis"] * 40  # fmt: skip
_TEXTS = ["Hello World", " x  max ", "don't  stop", ""]
_SPECIALS = ["<|endoftext|>", "<|padding|>", "<unk>", "<s>", "</s>", "<pad>", "<mask>", "[CLS]", "[SEP]", "[MASK]",
             "<BOS_TOKEN>", "<EOS_TOKEN>", "<PAD>", "<UNK>"]  # fmt: skip


def _trained(kind: str) -> dict:
    """The vocabulary (and merges) of a tiny tokenizer of ``kind``'s model: byte-level BPE, Metaspace BPE, Unigram."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if kind in ("Qwen2Tokenizer", "GPTNeoXTokenizer", "CohereTokenizer", "CodeLlamaTokenizer"):
        byte_level = kind != "CodeLlamaTokenizer"
        tokenizer = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel() if byte_level else pre_tokenizers.Metaspace()
        alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
        tokenizer.train_from_iterator(_CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=_SPECIALS,
                                                                   initial_alphabet=alphabet))  # fmt: skip
        model = json.loads(tokenizer.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        return {"vocab": model["vocab"], "merges": merges}
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.train_from_iterator(_CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=_SPECIALS,
                                                                   unk_token="<unk>"))  # fmt: skip
    return {"vocab": [tuple(item) for item in json.loads(tokenizer.to_str())["model"]["vocab"]]}


def _folder(tmp_path: Path, kind: str, **options) -> Path:
    """A folder saved by transformers' ``kind`` (its own tokenizer.json), with ``options`` in tokenizer_config.json
    (a None value: the key removed; "null": a JSON null)."""
    import transformers

    getattr(transformers, kind)(**_trained(kind)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key, value in options.items():
        config.pop(key, None)
        if value is not None:
            config[key] = None if value == "null" else value
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp_path


def _transformers_ids(folder: Path) -> list[list[int]] | None:
    """transformers' ids of `_TEXTS` (the torch runtime's), None where transformers refuses the folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)(_TEXTS)["input_ids"]
    except (TypeError, ValueError):
        return None


def _saved_ids(folder: Path) -> list[list[int]]:
    """The ids of `_TEXTS` by tokenizer.json's own pipeline (what the onnx runtime gave before)."""
    from tokenizers import Tokenizer

    return [encoding.ids for encoding in Tokenizer.from_file(str(folder / "tokenizer.json")).encode_batch(_TEXTS)]


@pytest.mark.parametrize("named", [{"tokenizer_class": "RemBertTokenizer"}, {"tokenizer_class": "RemBertTokenizerFast"},
                                   {"model_type": "rembert"}])  # fmt: skip
def test_onnx_tokenizer_refuses_rembert_naming_the_class(tmp_path, named):
    """RemBertTokenizer (transformers 5) adds [CLS] … [SEP] and rebuilds its normalizer from tokenizer_config.json;
    the onnx runtime ran tokenizer.json's pipeline (no [CLS]/[SEP]): other ids on every text, silently. Now the
    folder is refused naming the class (by tokenizer_class, or config.json's model_type when none is named)."""
    folder = _folder(tmp_path, "RemBertTokenizer")
    assert _saved_ids(folder) != _transformers_ids(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("tokenizer_class")
    config.update({k: v for k, v in named.items() if k == "tokenizer_class"})
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": named.get("model_type", "bert")}))
    with pytest.raises(ModelFolderError, match=r"tokenizer_config\.json: .*transformers' RemBertTokenizer .*"
                                               r"runtime='torch'"):  # fmt: skip
        FolderTokenizer(folder)

