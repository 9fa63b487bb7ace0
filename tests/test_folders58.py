"""Model folders (s58): every slow-tokenizer vocabulary file transformers reads counts as a tokenizer; the
ONNX-only advice of export-onnx names its own command line; make_variant's refusal and an empty onnx_file name
the options as their caller wrote them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tinymodels import onnx_only_copy

from tokenpool.errors import OptionError

transformers = pytest.importorskip("transformers")


def _spm_model(path) -> None:
    """A tiny unigram SentencePiece model, written with transformers' own protobuf schema (no sentencepiece)."""
    from transformers.convert_slow_tokenizer import import_protobuf

    model = import_protobuf().ModelProto()
    for piece, kind in [("[PAD]", 3), ("[CLS]", 3), ("[SEP]", 3), ("[UNK]", 2), ("[MASK]", 3)]:
        model.pieces.add(piece=piece, score=0.0, type=kind)
    for rank, piece in enumerate(["▁", "▁the", "▁a", "▁hello", "▁world", *"setlowrdani"]):
        model.pieces.add(piece=piece, score=-1.0 - rank, type=1)
    model.trainer_spec.model_type, model.trainer_spec.unk_id = 1, 3
    model.trainer_spec.bos_id = model.trainer_spec.eos_id = -1
    model.normalizer_spec.name, model.normalizer_spec.add_dummy_prefix = "identity", True
    path.write_bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def deberta(tmp_path_factory):
    """A random 2-layer DeBERTa-v2 whose only tokenizer file is spm.model (as microsoft/deberta-v3-* ship it)."""
    import torch

    folder = tmp_path_factory.mktemp("deberta")
    config = transformers.DebertaV2Config(vocab_size=21, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    transformers.DebertaV2Model(config).eval().save_pretrained(folder)
    _spm_model(folder / "spm.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer"}))
    return folder


def test_deberta_v2_folder_with_spm_model_runs_on_torch(deberta):
    """spm.model was no tokenizer file to check_files: the folder was 'missing tokenizer files'. (transformers 5
    reads an spm.model with the sentencepiece library only: without it, tiktoken's parser fails on it.)"""
    pytest.importorskip("sentencepiece")
    import torch

    from tokenpool import Encoder

    texts = ["hello world", "the a hello"]
    vectors = Encoder(deberta, pooling="mean", normalize=False).encode(texts)
    tokenizer = transformers.AutoTokenizer.from_pretrained(deberta)
    model = transformers.AutoModel.from_pretrained(deberta).eval()
    for text, vector in zip(texts, vectors, strict=True):
        with torch.no_grad():
            tokens = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].double()
        np.testing.assert_allclose(vector, tokens.mean(0).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["DebertaV2Tokenizer", "XLMRobertaTokenizer", "LlamaTokenizer", "T5Tokenizer",
                                  "GPT2Tokenizer", "BertTokenizer"])  # fmt: skip
def test_each_vocabulary_file_transformers_reads_counts_as_a_tokenizer(tmp_path, name):
    from tokenpool.model.folders import check_files

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    for file in getattr(transformers, name).vocab_files_names.values():
        if file != "tokenizer.json":
            (tmp_path / file).write_bytes(b"")
    check_files(tmp_path)


@pytest.fixture
def onnx_only(tiny, tiny_onnx, tmp_path):
    """`tiny`'s Transformer files with its fp32 export as onnx/model.onnx and no torch weights."""
    return onnx_only_copy(tiny, tiny_onnx, tmp_path / "onnx-only")


def test_export_onnx_of_an_onnx_only_folder_advises_command_lines(run, onnx_only, tiny_onnx):
    """export-onnx ended with "use runtime='onnx'": Python spelling, and no option of this command."""
    code, out, err = run("export-onnx", onnx_only)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "runtime='onnx'" not in err
    assert "'tokenpool embed --runtime onnx --onnx-file onnx/model.onnx'" in err
    advised = err.split("'tokenpool export-onnx ")[1].split("'")[0].split()
    code, out, err = run("export-onnx", onnx_only, *advised, "--output", onnx_only.parent / "o.onnx")
    assert code == 0, err


def test_inspect_of_an_onnx_only_folder_advises_a_command_line(run, onnx_only):
    code, out, err = run("inspect", onnx_only)  # (reported since stop 59, with the runtime that runs it)
    assert code == 0 and "runtime='onnx'" not in out and "runtime             onnx  (onnx/model.onnx)" in out


@pytest.mark.parametrize("cli", [False, True])
def test_quality_refusal_names_the_options_as_the_caller_writes_them(tiny, tiny_onnx, tmp_path, cli):
    from tokenpool.model.onnx_export import QualityRefused, Recipe, make_variant
    from tokenpool.model.options import spelled_as

    flags = {"keep_fp32": "--keep-fp32", "force": "--force"} if cli else {}
    said = "with --keep-fp32, or pass --force to" if cli else "with keep_fp32, or pass force=True to"
    with spelled_as(flags), pytest.raises(QualityRefused, match=said):
        make_variant(tiny, tiny_onnx, tmp_path / "q.onnx", Recipe(quantize="int8"),
                     texts=["hello world", "a test"], min_cosine=1.0)  # fmt: skip


def test_empty_onnx_file_is_refused_as_empty(tiny, run, tmp_path):
    from tokenpool.model.onnx import find_onnx_file

    with pytest.raises(OptionError, match=r"^onnx_file='' is empty"):
        find_onnx_file(tiny, "")
    code, out, err = run("export-onnx", tiny, "--onnx-file", "", "--optimize", "--output", tmp_path / "o.onnx")
    assert code == 2 and "--onnx-file '' is empty" in err and "folder" not in err
