"""The onnx runtime's tokenizer and model config (stop 48's hunt): tokenizer classes transformers 5 rebuilds from
tokenizer_config.json (RemBERT; add_prefix_space of Qwen2, GPT-NeoX, Cohere, CodeLlama, BigBird, Barthez, XGLM) and
config.json's vocab_size, each compared with transformers (the torch runtime) or checked as a refusal naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
from tinymodels import name_tokenizer  # noqa: E402

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

    if kind in ("Qwen2Tokenizer", "GPTNeoXTokenizer", "CohereTokenizer", "CodeLlamaTokenizer", "LlamaTokenizer",
                "RobertaTokenizer", "GPT2Tokenizer"):
        byte_level = kind not in ("CodeLlamaTokenizer", "LlamaTokenizer")
        tokenizer = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>", byte_fallback=not byte_level))
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


def _transformers_ids(folder: Path, texts: list[str] = _TEXTS) -> list[list[int]] | None:
    """transformers' ids of ``texts`` (the torch runtime's), None where transformers refuses the folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)(texts)["input_ids"]
    except (TypeError, ValueError):
        return None


def _saved_ids(folder: Path) -> list[list[int]]:
    """The ids of `_TEXTS` by tokenizer.json's own pipeline (what the onnx runtime gave before)."""
    from tokenizers import Tokenizer

    return [encoding.ids for encoding in Tokenizer.from_file(str(folder / "tokenizer.json")).encode_batch(_TEXTS)]


@pytest.mark.parametrize("option", [None, True, False, "null"])
@pytest.mark.parametrize("kind", ["Qwen2Tokenizer", "GPTNeoXTokenizer", "CohereTokenizer", "CodeLlamaTokenizer",
                                  "BigBirdTokenizer", "BarthezTokenizer", "XGLMTokenizer"])  # fmt: skip
def test_onnx_tokenizer_follows_or_refuses_add_prefix_space(tmp_path, kind, option):
    """transformers 5 rebuilds these tokenizers with tokenizer_config.json's add_prefix_space (absent: the class
    default; null: false, true for CodeLlama, refused for GPT-NeoX and Cohere); the onnx runtime ran
    tokenizer.json's own prefixing, so where the two disagreed every text got other ids than on the torch runtime,
    silently. Now such a folder is refused naming the class; where they agree the ids are transformers'."""
    folder = _folder(tmp_path, kind, add_prefix_space=option)
    expected = _transformers_ids(folder)
    try:
        got = FolderTokenizer(folder)(_TEXTS)["input_ids"]
    except ModelFolderError as err:
        assert "tokenizer_config.json: add_prefix_space is " in str(err) and f"transformers' {kind}" in str(err)
        assert expected is None or _saved_ids(folder) != expected  # refused only where tokenizer.json differs
        return
    assert got == expected


@pytest.mark.parametrize("kind", ["Qwen2Tokenizer", "CodeLlamaTokenizer", "XGLMTokenizer"])
def test_add_prefix_space_refusal_only_where_ids_would_differ(tmp_path, kind):
    """The refusal is for folders whose prefixing disagrees: the flipped option is refused, and the saved
    tokenizer.json flipped the same way then agrees again and gives transformers' ids."""
    default = kind != "Qwen2Tokenizer"
    folder = _folder(tmp_path, kind, add_prefix_space=not default)
    with pytest.raises(ModelFolderError, match=rf"add_prefix_space is {not default} for transformers' {kind}"):
        FolderTokenizer(folder)
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    text = json.dumps(saved["pre_tokenizer"])
    flipped = (text.replace('"add_prefix_space": false', '"add_prefix_space": true') if default is False
               else text.replace('"prepend_scheme": "always"', '"prepend_scheme": "never"')
               .replace('"prepend_scheme": "first"', '"prepend_scheme": "never"'))  # fmt: skip
    saved["pre_tokenizer"] = json.loads(flipped)
    (folder / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    assert FolderTokenizer(folder)(_TEXTS)["input_ids"] == _transformers_ids(folder)


@pytest.mark.parametrize("named", [{"tokenizer_class": "RemBertTokenizer"}, {"tokenizer_class": "RemBertTokenizerFast"},
                                   {"model_type": "rembert"}])  # fmt: skip
def test_onnx_tokenizer_refuses_rembert_naming_the_class(tmp_path, named):
    """RemBertTokenizer (transformers 5) adds [CLS] … [SEP] and rebuilds its normalizer from tokenizer_config.json;
    the onnx runtime ran tokenizer.json's pipeline (no [CLS]/[SEP]): other ids on every text, silently. Now the
    folder is refused naming the class (by tokenizer_class, or config.json's model_type when none is named)."""
    folder = _folder(tmp_path, "RemBertTokenizer")
    assert _saved_ids(folder) != _transformers_ids(folder)
    name_tokenizer(folder, named, "bert")
    with pytest.raises(ModelFolderError, match=r"tokenizer_config\.json: .*transformers' RemBertTokenizer .*"
                                               r"runtime='torch'"):  # fmt: skip
        FolderTokenizer(folder)


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("onnxtok") / "bert", normalize=False)


@pytest.mark.parametrize("value", ["missing", "30522", 30522.0, None, True])
def test_onnx_reads_vocab_size_as_the_torch_runtime(bert, tmp_path, monkeypatch, value):
    """onnx's read_model_config took ``int(vocab_size or 0)``: a config.json without vocab_size (transformers'
    default on the torch runtime) was refused as "got 0", and "30522", 30522.0 or true were taken as numbers (the
    torch runtime refuses them; the export failed with a bare StrictDataclassFieldValidationError). Now the onnx
    runtime keeps the value as saved (refused by the encoder, naming it) or transformers' default when absent."""
    import shutil

    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = Path(shutil.copytree(bert, tmp_path / "model"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.pop("vocab_size")
    (folder / "config.json").write_text(json.dumps(config if value == "missing" else {**config, "vocab_size": value}))
    if value != "missing":
        with pytest.raises(ConfigError, match="vocab_size"):
            Encoder(folder, device="cpu", runtime="torch")
        with pytest.raises(ConfigError, match=rf"config\.json: vocab_size must be a positive integer, got {value!r}"):
            Encoder(folder, device="cpu", runtime="onnx")
        return
    torch_encoder, onnx_encoder = (Encoder(folder, device="cpu", runtime=runtime) for runtime in ("torch", "onnx"))
    assert onnx_encoder.vocab_size == torch_encoder.vocab_size == 30522  # (BertConfig's default)
    np.testing.assert_allclose(onnx_encoder.encode(["a text"]), torch_encoder.encode(["a text"]), atol=1e-5)


@pytest.mark.parametrize("named", [{"tokenizer_class": "GemmaTokenizer"}, {"model_type": "gemma"},
                                   {"model_type": "gemma3_text"}])  # fmt: skip
def test_onnx_tokenizer_rebuilds_gemma_as_transformers(tmp_path, named):
    """transformers 5 rebuilds a GemmaTokenizer (named, or picked by a gemma* model_type) with spaces turned to ▁
    by its normalizer, whatever tokenizer.json holds; the onnx runtime ran tokenizer.json's pipeline, so a folder
    saved with a Metaspace pre-tokenizer (a Llama-like layout) got other ids on most texts, silently. Now the onnx
    runtime rebuilds Gemma's two steps and gives transformers' ids."""
    folder = _folder(tmp_path, "LlamaTokenizer")  # a Metaspace BPE with byte fallback, saved as Llama's
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("tokenizer_class")
    config.update({k: v for k, v in named.items() if k == "tokenizer_class"})
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": named.get("model_type", "gemma")}))
    expected = _transformers_ids(folder)
    assert _saved_ids(folder) != expected
    texts = [*_TEXTS, "  lead", "tail  ", "a b   c", "x max  taxis"]
    assert FolderTokenizer(folder)(texts)["input_ids"] == _transformers_ids(folder, texts)


@pytest.mark.parametrize(("model_type", "kind"), [("qwen2", "Qwen2Tokenizer"), ("qwen3", "Qwen2Tokenizer"),
                                                  ("qwen3_moe", "Qwen2Tokenizer"), ("cohere2", "CohereTokenizer"),
                                                  ("xglm", "XGLMTokenizer")])  # fmt: skip
def test_add_prefix_space_refusal_follows_the_model_type_without_a_class(tmp_path, model_type, kind):
    """Without a tokenizer_class, transformers picks the class from config.json's model_type (Qwen3 and Qwen2-MoE
    folders get Qwen2Tokenizer, Cohere2 CohereTokenizer) and rebuilds it with add_prefix_space; the onnx runtime
    ran tokenizer.json's prefixing for those model types (other ids, silently). Now it refuses them too."""
    folder = _folder(tmp_path, kind, add_prefix_space=kind != "XGLMTokenizer")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("tokenizer_class")
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert _saved_ids(folder) != _transformers_ids(folder)
    with pytest.raises(ModelFolderError, match=rf"add_prefix_space is (True|False) for transformers' {kind}"):
        FolderTokenizer(folder)


@pytest.mark.parametrize(("model_type", "kind"), [("roberta-prelayernorm", "RobertaTokenizer"),
                                                  ("data2vec-text", "RobertaTokenizer"), ("ibert", "RobertaTokenizer"),
                                                  ("phi", "GPT2Tokenizer"), ("starcoder2", "GPT2Tokenizer"),
                                                  ("xmod", "XLMRobertaTokenizer"), ("gte", "XLMRobertaTokenizer"),
                                                  ("jina_embeddings_v3", "XLMRobertaTokenizer")])  # fmt: skip
def test_onnx_tokenizer_rebuilds_by_model_type_as_transformers(tmp_path, model_type, kind):
    """Without a tokenizer_class, transformers picks RobertaTokenizer / GPT2Tokenizer / XLMRobertaTokenizer for
    these model types and rebuilds it with tokenizer_config.json's add_prefix_space; the onnx runtime mirrored
    that only for the model types it listed, so these ran tokenizer.json's prefixing: other ids, silently."""
    folder = _folder(tmp_path, kind, add_prefix_space=kind != "XLMRobertaTokenizer")  # (not the class default)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("tokenizer_class")
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    expected = _transformers_ids(folder)
    assert _saved_ids(folder) != expected
    assert FolderTokenizer(folder)(_TEXTS)["input_ids"] == expected


@pytest.mark.parametrize(("key", "value"), [("max_position_embeddings", "128"), ("max_position_embeddings", 128.0),
                                            ("max_position_embeddings", True), ("hidden_size", "32"),
                                            ("hidden_size", 32.0)])  # fmt: skip
def test_onnx_refuses_sizes_the_torch_runtime_refuses(bert, tmp_path, monkeypatch, key, value):
    """config.json's max_position_embeddings or hidden_size as a string, float or bool is refused by transformers
    (the torch runtime, naming the field); the onnx runtime skipped it (no position limit: long texts ran past
    the model's positions) or died exporting with a bare StrictDataclassFieldValidationError, or said the folder
    "names no hidden size". Now it is a ModelFolderError naming the key and value."""
    import shutil

    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = Path(shutil.copytree(bert, tmp_path / "model"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, key: value}), encoding="utf-8")
    with pytest.raises(ConfigError, match=key):
        Encoder(folder, device="cpu", runtime="torch")
    with pytest.raises(ModelFolderError, match=rf"config\.json: {key} must be an integer, got {value!r}"):
        Encoder(folder, device="cpu", runtime="onnx")
