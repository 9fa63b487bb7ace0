"""The onnx runtime (stop 55): an Encoder runs the model it loaded, also in the second session its side-by-side
passes open later, after its ONNX file was replaced or removed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tinymodels import minilm_tokenizer  # noqa: E402

from tokenpool import Encoder  # noqa: E402

WIDTH = 8
TEXTS = [f"sentence number {i} about a cat" for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok") / "tok"
    minilm_tokenizer().save_pretrained(folder)
    return folder


def table(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((30522, WIDTH)).astype(np.float32)


def save_lookup_graph(path: Path, seed: int) -> Path:
    """An ONNX file giving ``table(seed)[id] * mask`` per token (b×L×WIDTH): a model whose vectors are known."""
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis"], ["mask3"]),
        helper.make_node("Mul", ["rows", "mask3"], ["last_hidden_state"]),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["b", "s"]) for name in ("input_ids", "attention_mask")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", WIDTH])]
    weights = [numpy_helper.from_array(table(seed), "table"), numpy_helper.from_array(np.array([2]), "axis")]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def lookup_folder(tokenizer_folder: Path, folder: Path) -> Path:
    shutil.copytree(tokenizer_folder, folder)
    config = {"model_type": "bert", "hidden_size": WIDTH, "vocab_size": 30522, "max_position_embeddings": 512}
    (folder / "config.json").write_text(json.dumps(config))
    save_lookup_graph(folder / "onnx" / "model.onnx", seed=0)
    return folder


def mean_reference(texts: list[str], seed: int) -> np.ndarray:
    tokenizer, weights = minilm_tokenizer(), table(seed).astype(np.float64)
    return np.stack([weights[tokenizer(text)["input_ids"]].mean(axis=0) for text in texts])


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_side_by_side_passes_run_the_loaded_model_after_its_file_changed(tokenizer_folder, tmp_path, change):
    """The second session of side-by-side passes was opened from the file's path at the first call of two
    batches or more: after the file was replaced, such calls gave the new file's vectors while a one-batch call
    gave the loaded model's (one Encoder, two models, silently); after it was removed they failed."""
    folder = lookup_folder(tokenizer_folder, tmp_path / "m")
    encoder = Encoder(folder, runtime="onnx", pooling="mean", normalize=False)
    encoder.runner.parallel_passes = 2  # (as on any CPU with 2+ threads)
    np.testing.assert_allclose(encoder.encode(TEXTS[:2]), mean_reference(TEXTS[:2], 0), rtol=0, atol=1e-6)
    model = folder / "onnx" / "model.onnx"
    if change == "replaced":  # another model moved into place under the same name
        os.replace(save_lookup_graph(tmp_path / "other" / "model.onnx", seed=1), model)
    else:
        model.unlink()
    vectors = encoder.encode(TEXTS, batch_size=4)
    np.testing.assert_allclose(vectors, mean_reference(TEXTS, 0), rtol=0, atol=1e-6)


_CORPUS = ["Hello World, the quick brown fox jumps over the lazy dog.", "naïve café über 日本語",
           "don't stop!!! max six taxis"] * 40  # fmt: skip
_BPE_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                 "mask_token": "<mask>"}  # fmt: skip
_TRICKY = ["Hello world", "  spaced  out ", "", "café <s> x </s>", "The quick brown fox"]


def byte_level_folder(folder: Path, tokenizer_config: dict, model_type: str | None = None) -> Path:
    """A tiny byte-level BPE tokenizer.json saved without a post-processor (as the tokenizers library's own
    trainers save it), with ``tokenizer_config`` (and config.json's ``model_type``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    bpe.train_from_iterator(_CORPUS, trainer)
    folder.mkdir(parents=True)
    bpe.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**_BPE_SPECIALS, **tokenizer_config}))
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


@pytest.mark.parametrize(
    ("tokenizer_config", "model_type"),
    [({"tokenizer_class": "RobertaTokenizer"}, None), ({"tokenizer_class": "BartTokenizer"}, None),
     ({"tokenizer_class": "LongformerTokenizer"}, None), ({}, "roberta"), ({}, "data2vec-text"),
     ({"tokenizer_class": "RobertaTokenizer", "add_prefix_space": True, "trim_offsets": False}, None),
     ({"tokenizer_class": "RobertaTokenizer", "cls_token": "<mask>", "sep_token": "<pad>"}, None)],
)  # fmt: skip
def test_roberta_family_gets_the_special_tokens_transformers_adds(tmp_path, tokenizer_config, model_type):
    """transformers 5 gives the RoBERTa family's tokenizer (RoBERTa, BART, Longformer, LED, MVP; by class or by
    model_type) `<s> … </s>` (its cls and sep tokens) whatever tokenizer.json's post-processor is: the onnx
    runtime followed tokenizer.json, so a folder saved without one embedded the text without them (other vectors
    than the torch runtime, silently)."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = byte_level_folder(tmp_path / "tok", tokenizer_config, model_type)
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True)(_TRICKY, return_offsets_mapping=True)
    got = FolderTokenizer(folder)(_TRICKY, return_offsets_mapping=True)
    assert got["input_ids"] == expected["input_ids"]
    assert [list(map(tuple, row)) for row in got["offset_mapping"]] == [
        list(map(tuple, row)) for row in expected["offset_mapping"]]  # fmt: skip


def unnamed_specials_folder(tokenizer_folder: Path, folder: Path, tokenizer_class: str | None) -> Path:
    """The MiniLM WordPiece tokenizer with its cls / sep tokens named nowhere (transformers takes its class's
    defaults), tokenizer.json without a post-processor, four `[unused…]` renamed `<s>` / `</s>` (MPNet's) and
    `<cls>` / `<sep>` (Funnel's defaults; transformers 5 reads the vocabulary from tokenizer.json), and
    ``tokenizer_class`` (None: none named; config.json's model_type "bert" picks it)."""
    shutil.copytree(tokenizer_folder, folder)
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    saved["post_processor"] = None
    vocab = saved["model"]["vocab"]
    renamed = {"<s>": "[unused0]", "</s>": "[unused1]", "<cls>": "[unused2]", "<sep>": "[unused3]"}
    for name, unused in renamed.items():
        vocab[name] = vocab.pop(unused)  # (special tokens of the vocabulary, as saved tokenizers have them)
        saved["added_tokens"].append({"id": vocab[name], "content": name, "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": True})  # fmt: skip
    (folder / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            config = json.loads((folder / name).read_text(encoding="utf-8"))
            config = {k: v for k, v in config.items() if k not in ("cls_token", "sep_token", "tokenizer_class")}
            config.update({"tokenizer_class": tokenizer_class} if tokenizer_class and name[0] == "t" else {})
            (folder / name).write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


@pytest.mark.parametrize("tokenizer_class",
                         ["BertTokenizer", None, "DistilBertTokenizer", "MPNetTokenizer", "FunnelTokenizer"])
def test_bert_family_with_unnamed_cls_and_sep_gets_the_class_defaults(tokenizer_folder, tmp_path, tokenizer_class):
    """A BERT-family tokenizer_config.json that names no cls / sep token: transformers 5 adds its class's defaults
    (`[CLS]` / `[SEP]`, MPNet's `<s>` / `</s>`, Funnel's `<cls>` / `<sep>`) whatever tokenizer.json says; the onnx runtime rebuilt the
    template only for named tokens, so a tokenizer.json without a post-processor embedded texts without them."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = unnamed_specials_folder(tokenizer_folder, tmp_path / "tok", tokenizer_class)
    texts = ["Hello World", "", "Naïve [CLS] x </s>"]
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True)(texts)["input_ids"]
    assert FolderTokenizer(folder)(texts)["input_ids"] == expected
