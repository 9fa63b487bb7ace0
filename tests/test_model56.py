"""Stop 56 (model56): one JSON reader for a model folder's files (an ONNX folder's tokenizer files too), the ONNX
runtime's auto_map refusal, dtype and device spellings the two runtimes share, window capacity per document."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.errors import ConfigError, UnsafeModelFolderError

TEXTS = ["A man is playing a guitar.", "short", "Ünïcödé café 日本語"]


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder with its export in onnx/model.onnx."""
    pytest.importorskip("onnxruntime")
    from tinymodels import bert_folder

    from tokenpool.model.onnx import export_onnx

    folder = bert_folder(tmp_path_factory.mktemp("tiny") / "bert")
    export_onnx(folder, folder / "onnx" / "model.onnx")
    return folder


@pytest.fixture
def folder(onnx_folder, tmp_path) -> Path:
    return Path(shutil.copytree(onnx_folder, tmp_path / "bert"))


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json"])
@pytest.mark.parametrize("make", ["fifo", "folder", "dangling link", "a list"])
def test_onnx_tokenizer_files_that_are_no_json_object_are_refused_not_taken_for_absent(folder, tmp_path, name, make):
    """The ONNX runtime's tokenizer read tokenizer_config.json / special_tokens_map.json with its own reader: a
    pipe, folder or dangling link there was taken for no file (another pad token, padding side, lower-casing
    without a word) and a JSON list for {}; the torch runtime refuses them too."""
    target = folder / name
    target.unlink(missing_ok=True)
    if make == "fifo":
        os.mkfifo(target)
    elif make == "folder":
        target.mkdir()
    elif make == "dangling link":
        target.symlink_to(tmp_path / "nowhere.json")
    else:
        target.write_text("[]")
    with pytest.raises(ConfigError, match=name):
        Encoder(folder, runtime="onnx")
    with pytest.raises(ConfigError, match=name):  # (tokenpool reads it before transformers does)
        Encoder(folder, device="cpu")


def _with_tokenizer_auto_map(folder: Path) -> None:
    file = folder / "tokenizer_config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoTokenizer": ["own_tokenizer.OwnTokenizer", None]}
    file.write_text(json.dumps(config), encoding="utf-8")


def test_onnx_runtime_refuses_a_tokenizer_auto_map_as_the_torch_runtime_does(folder):
    """A tokenizer_config.json naming its own tokenizer class: the torch runtime refuses the folder unless trusted;
    the ONNX runtime ran tokenizer.json instead, silently (the class may tokenise otherwise)."""
    _with_tokenizer_auto_map(folder)
    with pytest.raises(UnsafeModelFolderError, match="tokenizer_config.json has an 'auto_map'"):
        Encoder(folder, device="cpu")  # the reference
    with pytest.raises(UnsafeModelFolderError, match="tokenizer_config.json has an 'auto_map'"):
        Encoder(folder, runtime="onnx")
    with pytest.raises(TypeError, match="trust_remote_code must be True or False"):
        Encoder(folder, runtime="onnx", trust_remote_code="no")
    trusted = Encoder(folder, runtime="onnx", trust_remote_code=True)  # the user's word: tokenizer.json runs
    assert np.isfinite(trusted.encode(TEXTS)).all()


@pytest.mark.parametrize(
    "options",
    [{"dtype": "FLOAT32"}, {"dtype": "float"}, {"dtype": " Torch.Float32 "}, {"device": "cpu:0"}, {"dtype": "fp32"}],
)
def test_onnx_runtime_takes_the_dtype_and_device_spellings_the_torch_runtime_takes(onnx_folder, options):
    torch = pytest.importorskip("torch")
    reference = Encoder(onnx_folder, runtime="onnx").encode(TEXTS)
    assert Encoder(onnx_folder, **{"device": "cpu", "dtype": None, **options}).runner.dtype == torch.float32
    np.testing.assert_array_equal(Encoder(onnx_folder, runtime="onnx", **options).encode(TEXTS), reference)


@pytest.mark.parametrize(("options", "match"), [
    ({"dtype": "float16"}, "takes no dtype='float16'"), ({"device": "cpu "}, "unknown device 'cpu '"),
    ({"device": "cuda:01"}, "unknown device 'cuda:01'"), ({"device": "mps"}, "runs on 'cpu' or 'cuda'"),
])  # fmt: skip
def test_onnx_runtime_refuses_what_it_cannot_run_as_before(onnx_folder, options, match):
    with pytest.raises(ValueError, match=match):
        Encoder(onnx_folder, runtime="onnx", **options)


# ------------------------------------------------------------------------------------------ a document's window


@pytest.fixture(scope="module")
def merging_bpe(tmp_path_factory) -> Path:
    """A tiny BERT whose BPE tokenizer reads the prompt "abc" as one token alone but as "a", "b" (and "cd", the
    text's) before a text starting with "d": merges "c d" first, then "b c", then "a bc"."""
    from tinymodels import bert_weights
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder = bert_weights(tmp_path_factory.mktemp("bpe") / "bert")
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c", "d", "cd", "bc", "abc"])}
    bpe = Tokenizer(models.BPE(vocab, [("c", "d"), ("b", "c"), ("a", "bc")], unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    for name in ("vocab.txt", "tokenizer.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    bpe.save(str(folder / "tokenizer.json"))
    specials = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _prompt_tokens_with(tokenizer, prompt: str, text: str) -> int:
    """The reference (docs/long-documents.md): the tokens of ``prompt + text`` that end within the prompt."""
    offsets = tokenizer(prompt + text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return sum(end <= len(prompt) for _, end in offsets)


def test_chunk_size_is_checked_against_the_window_a_document_really_has(merging_bpe):
    """The chunk-size check used `window_capacity` (the prompt tokenised alone: 1 token here), so chunks of 5
    tokens passed for a document whose window holds 4 text tokens (its prompt is 2 tokens before its text):
    each chunk then spanned two windows, against the documented "a chunk must fit one window"."""
    encoder = Encoder(merging_bpe, pooling="mean", max_length=8, device="cpu")
    text = " ".join(["d"] * 12)
    real = 8 - 2 - _prompt_tokens_with(encoder.tokenizer, "abc", text)
    assert real == 4 and encoder.window_capacity(prompt="abc") == 5
    with pytest.raises(ValueError, match=f"document doc-A: chunk size 5 exceeds the {real} text tokens"):
        encoder.encode_chunks([text], chunks="tokens:5", prompt="abc", names=["doc-A"])
    got = encoder.encode_chunks([text], chunks=f"tokens:{real}", prompt="abc", names=["doc-A"])
    assert len(got) == 3 and np.isfinite(got.vectors).all()


def test_chunk_size_a_document_really_fits_is_not_refused(small):
    """The other way: "un" is a token alone, but "un" + "believable …" reads as "unbelievable" (the text's), so
    the document's window holds one more text token than `window_capacity` says; that size was refused."""
    text = "believable stories " * 20
    real = 16 - 2 - _prompt_tokens_with(small.tokenizer, "un", text)
    assert real == small.window_capacity(prompt="un") + 1
    got = small.encode_chunks([text], chunks=f"tokens:{real}", prompt="un")
    assert (np.diff(got.start) > 0).all() and np.isfinite(got.vectors).all()


def test_no_room_for_text_names_the_document_as_the_caller_named_it(merging_bpe):
    """max_length 4 leaves 1 text token after the prompt alone, none after the prompt this document reads; the
    error named the document by its position (0), not the name the caller gave."""
    encoder = Encoder(merging_bpe, pooling="mean", max_length=4, device="cpu")
    with pytest.raises(ValueError, match="document doc-A: max_length 4 leaves no room for text"):
        encoder.encode_chunks(["d d d"], chunks="spans", spans=[[[0, 1]]], prompt="abc", names=["doc-A"])


# ------------------------------------------------------------------------------------------ module files


def test_a_pooling_config_that_is_a_pipe_is_named_as_unreadable_not_missing(tmp_path):
    """A 1_Pooling/config.json that is a named pipe was reported as missing ("has no config.json")."""
    from tokenpool.model.configs import read_pooling_config
    from tokenpool.model.folders import bundled_model_path

    folder = Path(shutil.copytree(bundled_model_path(), tmp_path / "m"))
    (folder / "1_Pooling" / "config.json").unlink()
    os.mkfifo(folder / "1_Pooling" / "config.json")
    with pytest.raises(ConfigError, match=r"1_Pooling/config\.json: not readable JSON \(.*named pipe"):
        read_pooling_config(folder, log_fallback=False)


def test_a_dense_module_whose_safetensors_is_a_dangling_link_is_refused_not_replaced_by_its_bin(tmp_path):
    """A Dense module folder whose model.safetensors is a dangling link (a Hub snapshot whose blob is gone) and
    which also holds a pytorch_model.bin: the .bin's weights were used without a word."""
    torch = pytest.importorskip("torch")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    from tokenpool.errors import ModelFolderError
    from tokenpool.model.folders import bundled_model_path

    base = SentenceTransformer(str(bundled_model_path()), device="cpu")
    torch.manual_seed(0)
    SentenceTransformer(modules=[*list(base._modules.values())[:2], Dense(384, 8)], device="cpu").save(str(tmp_path / "m"))
    dense = next(p for p in (tmp_path / "m").iterdir() if p.name.endswith("_Dense"))
    weights = {"linear.weight": torch.zeros(8, 384), "linear.bias": torch.ones(8)}
    torch.save(weights, dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()
    (dense / "model.safetensors").symlink_to(tmp_path / "gone")
    with pytest.raises(ModelFolderError, match=r"_Dense/model\.safetensors: not readable"):
        Encoder(tmp_path / "m", device="cpu").encode(TEXTS)


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json"])
@pytest.mark.parametrize("make", ["fifo", "folder", "dangling link"])
def test_torch_runtime_refuses_a_tokenizer_file_that_is_no_regular_file(tmp_path, name, make):
    """The bundled folder's max_seq_length is in sentence_bert_config.json, so only transformers read its
    tokenizer_config.json and special_tokens_map.json, and it takes a pipe, folder or dangling link there for no
    file: the folder loaded without its tokenizer settings, without a word (the onnx runtime, above, refuses)."""
    from tokenpool.model.folders import bundled_model_path

    folder = Path(shutil.copytree(bundled_model_path(), tmp_path / "m"))
    target = folder / name
    target.unlink()
    if make == "fifo":
        os.mkfifo(target)
    elif make == "folder":
        target.mkdir()
    else:
        target.symlink_to(tmp_path / "gone.json")
    with pytest.raises(ConfigError, match=rf"{name}: not readable JSON"):
        Encoder(folder, device="cpu")
