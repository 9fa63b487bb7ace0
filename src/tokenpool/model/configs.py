"""Read and write a model folder's pooling configuration the way sentence-transformers lays it out
(``modules.json``, the pooling module's ``config.json`` in either schema, ``sentence_bert_config.json``,
``config_sentence_transformers.json``); `PoolingConfig.save` also writes the legacy booleans TEI reads."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..core.durable import write_whole
from ..core.pooling import SPLADE_REDUCTIONS, check_options, check_truncate_dim
from ..core.strategies import (
    check_combination,
    input_kind,
    legacy_keys,
    parse_strategies,
    pooled_width,
    strategy_names,
)
from ..errors import ConfigError, ModelFolderError, is_int, refuse_empty_model
from .modules import class_name, ordered_modules, output_width, read_module_config, read_post_modules
from .safety import is_present, read_json_file, read_json_object
from .texts import check_encodable

logger = logging.getLogger(__name__)

# Legacy boolean keys in the order sentence-transformers concatenates them (its `forward` order)
LEGACY_KEYS: dict[str, str] = legacy_keys()

# model_type values of decoder-only families: without a pooling config these get last-token pooling.
DECODER_MODEL_TYPES = frozenset({
    "gpt2", "gpt_neo", "gpt_neox", "gptj", "gpt_bigcode", "codegen", "llama", "mistral", "mixtral",
    "ministral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
    "phimoe", "falcon", "bloom", "opt", "mpt", "stablelm", "starcoder2", "olmo", "olmo2", "cohere", "cohere2",
    "deepseek_v2", "deepseek_v3", "granite", "granitemoe", "nemotron", "exaone", "glm", "glm4", "minicpm",
    "jamba", "persimmon", "internlm2", "baichuan", "chatglm", "smollm3",
})  # fmt: skip
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
MAX_REAL_LENGTH = 1_000_000  # a tokenizer model_max_length at or above this is the "no limit" sentinel
# a model config.json's width under its family's name (DistilBERT's dim, GPT-2's n_embd, T5's d_model, XLM's and
# Flaubert's emb_dim, older Bloom and Falcon configs' n_embed)
WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "dim", "emb_dim", "n_embed")
# The Transformer module's config file names sentence-transformers tries, in its order (older folders, e.g. of
# XLM-R or DistilBERT models, carry one of the later names); the first non-empty one is read.
SBERT_CONFIG_NAMES = (
    "sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
    "sentence_camembert_config.json", "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)  # fmt: skip
# The Transformer config's keyword arguments for the tokenizer, model config and model: (name, its older name)
_KWARGS_KEYS = (("processor_kwargs", "tokenizer_args"), ("config_kwargs", "config_args"), ("model_kwargs", "model_args"))
# keyword arguments that change no token or vector tokenpool computes: where files come from, the precision and
# attention kernel (tokenpool's own options; remote-code models' kernel switches such as unpad_inputs), the
# padding side (tokenpool pools by the attention mask), the KV cache
_HARMLESS_KWARGS = frozenset({
    "trust_remote_code", "revision", "code_revision", "token", "cache_dir", "local_files_only", "subfolder",
    "use_fast", "padding_side", "dtype", "torch_dtype", "attn_implementation", "device_map", "low_cpu_mem_usage",
    "use_safetensors", "add_pooling_layer", "unpad_inputs", "use_memory_efficient_attention", "use_flash_attn",
    "use_cache", "use_auth_token", "force_download", "resume_download", "proxies", "clean_up_tokenization_spaces",
})  # fmt: skip

# Import paths of the modules `save` writes; sentence-transformers resolves these from v5 (sparse) / v2 on.
_ST_TYPES = {
    "transformer": "sentence_transformers.models.Transformer",
    "pooling": "sentence_transformers.models.Pooling",
    "normalize": "sentence_transformers.models.Normalize",
    "mlm_transformer": "sentence_transformers.sparse_encoder.models.MLMTransformer",
    "splade": "sentence_transformers.sparse_encoder.models.SpladePooling",
}


class _FrozenDict(dict):
    """A read-only dict: hashable, picklable (Ray ships configs to workers) and JSON-serialisable."""

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("PoolingConfig mappings are read-only; use dataclasses.replace to change a config")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_FrozenDict, (dict(self),))


@dataclass(frozen=True)
class PoolingConfig:
    """How a model folder pools: strategies, prompt handling, normalisation, prompts; ``fallback`` and
    ``sources`` (provenance) are not compared."""

    strategies: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    normalize: bool = False
    embedding_dimension: int | None = None
    splade_reduction: str = "max"
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    truncate_dim: int | None = None  # sentence-transformers >= 6.3 saves a model's Matryoshka width here
    max_active_dims: int | None = None  # a sparse model's non-zeros kept per row (SparseEncoder saves it)
    is_sparse: bool = False
    fallback: str | None = field(default=None, compare=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        members = parse_strategies(self.strategies)
        check_combination(members)
        names = tuple(member.value for member in members)
        sparse = input_kind(members) == "logits"
        if self.is_sparse and not sparse:
            raise ConfigError(f"is_sparse=True needs strategies {strategy_names('logits')}, got {names}")
        if self.max_active_dims is not None and not sparse:
            raise ConfigError(f"max_active_dims is for sparse models (strategies {strategy_names('logits')}), got {names}")
        if self.splade_reduction not in SPLADE_REDUCTIONS:
            raise ConfigError(f"splade_reduction must be one of {SPLADE_REDUCTIONS}, got {self.splade_reduction!r}")
        try:  # (what pool would refuse at the first encode: a reduction for strategies that take none)
            check_options(False, self.splade_reduction, members)
        except ValueError as exc:
            raise ConfigError(f"splade_{exc}") from None
        for name in ("include_prompt", "normalize", "do_lower_case", "is_sparse"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("embedding_dimension", "max_seq_length", "truncate_dim", "max_active_dims"):
            value = getattr(self, name)
            if value is not None and (not is_int(value)):
                raise TypeError(f"{name} must be an int or None, got {value!r}")
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        prompts = dict(self.prompts)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise TypeError(f"prompts must map str to str, got {prompts!r}")
        for name, text in prompts.items():  # (a JSON \ud800 escape: no tokenizer can encode it)
            check_encodable(f"prompts[{name!r}]", text)
        if self.default_prompt_name is not None and self.default_prompt_name not in prompts:
            raise ConfigError(
                f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts {sorted(prompts)}"
            )
        object.__setattr__(self, "strategies", names)
        object.__setattr__(self, "is_sparse", sparse)
        object.__setattr__(self, "prompts", _FrozenDict(prompts))
        object.__setattr__(self, "sources", _FrozenDict(self.sources))

    @property
    def output_dimension(self) -> int | None:
        """Length of the pooled vector (strategies × embedding_dimension), None when the dimension is unknown."""
        if self.embedding_dimension is None:
            return None
        # embedding_dimension is the hidden size of a dense model and the vocabulary size of a sparse one
        return pooled_width(parse_strategies(self.strategies), self.embedding_dimension, self.embedding_dimension)

    def save(self, folder: str | os.PathLike) -> None:
        """Write modules.json, the pooling module's config.json, sentence_bert_config.json and
        config_sentence_transformers.json into ``folder`` (created if needed), keeping unrelated keys."""
        refuse_empty_model(folder)  # (Path("") is the working folder, which nobody named)
        _save(self, Path(folder))


def read_pooling_config(path: str | os.PathLike, *, log_fallback: bool = True) -> PoolingConfig:
    """Read a model folder's pooling configuration (sentence-transformers or TEI layout; a plain Hugging Face
    folder gets a documented fallback, logged unless ``log_fallback=False`` and kept in ``fallback``)."""
    refuse_empty_model(path)  # (Path("") is the working folder, which nobody named)
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"model folder not found: {str(root)!r}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a model folder: {str(root)!r}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    fallback = None

    layout = _read_modules(root)
    if layout.pooling_dir is not None:
        _read_pooling_module(root, layout.pooling_dir, layout.pooling_kind, values, sources)
    else:
        fallback = _fallback(root, layout.transformer_dir, values, sources)
        if log_fallback:
            logger.warning(fallback)
    if layout.normalize is not None:
        _found(values, sources, "modules.json", normalize=layout.normalize)

    _read_sbert_config(root, layout, values, sources)
    _read_st_config(root, values, sources)
    sources = {f.name: sources.get(f.name, "default") for f in fields(PoolingConfig) if f.compare}
    sources["is_sparse"] = sources.get("strategies", "default")  # PoolingConfig derives is_sparse from them
    try:
        return PoolingConfig(**values, fallback=fallback, sources=sources)
    except ValueError as err:  # a value that is valid JSON but not a valid config, e.g. an unknown mode
        where = sorted({s for s in sources.values() if s not in ("default", "fallback")})
        raise ConfigError(f"invalid pooling config in {root} ({', '.join(where)}): {err}") from None


@dataclass
class _Layout:
    transformer_dir: str = ""
    transformer_task: str = "feature-extraction"  # the Transformer class's task when its config names none
    pooling_dir: str | None = None
    pooling_kind: str = "pooling"  # "pooling" | "splade"
    pooling_index: int = -1
    normalize: bool | None = None  # None: no modules.json to tell


def _found(values: dict, sources: dict, rel: str, **found: Any) -> None:
    """Record config values read from the file ``rel`` (their source)."""
    values.update(found)
    sources.update(dict.fromkeys(found, rel))


def _read_typed(config: dict, types: dict, root: Path, rel: str, values: dict, sources: dict) -> None:
    """The keys of ``types`` that ``config`` (the file ``rel``) sets, type-checked; null counts as absent
    (sentence-transformers tests them for truth)."""
    for key, kind in types.items():
        if config.get(key) is not None:
            _found(values, sources, rel, **{key: _expect(config[key], kind, root / rel, key)})


def _join(directory: str, name: str) -> str:
    return str(PurePosixPath(directory, name)) if directory else name


def _read_modules(root: Path) -> _Layout:
    """Locate the transformer, pooling and Normalize modules from modules.json (or a TEI-style 1_Pooling)."""
    if not is_present(root / "modules.json"):
        return _tei_layout(root, _Layout())
    layout = _Layout(normalize=False)  # only a final Normalize module sets it
    modules = read_json_file(root / "modules.json")
    where = root / "modules.json"
    if not isinstance(modules, list):
        raise ConfigError(f"{where} must hold a JSON list of modules, got {type(modules).__name__}")
    modules = ordered_modules(modules, where)
    final = _final_normalize([class_name(entry["type"]) for entry in modules])
    for position, entry in enumerate(modules):  # (each a dict with string type and path: `ordered_modules`)
        rel, kind = entry["path"], class_name(entry["type"])
        _refuse_foreign_module(root, entry["type"], where)
        if kind == "Dropout" and layout.pooling_dir is not None:  # (on the sentence embedding: after pooling)
            continue
        if kind.endswith("Transformer") and position == 0:
            layout.transformer_dir = rel
            layout.transformer_task = "fill-mask" if kind == "MLMTransformer" else "feature-extraction"
        elif kind in ("Pooling", "SpladePooling") and layout.pooling_dir is None:
            layout.pooling_dir, layout.pooling_index = rel, position
            layout.pooling_kind = "splade" if kind == "SpladePooling" else "pooling"
        elif kind == "Normalize" and layout.pooling_index < position and position == final:
            read_module_config(root, kind, rel)  # one that normalises another feature is refused
            layout.normalize = True
        elif kind not in ("Dense", "LayerNorm", "Normalize") or layout.pooling_kind != "pooling" or (
            layout.pooling_dir is None
        ):  # (those after Pooling run by tokenpool.model.modules, in this order)
            raise ConfigError(
                f"{where}: tokenpool cannot run module {entry['type']!r:.80} (path {rel!r:.80}) at position {position}; "
                "it supports a Transformer, then Pooling or SpladePooling, then Dense, LayerNorm, Normalize and "
                "Dropout modules (after Pooling)"
            )
        if kind != "Normalize" and not (root / rel).is_dir():  # (a Normalize may have no folder)
            what = "pooling module" if kind in ("Pooling", "SpladePooling") else "module"
            raise ConfigError(f"{where}: {what} {entry['type']!r:.80} points at a missing folder {rel!r:.80}")
    if layout.pooling_dir is None and (unlisted := _pooling_folders(root)):  # (the fallback may pool otherwise)
        raise ConfigError(
            f"{where} lists no pooling module, but {root} has {', '.join(unlisted)}: sentence-transformers cannot "
            "encode with that modules.json and TEI pools by the folder; list it in modules.json or remove it"
        )
    return layout


def _refuse_foreign_module(root: Path, module_type: str, where: Path) -> None:
    """A `ConfigError` for a modules.json ``type`` outside sentence-transformers: the folder's own code
    (``custom_st.Transformer`` → ``custom_st.py``), another Hub repo's (``org/code--custom_st.Transformer``) or
    an installed package's (``mylib.Transformer``). sentence-transformers imports that class (only with
    trust_remote_code); tokenpool never does, and its own module of that name would give other vectors."""
    if module_type.startswith("sentence_transformers."):
        return
    parts = module_type.split(".")
    code = "/".join(parts[:-1]) + ".py"
    if "--" in parts[0]:
        source = f"code from the Hub repo {parts[0].split('--')[0]!r:.80}"
    elif len(parts) > 1 and all(p.isidentifier() for p in parts) and (root / code).is_file():
        source = f"the folder's own code ({code})"
    else:
        source = "not a sentence-transformers class"
    raise ConfigError(
        f"{where}: tokenpool cannot run module {module_type!r:.80} ({source}): it runs sentence-transformers' modules "
        "only and imports no code a modules.json names (not even with trust_remote_code)"
    )


def _tei_layout(root: Path, layout: _Layout) -> _Layout:
    """No modules.json: use a lone ``<n>_Pooling/config.json`` as TEI does; Normalize is then unknown (False)."""
    candidates = _pooling_folders(root)
    if len(candidates) > 1:
        raise ConfigError(f"{root} has no modules.json and several pooling folders {candidates}; add a modules.json")
    if candidates:
        layout.pooling_dir = candidates[0]
        layout.pooling_kind = "splade" if candidates[0].endswith("SpladePooling") else "pooling"
        layout.transformer_task = "fill-mask" if layout.pooling_kind == "splade" else "feature-extraction"
    return layout


def _pooling_folders(root: Path) -> list[str]:
    """The ``<n>_Pooling`` / ``<n>_SpladePooling`` folders of ``root`` holding a config.json, by name."""
    candidates = sorted(p.parent.name for p in root.glob("*_*Pooling/config.json"))
    return [c for c in candidates if c.split("_", 1)[1] in ("Pooling", "SpladePooling")]


def _expect(value: Any, kind: type | tuple[type, ...], file: Path, key: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{file}: {key!r} has the wrong type: {value!r:.80}")
    return value


def _read_pooling_module(root: Path, folder: str, kind: str, values: dict, sources: dict) -> None:
    rel = _join(folder, "config.json")
    file = root / rel
    config = read_json_file(file, object_only=True, missing=f"pooling module folder {root / folder} has no config.json")

    dim = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if dim is not None:
        _found(values, sources, rel, embedding_dimension=_expect(dim, int, file, "embedding_dimension"))
        _check_fields(root, rel, values, ["embedding_dimension"])

    if kind == "splade":
        reduction = config.get("pooling_strategy", "max")
        if reduction not in SPLADE_REDUCTIONS:
            raise ConfigError(f"{file}: unknown pooling_strategy {reduction!r:.60}; expected one of {SPLADE_REDUCTIONS}")
        activation = config.get("activation_function", "relu")
        if activation != "relu":
            raise ConfigError(f"{file}: activation_function {activation!r:.60} is not supported (only 'relu')")
        _found(values, sources, rel, strategies=("splade",), splade_reduction=reduction)
        return
    _found(values, sources, rel, strategies=_modes(config, file))
    if "include_prompt" in config:
        include_prompt = _expect(config["include_prompt"], bool, file, "include_prompt")
        _found(values, sources, rel, include_prompt=include_prompt)


def _modes(config: dict[str, Any], file: Path) -> tuple[str, ...]:
    """Strategies of a Pooling config.json: the compact ``pooling_mode`` wins over the legacy booleans."""
    # a null boolean is false, as an absent one is (sentence-transformers tests them for truth)
    legacy = [mode for key, mode in LEGACY_KEYS.items()
              if _expect(False if config.get(key) is None else config[key], bool, file, key)]  # fmt: skip
    if "pooling_mode" not in config:
        if not legacy:
            logger.warning("%s sets no pooling mode; using 'mean' as sentence-transformers does", file)
            return ("mean",)
        return tuple(legacy)
    spec = config["pooling_mode"]
    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, list) or not spec or not all(isinstance(s, str) for s in spec):
        raise ConfigError(f"{file}: 'pooling_mode' must be a mode name or a non-empty list of them, got {spec!r:.80}")
    try:
        modes = tuple(member.value for member in parse_strategies(spec))
    except ValueError as err:
        raise ConfigError(f"{file}: {err}") from None
    if legacy and set(legacy) != set(modes):
        logger.warning(
            "%s: pooling_mode %s disagrees with its legacy booleans %s; using pooling_mode "
            "(TEI would use the booleans)", file, list(modes), legacy,
        )
    return modes


def _fallback(root: Path, transformer_dir: str, values: dict, sources: dict) -> str:
    """No pooling config: last-token for decoder / causal-LM models, mean otherwise; logged and returned."""
    rel = _join(transformer_dir, "config.json")
    reason, mode = "no config.json to tell the architecture", "mean"
    if is_present(root / rel):
        config = read_json_file(root / rel, object_only=True)
        architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
        causal_arch = next((a for a in architectures if a.endswith(_CAUSAL_SUFFIXES)), None)
        model_type = config.get("model_type")
        if config.get("is_causal") is False:
            reason = "config.json sets is_causal=false (bidirectional)"
        elif causal_arch:
            reason, mode = f"config.json lists the causal-LM architecture {causal_arch}", "lasttoken"
        elif config.get("is_decoder") is True:
            reason, mode = "config.json sets is_decoder=true", "lasttoken"
        elif model_type in DECODER_MODEL_TYPES:
            reason, mode = f"config.json has the decoder model_type {model_type!r}", "lasttoken"
        else:
            reason = f"config.json describes an encoder ({', '.join(architectures) or model_type or 'unknown'})"
        hidden = config_size(config)
        if hidden is not None and hidden > 0:
            _found(values, sources, rel, embedding_dimension=hidden)
    _found(values, sources, "fallback", strategies=(mode,))
    return f"{root} has no pooling config (modules.json / 1_Pooling); using {mode!r} pooling: {reason}"


def _read_sbert_config(root: Path, layout: _Layout, values: dict, sources: dict) -> None:
    """max_seq_length / do_lower_case, else the tokenizer's model_max_length, as sentence-transformers (v6
    saves the limit only in tokenizer_config.json); `_transformer_options` checks the file's options."""
    rel, config = _sbert_config(root, layout.transformer_dir)
    _read_typed(config, {"max_seq_length": int, "do_lower_case": bool}, root, rel, values, sources)
    sparse = values.get("strategies") == ("splade",)
    limit = _transformer_options(config, root / rel, sparse=sparse, default_task=layout.transformer_task)
    if limit is not None:  # the tokenizer's model_max_length, which sentence-transformers lets win
        _found(values, sources, rel, max_seq_length=limit)
    _check_fields(root, rel, values, ["max_seq_length"])
    tok_rel = _join(layout.transformer_dir, "tokenizer_config.json")
    if "max_seq_length" not in values and is_present(root / tok_rel):
        saved = read_json_file(root / tok_rel, object_only=True)
        key, limit = saved_limit(saved)
        if isinstance(limit, float) and limit.is_integer():  # 512.0: the limit the onnx runtime's tokenizer reads
            limit = int(limit)
        # (true was read as a limit of 1 token, 512.7 by one runtime; transformers fails on a negative limit)
        if limit is not None and (not is_int(limit) or limit < 0):
            raise ConfigError(f"{root / tok_rel}: {key} must be a whole number of tokens (0 or more), got {limit!r:.40}")
        # tokenizers without a limit store a huge sentinel (1e30), and transformers truncates nothing at 0: no limit
        if limit and limit <= MAX_REAL_LENGTH:
            _found(values, sources, tok_rel, max_seq_length=limit)


def saved_limit(tokenizer_config: Mapping[str, Any]) -> tuple[str, Any]:
    """(key, value) of a tokenizer_config.json's limit: model_max_length, else the older max_len (transformers
    reads it then)."""
    key = "model_max_length" if "model_max_length" in tokenizer_config else "max_len"
    return key, tokenizer_config.get(key)


def _transformer_options(config: dict[str, Any], file: Path, *, sparse: bool, default_task: str) -> int | None:
    """Check what the Transformer module's config asks of transformers (task, pooled output, keyword
    arguments) as sentence-transformers reads it: only options that change no token or vector pass
    (`ConfigError` naming the file otherwise). Returns the tokenizer's ``model_max_length`` (which wins over
    ``max_seq_length``) or None; ``default_task``: the modules.json class's task when the file names none."""
    task, output = ("fill-mask", "logits") if sparse else ("feature-extraction", "last_hidden_state")
    if config.get("transformer_task", default_task) != task:
        said = "" if "transformer_task" in config else " (its modules.json class's default)"
        raise ConfigError(
            f"{file}: transformer_task={config.get('transformer_task', default_task)!r:.60}{said} is not supported "
            f"with {'splade' if sparse else 'dense'} pooling (tokenpool pools the {output!r} of a {task!r} model)"
        )
    if config.get("module_output_name", "token_embeddings") != "token_embeddings":
        raise ConfigError(f"{file}: module_output_name={config['module_output_name']!r:.60} is not supported "
                          "(tokenpool pools the token embeddings)")  # fmt: skip
    modalities = config.get("modality_config")
    if modalities is not None:
        text = modalities.get("text") if isinstance(modalities, dict) else None
        if text != {"method": "forward", "method_output_name": output}:
            raise ConfigError(
                f"{file}: modality_config text entry {text!r:.120} is not supported (tokenpool pools the "
                f"{output!r} of the model's forward)"
            )
        if "message" in modalities:  # (sentence-transformers then renders each text with the chat template)
            raise ConfigError(f"{file}: modality_config has a 'message' entry, which tokenpool does not support "
                              "(sentence-transformers renders every text with the tokenizer's chat template)")  # fmt: skip
    # the processor's call options, the per-task lengths (sentence-transformers >= 6.3) and another folder's
    # tokenizer (tokenizer_name_or_path, resolved as transformers does) cut other tokens
    own, folder = "tokenizer_name_or_path", os.path.realpath(file.parent)
    for key in ("processing_kwargs", "query_length", "document_length", "query_expansion", own):
        value = config.get(key)  # (realpath refuses a NUL)
        same = key == own and isinstance(value, str) and "\0" not in value and os.path.realpath(value) == folder
        if value not in (None, {}) and not same:
            tail = "; it reads the folder's own tokenizer" if key == own else ""
            raise ConfigError(f"{file}: {key}={value!r:.60} is not supported (sentence-transformers tokenises with "
                              f"it; tokenpool does not honour it{tail})")  # fmt: skip
    limit = None
    for new, old in _KWARGS_KEYS:
        name = old if old in config else new
        options = {} if config.get(name) is None else config[name]  # (null: none; false, 0, "", []: refused)
        if not isinstance(options, dict):
            raise ConfigError(f"{file}: {name!r} must be a JSON object, got {options!r:.60}")
        for key, value in options.items():
            if new == "processor_kwargs" and key == "model_max_length":
                limit = _expect(value, int, file, f"{name}.model_max_length")
                if limit <= 0:
                    raise ConfigError(f"{file}: {name}.model_max_length must be positive, got {limit}")
            elif key not in _HARMLESS_KWARGS:
                raise ConfigError(
                    f"{file}: {name} sets {key}={value!r:.60}, which sentence-transformers passes to transformers; "
                    "tokenpool does not honour it (it would change the tokens or the model's outputs)"
                )
    return limit


def _sbert_config(root: Path, transformer_dir: str) -> tuple[str, dict[str, Any]]:
    """(relative path, contents) of the Transformer module's config: the first non-empty one of
    `SBERT_CONFIG_NAMES`, as sentence-transformers picks it; ("sentence_bert_config.json", {}) when none is."""
    for name in SBERT_CONFIG_NAMES:
        rel = _join(transformer_dir, name)
        config = read_json_object(root / rel)
        if config:
            return rel, config
    return _join(transformer_dir, SBERT_CONFIG_NAMES[0]), {}


def _read_st_config(root: Path, values: dict, sources: dict) -> None:
    rel = "config_sentence_transformers.json"
    config = read_json_object(root / rel)
    prompts = config.get("prompts")
    if prompts is not None:
        _expect(prompts, dict, root / rel, "prompts")
        # sentence-transformers keeps a saved None prompt as the empty prompt "" (the name stays valid, also
        # as default_prompt_name)
        prompts = {k: "" if v is None else v for k, v in prompts.items()}
        if not all(isinstance(v, str) for v in prompts.values()):
            raise ConfigError(f"{root / rel}: 'prompts' must map names to strings, got {prompts!r:.120}")
        _found(values, sources, rel, prompts=prompts)
    # truncate_dim: what sentence-transformers encodes at when not told otherwise; max_active_dims: what a
    # SparseEncoder keeps of each row (a SentenceTransformer ignores it)
    _read_typed(config, {"default_prompt_name": str, "truncate_dim": int}, root, rel, values, sources)
    checked = ["prompts", "default_prompt_name", "truncate_dim"]
    if values.get("strategies") == ("splade",):
        _read_typed(config, {"max_active_dims": int}, root, rel, values, sources)
        checked += ["strategies", "max_active_dims"]
    _check_fields(root, rel, values, checked)


def _check_fields(root: Path, rel: str, values: dict, keys: list[str]) -> None:
    """PoolingConfig's checks of the fields ``keys`` (a default prompt among the prompts, sizes ≥ 1), as errors
    naming the file ``rel`` they were read from rather than every file the config was read from."""
    try:
        PoolingConfig(**{key: values[key] for key in keys if key in values})
    except ValueError as err:
        raise ConfigError(f"{root / rel}: {err}") from None


def _refuse_links(root: Path, *folders: str) -> None:
    """A `ConfigError` when one of the ``folders`` `_save` writes into (relative to ``root``), or a folder on the way,
    is a symlink: its files would land where the link points, outside the model folder (a user's file replaced)."""
    for folder in folders:
        ways = (PurePosixPath(folder), *PurePosixPath(folder).parents)
        if linked := next((root / up for up in ways if str(up) != "." and (root / up).is_symlink()), None):
            raise ConfigError(f"cannot save a pooling config through {linked}, a symlink (to "
                              f"{os.readlink(linked)!r:.80}): tokenpool writes only inside the model folder")  # fmt: skip


def _write_json(file: Path, data: Any) -> None:
    """``data`` as the whole of ``file`` (`write_whole`: one rename; a symlink there, as a Hub snapshot's files
    are, is replaced, never written through into the file it names)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    write_whole(file, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _save(config: PoolingConfig, root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"cannot save a pooling config into {str(root)!r}: not a folder")
    _check_sparse(config)
    old = read_json_file(root / "modules.json") if is_present(root / "modules.json") else []
    old = old if isinstance(old, list) else []  # (a modules.json holding no list: no entries)
    transformer = _transformer_entry(old, config.is_sparse)
    dim, model_config = config.embedding_dimension, root / transformer["path"] / "config.json"  # (its own folder's)
    if dim is None and not config.is_sparse:
        dim = config_size(read_json_object(model_config))
        if dim is None:
            raise ConfigError(f"embedding_dimension is None and {model_config} has none of {', '.join(WIDTH_KEYS)}")
    root.mkdir(parents=True, exist_ok=True)
    if config.is_sparse:
        pooling_dir, pooling_type = "1_SpladePooling", _ST_TYPES["splade"]
        pooling = {"pooling_strategy": config.splade_reduction, "activation_function": "relu", "embedding_dimension": dim}
    else:
        pooling_dir, pooling_type, pooling = "1_Pooling", _ST_TYPES["pooling"], _pooling_json(config, dim)
    modules = [transformer, {"path": pooling_dir, "type": pooling_type}]
    modules += _post_pooling_modules(old, config.normalize)  # Dense / LayerNorm / Dropout stay, in their order
    if not config.is_sparse:  # (a width a kept module or truncate_dim does not take: refused, not saved unloadable)
        _check_kept_widths(config, root, model_config, dim, kept=len(modules) > 2)
    # every name is its index: sentence-transformers keys modules by name (a kept old one could repeat one)
    modules = [{"idx": k, "name": str(k)} | {key: v for key, v in m.items() if key not in ("idx", "name")}
               for k, m in enumerate(modules)]  # fmt: skip
    _refuse_links(root, pooling_dir, transformer["path"])
    _write_json(root / pooling_dir / "config.json", pooling)
    _write_json(root / "modules.json", modules)

    sbert_rel, sbert = _sbert_config(root, transformer["path"])  # the file sentence-transformers reads
    sbert.pop("max_seq_length", None)
    if config.max_seq_length is not None:
        sbert["max_seq_length"] = config.max_seq_length
    sbert["do_lower_case"] = config.do_lower_case
    task = "fill-mask" if config.is_sparse else "feature-extraction"
    if sbert.get("transformer_task", task) != task:  # a sentence-transformers 6 file written for the other kind
        sbert["transformer_task"] = task
        sbert.pop("modality_config", None)
    _write_json(root / sbert_rel, sbert)

    st_file = root / "config_sentence_transformers.json"
    st = read_json_object(st_file)
    st.update(prompts=dict(config.prompts), default_prompt_name=config.default_prompt_name)
    for key in ("truncate_dim", "max_active_dims"):
        st.pop(key, None)
        if getattr(config, key) is not None:
            st[key] = getattr(config, key)
    st["model_type"] = "SparseEncoder" if config.is_sparse else "SentenceTransformer"
    _write_json(st_file, st)


def _check_sparse(config: PoolingConfig) -> None:
    """Refuse what a saved sparse config cannot hold: no include_prompt option, no truncate_dim (the Encoder
    refuses a sparse folder's own: its rows are vocabulary-wide)."""
    if config.is_sparse and not config.include_prompt:
        raise ConfigError("SpladePooling has no include_prompt option; a sparse config must keep include_prompt=True")
    if config.is_sparse and config.truncate_dim is not None:
        raise ConfigError(f"truncate_dim={config.truncate_dim} does not apply to a sparse (SPLADE) config: its rows "
                          "are vocabulary-wide (the Encoder would refuse the saved folder)")  # fmt: skip


def _check_kept_widths(config: PoolingConfig, root: Path, model_config: Path, dim: int, *, kept: bool) -> None:
    """Refuse a pooled width the folder's ``kept`` Dense / LayerNorm modules do not take (neither sentence-transformers
    nor the Encoder loads that): the width of the model's outputs, which both pool whatever ``dim`` says; and a
    ``truncate_dim`` wider than the vectors then (`folder_truncate_dim` would refuse the folder). A module tokenpool
    cannot read (an activation it does not run, which sentence-transformers may), or a model config.json the
    runtimes refuse, is not checked. The width is the runtimes' (as `onnx.read_model_config` reads it: one not
    saved is transformers' default), ``dim`` when there is no config.json yet."""
    from .runners import transformers_config

    try:
        modules = read_post_modules(root) if kept else ()
        data = read_json_file(model_config, object_only=True) if is_present(model_config) else None
    except (ConfigError, ModelFolderError):
        return
    size = dim if data is None else config_size(data)
    if size is None and not any(name in text_merged(data) for name in WIDTH_KEYS):  # (saved null: refused)
        size = getattr(transformers_config(data), "hidden_size", None)
    if not is_int(size):  # (a width the runtimes refuse: not checked here)
        return
    width = output_width(modules, replace(config, embedding_dimension=size).output_dimension, root)
    if config.truncate_dim is not None:
        try:
            check_truncate_dim(config.truncate_dim, width)
        except ValueError as err:
            raise ConfigError(f"cannot save this pooling config into {root}: {err}") from None


def folder_truncate_dim(config: PoolingConfig, width: int, root: Path) -> int | None:
    """The folder's own ``truncate_dim`` (config_sentence_transformers.json), checked against the vectors'
    ``width``: a `ConfigError` naming its file, not an option the caller never passed; None when unset."""
    if config.truncate_dim is None:
        return None
    try:
        return check_truncate_dim(config.truncate_dim, width)
    except ValueError as err:
        raise ConfigError(f"{root / config.sources['truncate_dim']}: {err}") from None


def text_merged(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """A config.json's keys with its ``text_config``'s over them: a composite model's hidden states are its text
    model's (transformers' ``get_text_config``)."""
    text = model_config.get("text_config")
    return {**model_config, **text} if isinstance(text, dict) else dict(model_config)


def config_size(model_config: Mapping[str, Any], key: str = "hidden_size") -> int | None:
    """A model config.json's ``hidden_size`` (under any of `WIDTH_KEYS`) or ``vocab_size`` (composite configs keep
    it in ``text_config``), or None."""
    merged = text_merged(model_config)
    size = next((merged[name] for name in (WIDTH_KEYS if key == "hidden_size" else (key,)) if name in merged), None)
    return size if is_int(size) else None


def _transformer_entry(old: list[Any], sparse: bool) -> dict[str, str]:
    """The existing first (Transformer) module of the folder's modules.json entries ``old``, else
    sentence-transformers' import path for one."""
    first = old[0] if old and isinstance(old[0], dict) else {}
    kind = class_name(str(first.get("type", "")))
    if not kind.endswith("Transformer") or not isinstance(first.get("path"), str) or (kind == "MLMTransformer") != sparse:
        return {"path": "", "type": _ST_TYPES["mlm_transformer" if sparse else "transformer"]}
    return {"path": first["path"], "type": first["type"]}


def _post_pooling_modules(old: list[Any], normalize: bool) -> list[dict[str, Any]]:
    """The entries after the pooling module in the folder's modules.json entries ``old`` (Dense, LayerNorm, Dropout,
    a Normalize between them), in their order, with a final Normalize (`_final_normalize`) when ``normalize`` and
    only then: the folder's own kept in its place, else one added last."""
    kinds = [class_name(str(m.get("type", ""))) if isinstance(m, dict) else "" for m in old]
    pooling = next((k for k, kind in enumerate(kinds) if kind in ("Pooling", "SpladePooling")), len(old))
    post, final = old[pooling + 1 :], _final_normalize(kinds[pooling + 1 :])
    if final is not None and not normalize:
        del post[final]
    elif final is None and normalize:  # (named by its index after the Transformer and pooling entries)
        post.append({"path": f"{len(post) + 2}_Normalize", "type": _ST_TYPES["normalize"]})
    return post


def _final_normalize(kinds: list[str]) -> int | None:
    """The position of the final Normalize among modules of the classes ``kinds``: the last module that is no
    Dropout (the identity at inference: sentence-transformers encodes in eval mode), when it is a Normalize."""
    acting = [k for k, kind in enumerate(kinds) if kind != "Dropout"]
    return acting[-1] if acting and kinds[acting[-1]] == "Normalize" else None


def _pooling_json(config: PoolingConfig, dim: int) -> dict[str, Any]:
    """Compact keys (sentence-transformers ≥ 5.4) plus the legacy booleans TEI and older versions read."""
    modes = list(config.strategies)
    legacy_order = [m for m in LEGACY_KEYS.values() if m in modes]
    if legacy_order != modes:
        logger.warning(
            "pooling modes %s are not in sentence-transformers' legacy order or repeat a mode: readers of the "
            "legacy booleans (TEI, sentence-transformers < 5.4) will concatenate %s instead", modes, legacy_order,
        )
    # sentence-transformers >= 5.4 renames word_embedding_dimension silently (it warns when both names are
    # present), and older versions only know that name, so the dimension is written once, under it.
    return {
        "word_embedding_dimension": dim,
        "pooling_mode": modes[0] if len(modes) == 1 else modes,
        "include_prompt": config.include_prompt,
        **{key: mode in modes for key, mode in LEGACY_KEYS.items()},
    }
