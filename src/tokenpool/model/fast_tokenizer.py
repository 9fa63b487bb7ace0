"""A tokenizer read from a folder's ``tokenizer.json`` with the `tokenizers` library alone (no transformers).

`FolderTokenizer` offers the part of a transformers fast tokenizer tokenpool calls, with its rules: the
saved padding and truncation are replaced by each call's own (longest-first at ``max_length``, on
``truncation_side``); their pad token and directions apply where tokenizer_config.json names none.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ..errors import ModelFolderError, is_int, require
from .configs import saved_limit
from .folders import missing_tokenizer
from .safety import check_regular_files, read_json_object

__all__ = ["FolderTokenizer"]

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _content(token: Any) -> str | None:
    """A special token as tokenizer_config.json stores it: a str or {"content": str, ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


# Tokenizer families whose transformers tokenizer sets a step of its pipeline from tokenizer_config.json's options
# (or their defaults) whatever tokenizer.json says: the classes (tokenizer_config.json's tokenizer_class, without
# "Fast"), the config.json model_type values that pick one of them when no class is named, and the step's
# options: {config key: (attribute, default)}.
_BERT_CLASSES = frozenset({
    "BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "MPNetTokenizer", "MobileBertTokenizer",
    "LayoutLMTokenizer", "LayoutLMv2Tokenizer", "SqueezeBertTokenizer", "FunnelTokenizer", "LxmertTokenizer",
    "SplinterTokenizer", "DPRQuestionEncoderTokenizer", "DPRContextEncoderTokenizer", "DPRReaderTokenizer",
})  # fmt: skip
_BERT_MODEL_TYPES = frozenset({
    "bert", "distilbert", "electra", "mpnet", "mobilebert", "layoutlm", "layoutlmv2", "squeezebert", "funnel",
    "convbert", "ernie", "megatron-bert", "nomic_bert", "lxmert", "dpr", "splinter",
})  # fmt: skip
# the cls and sep tokens of those classes (and model_types) when no file names them: transformers' defaults
_BERT_DEFAULT_SPECIALS = {**dict.fromkeys(("MPNetTokenizer", "mpnet"), ("<s>", "</s>")),
                          **dict.fromkeys(("FunnelTokenizer", "funnel"), ("<cls>", "<sep>"))}  # fmt: skip
_BYTE_LEVEL_CLASSES = frozenset({
    "RobertaTokenizer", "GPT2Tokenizer", "BartTokenizer", "LongformerTokenizer", "LEDTokenizer", "MvpTokenizer",
    "CodeGenTokenizer", "DebertaTokenizer",
})  # fmt: skip
_BYTE_LEVEL_MODEL_TYPES = frozenset({
    "roberta", "gpt2", "bart", "longformer", "led", "mvp", "codegen", "deberta", "opt", "gpt_neo", "gptj",
    "data2vec-text", "ibert", "roberta-prelayernorm", "phi", "starcoder2",
})  # fmt: skip
# of those, the RoBERTa family: transformers 5 gives them `<s> $A </s>` (their cls and sep tokens) whatever
# tokenizer.json's post-processor is
_ROBERTA_CLASSES = frozenset({"RobertaTokenizer", "BartTokenizer", "LongformerTokenizer", "LEDTokenizer",
                              "MvpTokenizer"})  # fmt: skip
_ROBERTA_MODEL_TYPES = frozenset({"roberta", "bart", "longformer", "led", "mvp", "data2vec-text", "ibert",
                                  "roberta-prelayernorm"})  # fmt: skip
# SentencePiece families transformers 5 rebuilds from tokenizer_config.json's options, keeping of tokenizer.json's
# normalizer only a precompiled charsmap (`_unigram_steps`): Unigram ones (by class, or by the model_type that picks
# it) and Llama's BPE (no normalizer; Metaspace without split, prepending to the first piece unless legacy), and
# Gemma's (by class or any gemma* model_type: spaces to ▁ by the normalizer, whatever tokenizer.json says)
_UNIGRAM_MODEL_TYPES = {
    "xlm-roberta": "XLMRobertaTokenizer", "t5": "T5Tokenizer", "mt5": "T5Tokenizer", "camembert": "CamembertTokenizer",
    "albert": "AlbertTokenizer", "xlnet": "XLNetTokenizer", "deberta-v2": "DebertaV2Tokenizer",
    **dict.fromkeys(("xmod", "gte", "jina_embeddings_v3"), "XLMRobertaTokenizer"),
}  # fmt: skip
# classes whose transformers tokenizer adds special tokens from options the onnx runtime does not follow (MBart's
# language codes, RemBERT's [CLS] … [SEP] and normalizer): refused rather than tokenised otherwise
_REFUSED_CLASSES = frozenset({"MBartTokenizer", "MBart50Tokenizer", "RemBertTokenizer"})
_REFUSED_MODEL_TYPES = {"mbart": "MBartTokenizer", "rembert": "RemBertTokenizer"}
# classes transformers 5 rebuilds with tokenizer_config.json's add_prefix_space (absent: this default), and the
# model_type values that pick them: a folder whose tokenizer.json prefixes otherwise is refused (`_check_prefix_space`)
_PREFIX_SPACE_CLASSES = {
    "Qwen2Tokenizer": False, "GPTNeoXTokenizer": False, "CohereTokenizer": False, "CodeLlamaTokenizer": True,
    "BigBirdTokenizer": True, "BarthezTokenizer": True, "XGLMTokenizer": True,
}  # fmt: skip
# of those, the Unigram classes whose Metaspace transformers rebuilds prepending ▁ to every piece (a piece between
# special tokens too: "always"), or to none
_ALWAYS_PREPENDING_CLASSES = frozenset({"BigBirdTokenizer", "BarthezTokenizer", "XGLMTokenizer"})
_PREFIX_SPACE_MODEL_TYPES = {
    **dict.fromkeys(("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"), "Qwen2Tokenizer"), "gpt_neox": "GPTNeoXTokenizer",
    "cohere": "CohereTokenizer", "cohere2": "CohereTokenizer", "big_bird": "BigBirdTokenizer", "xglm": "XGLMTokenizer",
}  # fmt: skip
_NORMALIZER_OPTIONS = {"do_lower_case": ("lowercase", True), "strip_accents": ("strip_accents", None),
                       "tokenize_chinese_chars": ("handle_chinese_chars", True)}  # fmt: skip
_PRE_TOKENIZER_OPTIONS = {"add_prefix_space": ("add_prefix_space", False)}


def _family_options(tokenizer: Any, config: dict[str, Any], folder: Path, tokens: dict[str, str | None]) -> None:
    """Set the normalizer, pre-tokenizer and [CLS] … [SEP] post-processor of a WordPiece ``tokenizer`` of the BERT
    family, the ByteLevel pre-tokenizer (and no normalizer) of the RoBERTa / GPT-2 family, or the Metaspace
    pipeline of the SentencePiece families (`_unigram_steps`, Llama; Gemma's ▁ for spaces; the unknown-token
    settings of Llama's, CodeLlama's and Gemma's BPE model) from ``config``
    (``folder``'s tokenizer_config.json; ``tokens``: its special tokens) as transformers 5 does for those families (the class
    named there, or picked by config.json's model_type): it rebuilds those steps whatever tokenizer.json says.
    `_REFUSED_CLASSES`, and `_PREFIX_SPACE_CLASSES` prefixing otherwise, are a `ModelFolderError`."""
    from tokenizers import models, pre_tokenizers

    named = config.get("tokenizer_class")
    model_type = None if named else read_json_object(folder / "config.json").get("model_type")
    kind = str(named).removesuffix("Fast") if named else None
    bert = kind in _BERT_CLASSES or model_type in _BERT_MODEL_TYPES
    byte_level = kind in _BYTE_LEVEL_CLASSES or model_type in _BYTE_LEVEL_MODEL_TYPES
    if bert and isinstance(tokenizer.model, models.WordPiece):
        defaults = _BERT_DEFAULT_SPECIALS.get(kind or model_type, ("[CLS]", "[SEP]"))
        _bert_steps(tokenizer, config, folder, tokens, defaults)
    if byte_level and isinstance(tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):
        tokenizer.pre_tokenizer = _set_options(tokenizer.pre_tokenizer, _PRE_TOKENIZER_OPTIONS, config, folder)
        tokenizer.normalizer = None  # transformers 5 builds these tokenizers without one
        if kind in _ROBERTA_CLASSES or model_type in _ROBERTA_MODEL_TYPES:
            _roberta_processing(tokenizer, config, folder, tokens)
    unigram = kind or _UNIGRAM_MODEL_TYPES.get(model_type)
    if unigram in _UNIGRAM_MODEL_TYPES.values() and isinstance(tokenizer.model, models.Unigram):
        _unigram_model(tokenizer, unigram, config, tokens, folder)
        _unigram_steps(tokenizer, unigram, config)
    refused = kind or _REFUSED_MODEL_TYPES.get(model_type)
    if refused in _REFUSED_CLASSES:
        raise ModelFolderError(f"{folder / 'tokenizer_config.json'}: the onnx runtime does not tokenise as "
                               f"transformers' {refused} does (its special tokens); use runtime='torch'")  # fmt: skip
    prefixed = kind or _PREFIX_SPACE_MODEL_TYPES.get(model_type)
    if prefixed in _PREFIX_SPACE_CLASSES:
        prefix = _check_prefix_space(tokenizer, prefixed, config, folder)
        if prefixed in _ALWAYS_PREPENDING_CLASSES and isinstance(tokenizer.model, models.Unigram):
            _unigram_model(tokenizer, prefixed, config, tokens, folder)
            _prepending_steps(tokenizer, prefixed, prefix)
    if isinstance(tokenizer.model, models.BPE):
        _sentencepiece_bpe_steps(tokenizer, kind, model_type, config, tokens)


def _bert_steps(tokenizer: Any, config: dict[str, Any], folder: Path, tokens: dict[str, str | None],
                defaults: tuple[str, str]) -> None:  # fmt: skip
    """The BERT family's `BertNormalizer` (with ``config``'s options), `BertPreTokenizer` and [CLS] $A [SEP]
    template (``tokens``' cls / sep, else the class's ``defaults``; when both are in the vocabulary) on a
    WordPiece ``tokenizer``."""
    from tokenizers import normalizers, pre_tokenizers, processors

    tokenizer.normalizer = _set_options(normalizers.BertNormalizer(clean_text=True), _NORMALIZER_OPTIONS, config,
                                        folder)  # fmt: skip
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tokens["cls_token"] or defaults[0], tokens["sep_token"] or defaults[1]
    ids = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
    if None not in ids:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, ids[0]), (sep, ids[1])],
        )


def _roberta_processing(tokenizer: Any, config: dict[str, Any], folder: Path, tokens: dict[str, str | None]) -> None:
    """The RoBERTa family's `<s> $A </s>` post-processor (``config``'s cls / sep tokens, `trim_offsets` and the
    pre-tokenizer's `add_prefix_space`) on a byte-level ``tokenizer``, when both tokens are in the vocabulary."""
    from tokenizers import processors

    cls, sep = tokens["cls_token"] or "<s>", tokens["sep_token"] or "</s>"  # (transformers' defaults)
    ids = tokenizer.token_to_id(cls), tokenizer.token_to_id(sep)
    trim = config.get("trim_offsets", True)
    if not isinstance(trim, bool):
        raise ModelFolderError(f"{folder / 'tokenizer_config.json'}: trim_offsets must be true or false, "
                               f"got {trim!r:.40}")  # fmt: skip
    if None not in ids:
        tokenizer.post_processor = processors.RobertaProcessing(
            (sep, ids[1]), (cls, ids[0]), trim_offsets=trim, add_prefix_space=tokenizer.pre_tokenizer.add_prefix_space
        )


def _sentencepiece_bpe_steps(
    tokenizer: Any, kind: str | None, model_type: Any, config: dict[str, Any], tokens: dict[str, str | None]
) -> None:
    """Gemma's and Llama's / CodeLlama's steps on a BPE ``tokenizer``: unknown pieces fused, bytes as fallback,
    the config's unk token (Llama's: none); Llama's Metaspace prefixing, Gemma's ▁ for spaces."""
    from tokenizers import normalizers, pre_tokenizers

    gemma = (kind or str(model_type)).lower().startswith("gemma")
    llama = kind in ("LlamaTokenizer", "CodeLlamaTokenizer")
    if gemma or llama:
        tokenizer.model.fuse_unk = tokenizer.model.byte_fallback = True
        tokenizer.model.unk_token = None if kind == "LlamaTokenizer" else tokens["unk_token"] or "<unk>"
    if llama:
        prefix = config.get("add_prefix_space") is not False  # (null: true for both)
        legacy = kind == "LlamaTokenizer" and config.get("legacy") is True  # (CodeLlama's: never)
        scheme = ("always" if legacy else "first") if prefix else "never"
        tokenizer.normalizer = None
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=scheme, split=False)
    if gemma:
        tokenizer.normalizer = normalizers.Replace(" ", "▁")  # (transformers' GemmaTokenizer: no options)
        tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")


# the unknown id transformers 5 gives the Unigram model of these classes: a fixed one, or (below) where the unk token
# is in the vocabulary (else a default), or tokenizer_config.json's unk_id (XLNet)
_UNIGRAM_UNK_IDS = {"XLMRobertaTokenizer": 3, "T5Tokenizer": 2, "AlbertTokenizer": 1, "BarthezTokenizer": 3,
                    "XGLMTokenizer": 3}  # fmt: skip


def _unigram_model(tokenizer: Any, kind: str, config: dict[str, Any], tokens: dict[str, str | None],
                   folder: Path) -> None:  # fmt: skip
    """Rebuild the Unigram model of ``tokenizer`` as transformers 5's class ``kind`` does: tokenizer.json's
    vocabulary, the class's unknown id (`_UNIGRAM_UNK_IDS`, else found from ``tokens``' unk token), no byte fallback."""
    from tokenizers import models

    unk_id = _UNIGRAM_UNK_IDS[kind] if kind in _UNIGRAM_UNK_IDS else config.get("unk_id", 0)
    if kind in _UNIGRAM_UNK_IDS or kind == "XLNetTokenizer":
        try:  # a character outside any vocabulary: tokenizer.json's model already reads it as that id (no rebuild)
            if [token.id for token in tokenizer.model.tokenize("\U0010fffd")] == [unk_id]:
                return
        except Exception:  # (the Rust library's: no unk id)
            pass
    vocab = [(str(piece), float(score)) for piece, score in json.loads(tokenizer.model.__getstate__())["vocab"]]
    unk = tokens["unk_token"] or ("[UNK]" if kind == "DebertaV2Tokenizer" else "<unk>")
    if kind == "CamembertTokenizer":
        unk_id = next((i for i, (piece, _) in enumerate(vocab) if piece == unk), 0)
    elif kind in ("DebertaV2Tokenizer", "BigBirdTokenizer"):  # the unk token with score 0, else a default
        default = config.get("unk_id", 1) if kind == "DebertaV2Tokenizer" else 100
        unk_id = vocab.index((unk, 0.0)) if (unk, 0.0) in vocab else default
    try:
        tokenizer.model = models.Unigram(vocab, unk_id, False)
    except Exception as err:  # the Rust library raises Exception subclasses (an unk id past the vocabulary)
        raise ModelFolderError(f"{folder / 'tokenizer.json'}: transformers' {kind} reads its unknown token at id "
                               f"{unk_id!r:.40}, which this vocabulary cannot take: {err}") from None  # fmt: skip


def _unigram_steps(tokenizer: Any, kind: str, config: dict[str, Any]) -> None:
    """The normalizer and pre-tokenizer transformers 5 gives the SentencePiece Unigram tokenizer class ``kind``
    from tokenizer_config.json's options (``config``; a null one is false, unlike Llama's), with the charsmap of
    tokenizer.json's normalizer: XLM-R, CamemBERT and ALBERT honour add_prefix_space, T5 and XLNet always prepend,
    DeBERTa-v2 prepends to the first piece without it; ALBERT and XLNet also normalise quotes, accents and case."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    charsmap = _precompiled(tokenizer.normalizer)
    prefix = config.get("add_prefix_space", True)
    split = [pre_tokenizers.WhitespaceSplit()]
    honours = kind in ("XLMRobertaTokenizer", "CamembertTokenizer", "AlbertTokenizer")  # add_prefix_space
    scheme = "never" if honours and not prefix else "always"
    tokenizer.normalizer = charsmap
    if kind in ("AlbertTokenizer", "XLNetTokenizer"):
        steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
        if kind == "XLNetTokenizer" or not config.get("keep_accents"):
            steps += [normalizers.NFKD(), normalizers.StripAccents()]
        if config.get("do_lower_case", kind == "AlbertTokenizer"):
            steps.append(normalizers.Lowercase())
        tokenizer.normalizer = normalizers.Sequence(steps if charsmap is None else [*steps, charsmap])
    elif kind == "DebertaV2Tokenizer":
        strip = normalizers.Strip(left=False, right=True)
        steps = [normalizers.Lowercase()] if config.get("do_lower_case") else []
        steps += ([normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(), strip] if charsmap is None
                  else [charsmap, strip, normalizers.Replace(Regex(" {2,}"), " ")])  # fmt: skip
        tokenizer.normalizer = normalizers.Sequence(steps)
        split = [pre_tokenizers.Punctuation("isolated")] if config.get("split_by_punct") else []
        scheme = "always" if prefix else "first"
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([*split, pre_tokenizers.Metaspace(prepend_scheme=scheme)])


def _prepending_steps(tokenizer: Any, kind: str, prefix: bool) -> None:
    """The normalizer and Metaspace pre-tokenizer (▁ before every piece, or none without ``prefix``) transformers 5
    gives the Unigram class ``kind`` of `_ALWAYS_PREPENDING_CLASSES`, with the charsmap of tokenizer.json's
    normalizer: BigBird drops trailing spaces and turns runs of spaces to ▁ (no charsmap), Barthez strips the right
    and turns runs to ▁ after the charsmap (without one: tabs and runs to a space, NFC, strip), XGLM turns runs of
    spaces to one."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    charsmap = _precompiled(tokenizer.normalizer)
    strip = normalizers.Strip(left=False, right=True)
    if kind == "BigBirdTokenizer":
        steps = [normalizers.Replace(Regex(r" +\z"), ""), normalizers.Replace(Regex(" {2,}"), "▁")]
    elif kind == "BarthezTokenizer":
        steps = ([charsmap, strip, normalizers.Replace(Regex(" {2,}"), "▁")] if charsmap is not None
                 else [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(), strip])  # fmt: skip
    else:
        steps = [*([charsmap] if charsmap is not None else []), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always" if prefix else "never")


def _check_prefix_space(tokenizer: Any, kind: str, config: dict[str, Any], folder: Path) -> bool:
    """A `ModelFolderError` when tokenizer.json's pipeline prefixes a space (a ByteLevel or Metaspace pre-tokenizer,
    a Prepend normalizer) otherwise than transformers 5 rebuilds the tokenizer class ``kind`` from ``config``; else
    whether it prefixes one."""
    wanted = config.get("add_prefix_space", _PREFIX_SPACE_CLASSES[kind])
    if wanted is None:  # (transformers refuses a null one for GPT-NeoX and Cohere: refused here too)
        wanted = {"CodeLlamaTokenizer": True, "GPTNeoXTokenizer": None, "CohereTokenizer": None}.get(kind, False)
    steps = [json.loads(step.__getstate__()) for step in (tokenizer.pre_tokenizer, tokenizer.normalizer)
             if step is not None]  # fmt: skip
    steps = [inner for step in steps for inner in step.get("pretokenizers") or step.get("normalizers") or [step]]
    saved = any(step.get("add_prefix_space") is True or step.get("prepend_scheme") not in (None, "never")
                or step.get("type") == "Prepend" for step in steps)  # fmt: skip
    if saved != wanted:
        raise ModelFolderError(f"{folder / 'tokenizer_config.json'}: add_prefix_space is {wanted!r:.40} for "
                               f"transformers' {kind} but tokenizer.json's pipeline {'does' if saved else 'does not'} "
                               "prefix a space; the onnx runtime does not rebuild it: use runtime='torch'")  # fmt: skip
    return wanted


def _precompiled(normalizer: Any) -> Any:
    """The precompiled charsmap step of a tokenizer.json normalizer (alone or in a sequence), else None."""
    from tokenizers import normalizers

    saved = json.loads(normalizer.__getstate__()) if normalizer is not None else {}
    steps = saved.get("normalizers", [saved]) if saved.get("type") == "Sequence" else [saved]
    charsmap = next((step.get("precompiled_charsmap") for step in steps if step.get("type") == "Precompiled"), None)
    return None if charsmap is None else normalizers.Precompiled(base64.b64decode(charsmap))


def _set_options(step: Any, options: dict[str, tuple[str, Any]], config: dict[str, Any], folder: Path) -> Any:
    """``step`` with each of ``options`` set from ``config`` (absent: the default; null: the default where that
    is not True, as transformers reads them: it refuses a null do_lower_case or tokenize_chinese_chars)."""
    for key, (attribute, default) in options.items():
        value = default if config.get(key, default) is None and default is not True else config.get(key, default)
        if not (isinstance(value, bool) or (value is None and default is None)):
            null = "" if default is True else " or null"
            raise ModelFolderError(f"{folder / 'tokenizer_config.json'}: {key} must be true or false{null}, "
                                   f"got {value!r:.40}")  # fmt: skip
        setattr(step, attribute, value)
    return step


def _extra_tokens(config: dict[str, Any], special_map: dict[str, Any]) -> list[str | None]:
    """The special tokens beyond the named ones: ``additional_special_tokens`` (transformers 4) and
    ``extra_special_tokens`` (transformers 5: a list, or a dict of named ones), from tokenizer_config.json or else
    special_tokens_map.json."""
    found: list[Any] = []
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = config.get(key) or special_map.get(key) or []
        found += list(extra.values()) if isinstance(extra, dict) else list(extra) if isinstance(extra, list) else []
    return [_content(token) for token in found]


def _side(config: dict[str, Any], key: str, saved: dict[str, Any], folder: Path) -> str:
    """"left" or "right": tokenizer_config.json's ``key`` (any other value, null too, refused as transformers
    refuses it), else the direction of the padding or truncation ``saved`` in tokenizer.json ("Left"/"Right")."""
    if key not in config:
        return "left" if str(saved.get("direction", "")).lower() == "left" else "right"
    if config[key] not in ("left", "right"):
        raise ModelFolderError(f"{folder / 'tokenizer_config.json'}: {key} must be 'left' or 'right', got {config[key]!r:.40}")
    return config[key]


class FolderTokenizer:
    """``tokenizer.json`` + ``tokenizer_config.json`` (+ ``special_tokens_map.json``) of a model folder."""

    is_fast = True  # character offsets come from the tokenizers library, as in a transformers fast tokenizer

    def __init__(self, folder: Path) -> None:
        tokenizers = require(
            "tokenizers", "the onnx runtime needs the tokenizers library: pip install 'tokenpool[onnx]'"
        )
        path = folder / "tokenizer.json"
        check_regular_files(folder, [path.name])  # (a pipe there is no missing file)
        if not path.is_file():
            if (missing := missing_tokenizer(folder)) is not None:  # (no tokenizer at all: as `check_files` says it)
                raise ModelFolderError(f"model folder {str(folder)!r} is missing {missing}")
            raise ModelFolderError(
                f"the onnx runtime needs {path} (a fast tokenizer); this folder has only slow tokenizer files "
                "— use runtime='torch'"
            )
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust library raises Exception subclasses
            raise ModelFolderError(f"cannot read {path}: {err}") from None
        # transformers takes the pad token and both sides from the saved padding / truncation when
        # tokenizer_config.json does not name them, then switches those off
        saved_padding = self._tokenizer.padding or {}
        saved_truncation = self._tokenizer.truncation or {}
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._truncation: tuple[int, str] | None = None  # (max_length, side) the backend truncates at; None: off
        config = read_json_object(folder / "tokenizer_config.json")
        special_map = read_json_object(folder / "special_tokens_map.json")
        tokens = {key: _content(config.get(key)) or _content(special_map.get(key)) for key in _SPECIAL_KEYS}
        _family_options(self._tokenizer, config, folder, tokens)
        tokens["pad_token"] = tokens["pad_token"] or _content(saved_padding.get("pad_token"))
        self.pad_token_id = self._id(tokens["pad_token"])
        self.eos_token_id = self._id(tokens["eos_token"])
        self.padding_side: str = _side(config, "padding_side", saved_padding, folder)
        self.truncation_side: str = _side(config, "truncation_side", saved_truncation, folder)
        # transformers' split_special_tokens: a special token's text in a text is split as plain text
        self.split_special_tokens = config.get("split_special_tokens", False)
        if not isinstance(self.split_special_tokens, bool):
            raise ModelFolderError(f"{folder / 'tokenizer_config.json'}: split_special_tokens must be true or false, "
                                   f"got {self.split_special_tokens!r:.40}")  # fmt: skip
        self._tokenizer.encode_special_tokens = self.split_special_tokens
        limit = saved_limit(config)[1]
        whole = is_int(limit) or (isinstance(limit, float) and limit.is_integer())  # (the Encoder refuses others)
        self.model_max_length = int(limit) if whole and limit < 1e12 else int(1e30)
        ids = {self._id(token) for token in [*tokens.values(), *_extra_tokens(config, special_map)]}
        self.all_special_ids: list[int] = sorted(i for i in ids if i is not None)

    @property
    def backend_tokenizer(self) -> Any:
        """The `tokenizers.Tokenizer` (transformers' name for it); its truncation is set by each call."""
        return self._tokenizer

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | None | list[str | None]:
        """The vocabulary entry of an id, or of each id of a list (None for an id outside the vocabulary)."""
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tokenizer.token_to_id(token)

    def _truncate_at(self, max_length: int | None) -> None:
        """Set the backend's truncation to ``max_length`` on ``truncation_side`` (None: off), when it changed."""
        wanted = None if max_length is None else (max_length, self.truncation_side)
        if wanted == self._truncation:
            return
        if wanted is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(
                max_length, stride=0, strategy="longest_first", direction=self.truncation_side
            )
        self._truncation = wanted

    def __call__(
        self, texts: str | list[str], *, add_special_tokens: bool = True, truncation: bool = False,
        max_length: int | None = None, padding: bool = False, return_attention_mask: bool = False,
        return_token_type_ids: bool = False, return_offsets_mapping: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """{"input_ids": ids} for a str, {"input_ids": [ids, ...]} for a list (no padding: rows as lists);
        with ``return_offsets_mapping`` also "offset_mapping": each token's (start, end) characters in its text,
        (0, 0) for a special token."""
        if padding:
            raise ValueError("FolderTokenizer pads in Tokenization.collate, not here (padding=False)")
        single = isinstance(texts, str)
        self._truncate_at(max_length if truncation and max_length is not None else None)
        batch = [texts] if single else list(texts)
        encoded = self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
        out = {"input_ids": [encoding.ids for encoding in encoded]}
        if return_offsets_mapping:
            out["offset_mapping"] = [encoding.offsets for encoding in encoded]
        return {key: rows[0] if single else rows for key, rows in out.items()}
