"""Model folders, pooling configs, ONNX and inspect (stop 61): each test failed on the code before its fix."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

LONG = "the quick brown fox jumps over the lazy dog " * 12


def _edited(folder, tmp_path, rel, drop=(), **values):
    """A copy of ``folder`` whose JSON file ``rel`` has the keys ``drop`` removed and ``values`` set."""
    copy = shutil.copytree(folder, tmp_path / "copy")
    file = copy / rel
    data = {key: value for key, value in json.loads(file.read_text()).items() if key not in drop}
    file.write_text(json.dumps({**data, **values}))
    return copy


def test_a_tokenizer_configs_older_max_len_is_the_limit_on_both_runtimes_and_in_inspect(run, tiny, tiny_onnx, tmp_path):
    """transformers reads tokenizer_config.json's older ``max_len`` as model_max_length (older folders carry it),
    so sentence-transformers truncates at it; the onnx runtime and inspect ignored it and cut at the model's 128
    positions (cosine 0.97 with sentence-transformers on a long text)."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder, read_pooling_config

    folder = _edited(tiny, tmp_path, "tokenizer_config.json", drop=("model_max_length",), max_len=16)
    reference = SentenceTransformer(str(folder), device="cpu")
    assert reference.max_seq_length == 16
    want = reference.encode([LONG, "short"])
    assert read_pooling_config(folder).max_seq_length == 16
    for options in ({}, {"runtime": "onnx", "onnx_file": tiny_onnx}):
        encoder = Encoder(folder, device="cpu", **options)
        assert encoder.max_length == 16, options
        got = encoder.encode([LONG, "short"])
        np.testing.assert_allclose((got * want).sum(1), 1.0, atol=1e-5, err_msg=str(options))
    code, out, _ = run("inspect", folder)
    assert code == 0 and "max length          16  (tokenizer_config.json)" in out


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("splade") / "model", mlm=True)


def test_inspect_refuses_a_sparse_folders_own_truncate_dim_as_the_encoder_does(run, splade_folder, tmp_path):
    """A SPLADE folder whose config_sentence_transformers.json sets truncate_dim (SparseEncoder has none): the
    Encoder refuses it, but inspect printed 'dimension 8' and exit 0 (docs/security.md: inspect exits 2 on a
    folder the Encoder would refuse by a size it cannot use)."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    folder = _edited(splade_folder, tmp_path, "config_sentence_transformers.json", truncate_dim=8)
    with pytest.raises(OptionError) as refused:
        Encoder(folder, device="cpu")
    code, out, err = run("inspect", folder)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [f"tokenpool inspect: error: {refused.value}"]


@pytest.mark.parametrize("path", [None, 0, ["0_Transformer"]])
def test_export_onnx_names_a_transformer_entry_without_a_string_path(run, tiny, tmp_path, path):
    """A modules.json whose Transformer entry has no string path: export-onnx said "unsupported operand type(s)
    for /: 'PosixPath' and 'NoneType'" (the Encoder and inspect name modules.json and the entry)."""
    folder = shutil.copytree(tiny, tmp_path / "model")
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = path
    (folder / "modules.json").write_text(json.dumps(modules))
    for command in (["export-onnx", folder, "--output", tmp_path / "x.onnx"], ["inspect", folder]):
        code, out, err = run(*command)
        assert (code, out) == (2, ""), command
        assert f"{folder / 'modules.json'}: module entry" in err and "needs string 'type' and 'path'" in err, command
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("model_type", ["distilbert", "gpt2"])
def test_a_model_config_naming_its_width_under_its_familys_key_gives_the_dimension(tmp_path, model_type):
    """DistilBERT saves its width as ``dim`` and GPT-2 as ``n_embd`` (transformers maps them to hidden_size):
    a plain folder's fallback config had no embedding_dimension, and `PoolingConfig.save` refused the folder
    ("has no hidden_size to use") though sentence-transformers knows its width."""
    from sentence_transformers import SentenceTransformer
    from tinymodels import HIDDEN, tiny_decoder, tiny_encoder

    from tokenpool import PoolingConfig, read_pooling_config

    folder = (tiny_encoder if model_type == "distilbert" else tiny_decoder)(tmp_path / "model", model_type)
    assert "hidden_size" not in json.loads((folder / "config.json").read_text())
    assert read_pooling_config(folder, log_fallback=False).embedding_dimension == HIDDEN
    PoolingConfig(strategies=("mean",)).save(folder)
    width = SentenceTransformer(str(folder), device="cpu").get_sentence_embedding_dimension()
    assert read_pooling_config(folder).embedding_dimension == width == HIDDEN


def _seq2seq_folders(tmp_path, family):
    """A tiny random whole ``family`` encoder-decoder (``raw``) and the folder sentence-transformers saves for it
    (``st``: the encoder alone, as it loads these families)."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tinymodels import HIDDEN, minilm_tokenizer

    config = transformers.AutoConfig.for_model(
        family, vocab_size=30522, d_model=HIDDEN, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        decoder_start_token_id=0, pad_token_id=0,
    )
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path / "raw")
    minilm_tokenizer().save_pretrained(tmp_path / "raw")
    model = SentenceTransformer(modules=[Transformer(str(tmp_path / "raw")), Pooling(HIDDEN)])
    model.save(str(tmp_path / "st"))
    return tmp_path / "raw", tmp_path / "st"


@pytest.mark.parametrize("family", ["pegasus", "marian"])
def test_an_encoder_only_folder_sentence_transformers_saved_for_a_seq2seq_family_embeds_as_it_does(tmp_path, family):
    """sentence-transformers 6.3 loads (and saves) only the encoder of Pegasus, Marian, M2M100, … as of T5: the
    folder it saved was refused ("the weights lack 93 tensors … decoder.*"), a whole seq2seq checkpoint failed
    at encode with transformers' "decoder_input_ids" error. Now: its vectors; the whole checkpoint refused up front
    (sentence-transformers gives its encoder random weights there)."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    raw, saved = _seq2seq_folders(tmp_path, family)
    texts = ["hello world", "a longer sentence with more words in it", "x"]
    want = SentenceTransformer(str(saved), device="cpu").encode(texts)
    np.testing.assert_allclose(Encoder(saved, device="cpu").encode(texts), want, atol=1e-5)
    with pytest.raises(ModelFolderError, match="whole encoder-decoder model"):
        Encoder(raw, device="cpu", pooling="mean")


def test_saving_a_config_for_a_folder_without_a_width_names_every_key_it_looked_for(tmp_path):
    """`PoolingConfig.save` finds the width under any of hidden_size, d_model, n_embd, dim, but its refusal said
    "has no hidden_size to use"."""
    from tokenpool import PoolingConfig
    from tokenpool.errors import ConfigError

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="has none of hidden_size, d_model, n_embd, dim"):
        PoolingConfig(strategies=("mean",)).save(tmp_path)


@pytest.mark.parametrize("key", ["model_max_length", "max_len"])
def test_a_tokenizer_limit_of_0_truncates_at_the_positions_on_both_runtimes_and_in_inspect(run, tiny, tiny_onnx,
                                                                                           tmp_path, key):
    """Decision pin: sentence-transformers reports max_seq_length 0 but transformers truncates nothing at 0, so
    it embeds every text the positions hold untruncated; tokenpool takes 0 as no limit (the positions) alike."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    folder = _edited(tiny, tmp_path, "tokenizer_config.json", drop=("model_max_length",), **{key: 0})
    texts = [LONG[:300], "short"]
    want = SentenceTransformer(str(folder), device="cpu").encode(texts)
    for options in ({}, {"runtime": "onnx", "onnx_file": tiny_onnx}):
        encoder = Encoder(folder, device="cpu", **options)
        assert encoder.max_length == 128, options
        np.testing.assert_allclose(encoder.encode(texts), want, atol=1e-5, err_msg=str(options))
    code, out, _ = run("inspect", folder)
    assert code == 0 and "max length          128  (config.json max_position_embeddings)" in out


def test_a_negative_tokenizer_limit_is_refused_by_both_runtimes_and_inspect(run, tiny, tiny_onnx, tmp_path):
    """tokenizer_config.json ``model_max_length: -1``: sentence-transformers fails at encode (transformers'
    OverflowError); tokenpool silently truncated at the positions. Now a ConfigError naming the file and key."""
    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    folder = _edited(tiny, tmp_path, "tokenizer_config.json", model_max_length=-1)
    message = f"{folder / 'tokenizer_config.json'}: model_max_length must be a whole number of tokens"
    for options in ({}, {"runtime": "onnx", "onnx_file": tiny_onnx}):
        with pytest.raises(ConfigError, match=re.escape(message)):
            Encoder(folder, device="cpu", **options)
    code, out, err = run("inspect", folder)
    assert (code, out) == (2, "") and message in err


def test_a_t5gemma_folder_embeds_with_its_encoder_as_sentence_transformers_does(tmp_path):
    """sentence-transformers 6.3 loads T5Gemma's encoder alone (T5GemmaEncoderModel, is_encoder_decoder false);
    the folder it saved was refused ("T5GemmaModel only support encoder-decoder modeling") and a whole checkpoint
    failed at encode ("You must specify exactly one of input_ids or inputs_embeds"). Now: its vectors, both."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "T5GemmaConfig"):
        pytest.skip("this transformers has no T5Gemma")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tinymodels import HIDDEN, minilm_tokenizer

    from tokenpool import Encoder

    sub = dict(vocab_size=30522, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, max_position_embeddings=128, sliding_window=16)  # fmt: skip
    torch.manual_seed(0)
    raw, saved = tmp_path / "raw", tmp_path / "st"
    transformers.AutoModel.from_config(transformers.T5GemmaConfig(encoder=sub, decoder=sub)).save_pretrained(raw)
    minilm_tokenizer().save_pretrained(raw)
    SentenceTransformer(modules=[Transformer(str(raw)), Pooling(HIDDEN)]).save(str(saved))
    texts = ["hello world", "a longer sentence with more words in it", "x"]
    for folder in (saved, raw):
        want = SentenceTransformer(str(folder), device="cpu").encode(texts)
        np.testing.assert_allclose(Encoder(folder, device="cpu", pooling="mean").encode(texts), want, atol=1e-5)


def test_the_onnx_runtimes_tokenizer_reads_an_older_max_len_as_transformers_does(tiny, tmp_path):
    """transformers takes tokenizer_config.json's older ``max_len`` as model_max_length when that is absent;
    `FolderTokenizer` ignored it (1e30, no limit)."""
    pytest.importorskip("tokenizers")
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = _edited(tiny, tmp_path, "tokenizer_config.json", drop=("model_max_length",), max_len=16)
    assert FolderTokenizer(folder).model_max_length == AutoTokenizer.from_pretrained(folder).model_max_length == 16


def test_a_composite_configs_width_is_its_text_configs_on_both_readers(tmp_path):
    """A composite model's hidden states are its text model's (transformers' get_text_config): `config_size`
    (the dimension read_pooling_config and PoolingConfig.save take) let a top-level hidden_size win over
    text_config's, while the onnx runtime's `read_model_config` let text_config win."""
    from transformers import AutoConfig

    from tokenpool.model.configs import config_size
    from tokenpool.model.onnx import read_model_config

    data = {"model_type": "siglip", "hidden_size": 64, "text_config": {"hidden_size": 32}}
    (tmp_path / "config.json").write_text(json.dumps(data))
    want = AutoConfig.for_model("siglip", hidden_size=64, text_config={"hidden_size": 32}).get_text_config().hidden_size
    assert config_size(data) == read_model_config(tmp_path).hidden_size == want == 32
