"""Model folders (stop 48's hunt): modules.json types outside sentence-transformers, special-token ids past
the vocabulary, and the onnx runtime's tokenizer against transformers' for tokenizer classes it does not
mirror. Each case compares with sentence-transformers / transformers, or checks a clear refusal naming the file."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("sentence_transformers")
from tinymodels import bert_folder, name_tokenizer, tiny_decoder  # noqa: E402

from tokenpool import Encoder, read_pooling_config  # noqa: E402
from tokenpool.errors import ConfigError, ModelFolderError  # noqa: E402
from tokenpool.model.tokenization import Tokenized  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("s48") / "base", normalize=False)


@pytest.fixture
def folder(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "model"))


def _set_type(folder: Path, position: int, module_type: str) -> None:
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules[position]["type"] = module_type
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")


@pytest.mark.parametrize(("position", "module_type"), [
    (0, "mylib_s48.Transformer"), (0, "mylib_s48.models.MyTransformer"), (0, "Transformer"),
    (1, "mylib_s48.Pooling"), (1, "Pooling"),
])  # fmt: skip
def test_third_party_module_types_are_refused_and_never_imported(folder, tmp_path, monkeypatch, position, module_type):
    """A modules.json type outside sentence-transformers (an installed package's ``mylib.Transformer``, a bare
    ``Pooling``) ran as if it were sentence-transformers' own module: vectors of a module the folder did not
    name. sentence-transformers imports that class (only with trust_remote_code); tokenpool now refuses it
    naming the type and modules.json, trusted or not, and never imports it."""
    from sentence_transformers import SentenceTransformer

    package = tmp_path / "site"
    (package / "mylib_s48").mkdir(parents=True)
    (package / "mylib_s48" / "__init__.py").write_text("raise SystemExit('mylib_s48 was imported')\n")
    monkeypatch.syspath_prepend(str(package))
    _set_type(folder, position, module_type)
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(folder), device="cpu")  # sentence-transformers refuses it untrusted
    for trust in (False, True):
        with pytest.raises(ConfigError, match=rf"modules\.json: .*module '{module_type}' \(not a sentence-trans"):
            Encoder(folder, device="cpu", trust_remote_code=trust)
    assert "mylib_s48" not in sys.modules
    with pytest.raises(ConfigError, match=module_type):
        read_pooling_config(folder)


def _add_token_past_the_vocabulary(folder: Path, content: str = "<|eos|>") -> int:
    """A special token of tokenizer.json with the id after the model's last embedding row (config.json's
    vocab_size), as in a folder whose tokenizer gained a token its model was never resized for."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab_size = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    tokenizer["added_tokens"].append({"id": vocab_size, "content": content, "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": True})  # fmt: skip
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": content}), encoding="utf-8")
    return vocab_size


@pytest.mark.parametrize(("runtime", "options", "texts"), [
    ("torch", {"add_eos": True}, ["a plain text"]),  # the EOS tokenpool appends
    ("torch", {}, ["a plain text", "a text naming <|eos|> itself"]),  # a token of the text
    ("onnx", {"add_eos": True}, ["a plain text"]),
])  # fmt: skip
def test_token_ids_past_the_vocabulary_name_the_id_and_config(folder, tmp_path, monkeypatch, runtime, options, texts):
    """A tokenizer id past config.json's vocab_size (an EOS token added without resizing the model) failed
    deep in the model: a bare ``IndexError: index out of range in self`` (torch) or onnxruntime's
    INVALID_ARGUMENT from a Gather node. Now a ModelFolderError names the id, its token, the vocabulary size
    and config.json (a negative id given to pool_ids too); a folder without such ids is unchanged."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    vocab_size = _add_token_past_the_vocabulary(folder)
    encoder = Encoder(folder, device="cpu", runtime=runtime, **options)
    if not options:  # texts without that token still encode
        assert encoder.encode(["fine"]).shape == (1, 32)
    with pytest.raises(ModelFolderError, match=rf"token id {vocab_size} is not in the model's embedding table \(ids "
                                               rf"0..{vocab_size - 1}\) of .*config\.json \(vocab_size\): the "
                                               r"tokenizer's '<\|eos\|>'"):  # fmt: skip
        encoder.encode(texts)
    with pytest.raises(ModelFolderError, match=r"token id -5 is not in .*: an edited id"):
        list(encoder.pool_ids(Tokenized([[101, -5, 102]], np.array([3]))))


# --- the onnx runtime's tokenizer on SentencePiece folders of the classes transformers 5 rebuilds from options

_CORPUS = ["Hello World, the quick brown fox jumps over the lazy dog.", "naïve café über 日本語 テキスト",
           "don't stop believing!!! max six taxis ``quoted''", "A LONGER sentence with MANY Words, 12345"] * 40
_METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}


def _steps(*steps: dict) -> dict:
    return {"type": "Sequence", "normalizers": list(steps)}


_QUOTES = [{"type": "Replace", "pattern": {"String": q}, "content": '"'} for q in ("``", "''")]
_SPACES = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
# tokenizer.json pipelines as transformers 4 saved them (the Hub's files), and tokenizer_config.json options
_HUB = {
    "XLMRobertaTokenizer": _steps(_SPACES),
    "CamembertTokenizer": _steps(_SPACES),
    "AlbertTokenizer": _steps(*_QUOTES, {"type": "NFKD"}, {"type": "StripAccents"}, {"type": "Lowercase"}, _SPACES),
    "XLNetTokenizer": _steps(*_QUOTES, {"type": "NFKD"}, {"type": "StripAccents"}, _SPACES),
    "DebertaV2Tokenizer": _steps(_SPACES),
}
_OPTIONS = dict.fromkeys(("add_prefix_space", "do_lower_case", "keep_accents", "split_by_punct"),
                         st.one_of(st.booleans(), st.none()))  # (null: false for these classes, as transformers reads it)
_PIECES = ["x", "max", " ", "  ", "\t", "\n", "Hello", "World", "taxis", "é", "CAFÉ", "日本", "!", "``", "''", "'",
           "<mask>", "[MASK]", "</s>"]


@pytest.fixture(scope="module")
def sentencepiece_vocab() -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "[CLS]", "[SEP]", "<cls>", "<sep>", "[MASK]"]
    tokenizer.train_from_iterator(_CORPUS, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials,
                                                                   unk_token="<unk>"))  # fmt: skip
    return [tuple(item) for item in json.loads(tokenizer.to_str())["model"]["vocab"]]


@pytest.mark.parametrize("kind", sorted(_HUB))
@settings(max_examples=30, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=8), options=st.fixed_dictionaries({}, optional=_OPTIONS))
def test_onnx_tokenizer_of_sentencepiece_classes_matches_transformers(sentencepiece_vocab, tmp_path_factory, kind,
                                                                      pieces, options):
    """transformers 5 rebuilds a CamemBERT, ALBERT, XLNet or DeBERTa-v2 tokenizer's normalizer and pre-tokenizer
    from tokenizer_config.json's options (add_prefix_space, do_lower_case, keep_accents, split_by_punct), keeping
    only tokenizer.json's charsmap; the onnx runtime ran tokenizer.json's own pipeline, so runs of spaces, tabs,
    a trailing space, case or accents gave other ids than the torch runtime (another vector), silently."""
    import transformers
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = tmp_path_factory.mktemp(kind)
    getattr(transformers, kind)(vocab=sentencepiece_vocab).save_pretrained(folder)
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    saved.update(normalizer=_HUB[kind], pre_tokenizer=_METASPACE)
    (folder / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, **options}), encoding="utf-8")
    texts = ["".join(pieces), "x max  " + "".join(pieces) + " "]
    expected = AutoTokenizer.from_pretrained(folder, local_files_only=True)(texts)["input_ids"]
    assert FolderTokenizer(folder)(texts)["input_ids"] == expected


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory) -> Path:
    """A GemmaTokenizer folder (BPE with byte fallback) with the Hub's tokenizer.json pipeline (no pre-tokenizer)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("gemma")
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    bpe.train_from_iterator(_CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=specials))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    transformers.GemmaTokenizer(vocab=model["vocab"], merges=merges).save_pretrained(folder)
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    saved.update(normalizer={"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, pre_tokenizer=None)
    (folder / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    return folder


@settings(max_examples=30, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=8))
def test_onnx_tokenizer_of_gemma_matches_transformers(gemma_folder, pieces):
    """GemmaTokenizer (rebuilt by transformers 5: spaces to ▁ by the normalizer, byte fallback) gives
    transformers' ids on the onnx runtime with tokenizer.json's own pipeline: nothing to mirror."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    texts = ["".join(pieces), "x max  " + "".join(pieces) + " "]
    expected = AutoTokenizer.from_pretrained(gemma_folder, local_files_only=True)(texts)["input_ids"]
    assert FolderTokenizer(gemma_folder)(texts)["input_ids"] == expected


@pytest.mark.parametrize("named", [{"tokenizer_class": "MBartTokenizer"}, {"tokenizer_class": "MBart50TokenizerFast"},
                                   {"model_type": "mbart"}])  # fmt: skip
def test_onnx_tokenizer_refuses_mbart_naming_the_class(sentencepiece_vocab, tmp_path, named):
    """MBart's transformers tokenizer ends each text with the language code of tokenizer_config.json's src_lang
    (en_XX by default) and normalises runs of spaces its own way; the onnx runtime does not follow that, so such a
    folder is refused naming the class, not tokenised otherwise."""
    import transformers

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    transformers.XLMRobertaTokenizer(vocab=sentencepiece_vocab).save_pretrained(tmp_path)
    name_tokenizer(tmp_path, named, "xlm-roberta")
    with pytest.raises(ModelFolderError, match=r"tokenizer_config\.json: .*transformers' MBart(50)?Tokenizer .*"
                                               r"runtime='torch'"):  # fmt: skip
        FolderTokenizer(tmp_path)


@pytest.mark.parametrize(("key", "value"), [("padding_side", "middle"), ("padding_side", None),
                                            ("truncation_side", "LEFT"), ("split_special_tokens", "yes"),
                                            ("split_special_tokens", None), ("do_lower_case", None),
                                            ("tokenize_chinese_chars", None)])  # fmt: skip
def test_onnx_tokenizer_refuses_what_transformers_refuses_in_tokenizer_config(folder, key, value):
    """tokenizer_config.json's padding_side / truncation_side other than "left" / "right" (null too), or a
    split_special_tokens that is not a bool, or a BERT tokenizer's null do_lower_case / tokenize_chinese_chars, is
    refused by transformers (the torch runtime); the onnx runtime ran such a folder (a truncation_side "LEFT"
    truncating on the right, a null read as the default). Now both refuse it, naming the file."""
    from transformers import AutoTokenizer

    from tokenpool.model.fast_tokenizer import FolderTokenizer

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, key: value}), encoding="utf-8")
    with pytest.raises((ValueError, TypeError)):
        AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with pytest.raises(ModelFolderError, match=rf"tokenizer_config\.json: {key} must be"):
        FolderTokenizer(folder)


def test_pad_token_added_past_the_vocabulary_pads_with_an_id_the_model_has(tmp_path, monkeypatch):
    """A tokenizer_config.json pad_token missing from the vocabulary is added by transformers after the model's
    last embedding row; padding with it failed on the torch runtime (a bare IndexError, then the refusal of ids
    past the vocabulary) while the onnx runtime padded with 0. Padded columns are masked: the torch runtime now
    pads with the next usable id too, and a padded batch gives each text's own vector on both runtimes."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = tiny_decoder(tmp_path / "llama", "llama")  # (a model run padded: no unpadded pass)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<newpad>"}), encoding="utf-8")
    texts = ["a", "a longer text with more words"]
    for runtime in ("torch", "onnx"):
        encoder = Encoder(folder, device="cpu", runtime=runtime)
        alone = np.stack([encoder.encode(text) for text in texts])
        np.testing.assert_allclose(encoder.encode(texts, batch_size=2), alone, atol=1e-5)


@pytest.mark.parametrize("value", [True, 512.7, "512", [512]])
def test_a_model_max_length_that_is_no_whole_number_is_refused_naming_the_file(folder, value):
    """tokenizer_config.json's model_max_length, the token limit when the folder sets no max_seq_length: ``true``
    was read by the torch runtime as a limit of 1 token (isinstance(True, int)), and 512.7 was cut to 512 by the
    onnx runtime's tokenizer while the torch runtime ignored it. Anything but a whole number is now refused."""
    sbert = folder / "sentence_bert_config.json"
    if sbert.is_file():
        config = json.loads(sbert.read_text())
        config.pop("max_seq_length", None)
        sbert.write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": value}))
    with pytest.raises(ConfigError, match=r"tokenizer_config\.json: model_max_length must be a whole number"):
        Encoder(folder, device="cpu")
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": 24.0}))
    assert Encoder(folder, device="cpu").max_length == 24
