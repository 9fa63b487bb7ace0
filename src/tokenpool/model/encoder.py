"""`Encoder`: embed texts with a local Hugging Face model folder, pooled the way the folder's own
sentence-transformers config says, with transformers alone; torch and transformers load when one is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.chunking import DEFAULT_CHUNKS
from ..core.masks import prompt_lengths
from ..core.pooling import applicable_reduction, check_truncate_dim, finish_vectors, pool
from ..core.sparse import collect_rows, keep_largest
from ..core.strategies import (
    INPUT_DESCRIPTIONS,
    Pooling,
    check_combination,
    input_kind,
    is_auto,
    parse_strategies,
    pooled_width,
)
from ..errors import ConfigError, ModelOutputError, OptionError, check_int, is_int, refuse_empty_model
from .batching import check_finite, check_max_batch_tokens, run_passes
from .chunks import chunk_spans, encode_chunks, plan_chunks
from .configs import MAX_REAL_LENGTH, PoolingConfig, folder_truncate_dim, read_pooling_config
from .folders import resolve_model_path, transformer_dir
from .modules import Pipeline, PostModule, output_width, read_post_modules
from .options import EncoderOptions, check_bool, spell
from .outputs import calibrate, model_fingerprint
from .request import EncodeRequest
from .runners import Runner, position_keys, text_config
from .texts import (
    DOCUMENT_PROMPT_NAMES,
    QUERY_PROMPT_NAME,
    as_texts,
    progress,
    resolve_prompt,
    side_prompt,
)
from .tokenization import SORT_CHUNK, Tokenization, Tokenized, check_ids
from .unpadded import PAD_OFFSET_POSITION_TYPES
from .windows import Layout, check_stride, encode_long, stopping, token_spans

logger = logging.getLogger(__name__)

__all__ = ["Encoder", "TokenBatch", "Tokenized"]

# what the tokenisation, widths and runner are built from (`Encoder.__setattr__`): attribute -> its option (None:
# none; and sentence-transformers' `max_seq_length`, never an Encoder's: ``encoder.max_seq_length = 128`` did nothing)
_BUILT = {"max_length": "max_length", "truncate_dim": "truncate_dim", "add_eos": "add_eos",
          "dimension": "truncate_dim", "strategies": "pooling", "device": "device", "dtype": "dtype",
          "max_seq_length": "max_length", "tokenizer": None}  # fmt: skip


@dataclass
class TokenBatch:
    """One forward pass: the model's token outputs for the rows ``indices`` of the caller's texts."""

    indices: np.ndarray  # int64 positions of these rows in the caller's `texts`
    hidden: Any  # b×L×D last hidden state (MLM logits b×L×V for sparse models), the runner's array type
    attention_mask: Any  # b×L, 1 = real token
    prompt_length: int | np.ndarray | None  # leading tokens left out of pooling (include_prompt=False), per row


class Encoder:
    """A model folder ready to embed texts: a `Runner` computes token outputs, `tokenpool.pool` pools them.

    ``model=None`` uses the bundled all-MiniLM-L6-v2; ``pooling="auto"`` reads the folder's
    sentence-transformers config. Thread-safe: the tokenizer is called under a lock (fast tokenizers must not
    be shared unguarded).
    """

    def __init__(
        self, model: str | os.PathLike | None = None, *, pooling: Any = "auto",
        device: str | Any | None = None, dtype: str | Any | None = None, max_length: int | None = None,
        normalize: bool | None = None, truncate_dim: int | None = None, long_documents: str = "truncate",
        window_stride: int | None = None, add_eos: bool | None = None, runtime: str = "torch",
        onnx_file: str | os.PathLike | None = None, revision: str | None = None,
        cache_dir: str | os.PathLike | None = None, trust_remote_code: bool = False,
    ) -> None:  # fmt: skip
        self._build(EncoderOptions.from_mapping(locals()))  # (its parameters are the options)

    @classmethod
    def from_options(cls, options: EncoderOptions, *, caller: str = "python") -> Encoder:
        """An Encoder built from an `EncoderOptions` (every option checked before the folder is read);
        ``caller`` (an `EncodeRequest` caller: "python", "cli") spells the options in a refusal that needs the
        model (``--dim`` on a sparse model)."""
        if not isinstance(options, EncoderOptions):
            raise TypeError(f"from_options takes an EncoderOptions, got {type(options).__name__}")
        EncodeRequest(caller=caller).check()  # (an unknown caller: refused, naming it)
        encoder = cls.__new__(cls)
        encoder._build(options, caller)
        return encoder

    def _build(self, options: EncoderOptions, caller: str = "python") -> None:
        """Read the folder (the options are all checked first), then its runtime builds the runner; the
        runtime comes from the registry (`tokenpool.model.runtimes.RUNTIMES`)."""
        from .runtimes import RUNTIMES

        options = self.options = options.check()  # (integer options as Python ints from here on)
        runtime = RUNTIMES[options.runtime]  # (a name not in the registry: refused by check)
        self.runtime: str = runtime.name
        self.trust_remote_code: bool = bool(options.trust_remote_code)  # (numpy's bools are taken)
        refuse_empty_model(options.model)
        self.model_path: Path = resolve_model_path(
            options.model, revision=options.revision, cache_dir=options.cache_dir, runtime=runtime.name,
            onnx_file=options.onnx_file,
        )  # fmt: skip
        self._folder = self.model_path.absolute()  # (model_id of a copy in another working directory, a worker's)
        # the fallback (no pooling config) is announced only when it is used, and after the files are checked
        self.config: PoolingConfig = read_pooling_config(self.model_path, log_fallback=False)
        folder = self.model_path / transformer_dir(self.model_path)
        self._set_pooling(options.pooling, options.normalize)
        runtime.check(sparse=self.is_sparse, post_modules=False, folder=folder)
        model_config, self.tokenizer = runtime.open(folder, options)  # cheap: bad options fail before weights
        if self.config.fallback is not None and is_auto(options.pooling):
            logger.warning(self.config.fallback)
        self._set_widths(options, model_config, folder, caller)
        EncodeRequest(caller=caller).check_dimension(self)  # (a truncate_dim no encode of a sparse model takes)
        runtime.check(sparse=False, post_modules=bool(self.post_modules), folder=self.model_path)
        self.runner: Runner = runtime.runner(folder, model_config, options, self.is_sparse)
        self.device: str = self.runner.device
        self.dtype: Any = self.runner.dtype
        self._pipeline: Pipeline | None = None
        if post := self.post_modules:
            self._pipeline = Pipeline(self.model_path, post, device=self.device, dtype=self.dtype)
        self._set_tokenization(options, folder)

    def _set_pooling(self, pooling: Any, normalize: bool | None) -> None:
        """The strategies (the folder's for ``"auto"``) and the normalisation (the folder's for None)."""
        members = parse_strategies(self.config.strategies if is_auto(pooling) else pooling)
        check_combination(members)
        self._members: tuple[Pooling, ...] = members
        self.strategies: tuple[str, ...] = tuple(m.value for m in members)
        self.is_sparse: bool = members == (Pooling.SPLADE,)
        self.normalize: bool = self.config.normalize if normalize is None else bool(normalize)

    def _set_widths(self, options: EncoderOptions, model_config: Any, folder: Path, caller: str = "python") -> None:
        """max_length, the modules after pooling (with pooling="auto" only) and every width; a
        truncate_dim past the width is refused naming the option as ``caller`` writes it (``--dim``)."""
        self.max_length: int = resolve_max_length(options.max_length, self.config, self.tokenizer, model_config)
        text = text_config(model_config)
        # (ids past it: refused by collate); a config class without one has no table (Canine hashes code points)
        self.vocab_size: int | None = _config_size(text, "vocab_size", folder) if hasattr(text, "vocab_size") else None
        hidden = _config_size(text, "hidden_size", folder)
        width = pooled_width(self._members, hidden_size=hidden, vocab_size=self.vocab_size)
        post = read_post_modules(self.model_path) if is_auto(options.pooling) else self._say_modules_not_run()
        if post and post[-1].kind == "Normalize":
            post = post[:-1]  # a trailing Normalize is the `normalize` option (config.normalize is True)
        self.post_modules: tuple[PostModule, ...] = post
        width = output_width(post, width, self.model_path)
        # checked against the width eagerly: before the weights load; none asked for: the folder's own (as in
        # sentence-transformers >= 6.3, config_sentence_transformers.json)
        self.truncate_dim: int | None = (
            folder_truncate_dim(self.config, width, self.model_path) if options.truncate_dim is None
            else check_truncate_dim(options.truncate_dim, width,
                                    name=EncodeRequest(caller=caller).spell("truncate_dim", valued=False))
        )  # fmt: skip
        self.width: int = width  # the output width before truncate_dim
        self.dimension: int = width if self.truncate_dim is None else self.truncate_dim
        # width of the runner's token outputs: the vocabulary for MLM logits, else the hidden size
        self.runner_width: int = int(text.vocab_size) if self.is_sparse else int(text.hidden_size)

    def _say_modules_not_run(self) -> tuple[PostModule, ...]:
        """No modules after pooling: a named pooling, the folder's own too, gives raw pooled rows; a warning
        names the folder's Dense / LayerNorm modules it leaves out. Their configs are not held to what tokenpool
        runs (a named pooling stays the way to use a folder whose Dense module it cannot run)."""
        try:
            skipped = [module.kind for module in read_post_modules(self.model_path) if module.kind != "Normalize"]
        except ConfigError as err:
            skipped, runs = ["Dense/LayerNorm"], f"tokenpool cannot run them: {err}"
        else:
            runs = "pooling='auto' runs them"
        if skipped:
            logger.warning("%s gives raw pooled rows: the %s modules after pooling in %s are not run (%s)",
                           spell("pooling", self.options.pooling), skipped, self.model_path, runs)  # fmt: skip
        return ()

    def _set_tokenization(self, options: EncoderOptions, folder: Path) -> None:
        """The tokenizer's rules (EOS for last-token models, lower case, prompts) and the long-document mode."""
        add_eos, has_eos = options.add_eos, self.tokenizer.eos_token_id is not None
        if add_eos is None:  # last-token models read the EOS position: append it where the tokenizer does not
            add_eos = Pooling.LAST_TOKEN in self._members and has_eos and not Tokenization.appends_eos(self.tokenizer)
        elif add_eos and not has_eos:
            raise ValueError(f"add_eos=True but the tokenizer of {folder} has no eos_token")
        self.add_eos: bool = bool(add_eos)
        self.tokenization = Tokenization(
            self.tokenizer, max_length=self.max_length, add_eos=self.add_eos,
            lowercase=self.config.do_lower_case, include_prompt=self.config.include_prompt,
            vocab_size=self.vocab_size, vocab_source=folder / "config.json",
        )  # fmt: skip
        around = self.tokenization.frame()
        special = [] if around is None else [*around[0], *around[1]]
        if len(special) > self.max_length:  # truncating would drop them
            given = options.max_length is not None  # (else the folder's: named so)
            whose = spell("max_length", self.max_length) if given else f"the model folder's max_length {self.max_length}"
            raise ValueError(f"{whose} cannot hold the {len(special)} special tokens every row of {folder} "
                             f"has ({self.tokenizer.convert_ids_to_tokens(special)})")  # fmt: skip
        if options.window_stride is not None:
            check_stride(options.window_stride, Layout.of(self.tokenization, None).capacity)
        self.long_documents: str = options.long_documents
        self.window_stride: int | None = options.window_stride

    def __setattr__(self, name: str, value: Any) -> None:
        """`_BUILT` options are refused once set: the tokenisation and widths were derived from them (a later
        ``encoder.max_length = 64`` failed every long text, ``truncate_dim`` broke the output's shape); a
        ``long_documents`` is checked as the constructor checks it (any other value read as windows)."""
        if name in _BUILT and (name in self.__dict__ or name == "max_seq_length"):
            how = (f"build one with Encoder(..., {_BUILT[name]}={value!r})" if _BUILT[name] else "build one of a "
                   "folder holding that tokenizer (its settings, e.g. truncation_side, change in place)")  # fmt: skip
            raise AttributeError(f"Encoder.{name} is fixed when the encoder is built: {how}")
        if name == "long_documents":
            EncoderOptions(long_documents=value).check()
        super().__setattr__(name, value)

    @property
    def model(self) -> Any:
        """The runtime's model object (a transformers ``PreTrainedModel`` for the torch runner)."""
        return self.runner.model

    def encode(
        self, texts: str | Iterable[str], *, batch_size: int = 32, prompt: str | None = None,
        prompt_name: str | None = None, show_progress_bar: bool | None = None, output: str = "vectors",
        special_tokens: bool = True, max_batch_tokens: int | None = None, precision: str = "float32",
        calibration: Any = None, long_documents: str | None = None, pooling: Any = None, finish: bool = True,
        truncate_dim: int | None = None, normalize: bool | None = None,
    ) -> Any:  # fmt: skip
        """Embed ``texts`` → float32 (N, D) in input order; a single str gives a 1-D (D,) vector.

        ``precision`` float16, int8, uint8, binary or ubinary returns codes (`tokenpool.core.quantize`;
        int8/uint8 need a ``calibration`` made for this model). ``output="tokens"``: per text an (n_i, hidden)
        float32 array of every token pooling reads, not normalised (``special_tokens=False`` drops the
        tokenizer's special tokens); ``output="sparse"``: as `encode_sparse`.

        ``long_documents`` (default: the encoder's): ``"windows"`` reads each text whole through overlapping
        windows, ``"truncate"`` cuts it at ``max_length``. ``pooling``: other strategies, raw rows;
        ``finish=False``: the rows before truncate_dim and normalize; ``truncate_dim`` / ``normalize``: this
        call's Matryoshka cut (1..`dimension`) and normalisation.

        Batches hold at most ``batch_size`` texts and, when given, ``max_batch_tokens`` padded tokens (rows ×
        longest row; windows too); one that runs out of memory is split in halves and retried. All options are
        checked as one `EncodeRequest`.
        """
        request = EncodeRequest.from_mapping(locals())
        result = self.run(request, texts, show_progress_bar=show_progress_bar)
        if request.output == "sparse":
            return result.to_scipy()
        return result[0] if isinstance(texts, str) and request.output in ("vectors", "tokens") else result

    def run(
        self, request: EncodeRequest, texts: str | Iterable[str], *, spans: Iterable[Any] | None = None,
        names: list[str] | None = None, show_progress_bar: bool | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any:  # fmt: skip
        """Carry out an `EncodeRequest` over ``texts`` (every encode method comes here): vectors or codes,
        token arrays, `SparseRows` or `ChunkEmbeddings` (``spans``, ``names``: see `encode_chunks`).
        ``should_stop`` is asked before each forward pass; True raises `tokenpool.model.windows.Cancelled`."""
        if not isinstance(request, EncodeRequest):
            raise TypeError(f"run takes an EncodeRequest, got {type(request).__name__}")
        _, items = as_texts(texts)
        return self._run(request.check_encoder(self), items, spans, names, show_progress_bar, should_stop)

    def _run(
        self, request: EncodeRequest, items: list[str], spans: Any, names: Any, show_progress_bar: bool | None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any:  # fmt: skip
        """`run` of a request already checked against this encoder, over checked texts."""
        if request.finishes_itself():  # the call's own cut / normalisation: unfinished rows, finished here
            unfinished = replace(request, truncate_dim=None, normalize=None, finish=False, precision="float32",
                                 calibration=None, top_k=None)  # (top_k: kept once finished, by finish_rows)
            rows = self._run(unfinished, items, spans, names, show_progress_bar, should_stop)
            if request.output == "chunks":
                return replace(rows, vectors=request.finish_rows(rows.vectors, self))
            return request.codes(request.finish_rows(rows, self))
        prompt = self._resolve_prompt(request.prompt, request.prompt_name)
        if request.output == "chunks":
            return encode_chunks(self, items, request, prompt=prompt, spans=spans, names=names,
                                 should_stop=should_stop)  # fmt: skip
        if request.output == "tokens":
            mode = request.long_documents or self.long_documents
            with progress(len(items), show_progress_bar, request.batch_size) as update:
                return encode_long(self, items, request, prompt=prompt, truncate=mode == "truncate",
                                   should_stop=should_stop, done_one=update)  # fmt: skip
        width = self.output_width(request.pooling, request.finish)
        if request.output == "sparse":
            batches = self._vector_batches(items, request, prompt, show_progress_bar, request.batch_size, should_stop)
            return collect_rows(batches, len(items), width, top_k=request.top_k, threshold=request.threshold)
        result = np.empty((len(items), width), dtype=np.float32)
        written = np.zeros(len(items), dtype=bool)
        for indices, vectors in self._vector_batches(items, request, prompt, show_progress_bar, None, should_stop):
            result[indices], written[indices] = vectors, True
        if not written.all():  # never hand out np.empty's leftovers as vectors
            raise RuntimeError(f"no vector was computed for text {int(np.argmin(written))} (a tokenpool bug)")
        return request.codes(result)

    def _vector_batches(
        self, items: list[str], request: EncodeRequest, prompt: str | None, progress_bar: bool | None = None,
        group: int | None = None, should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """``(indices, float32 rows)`` of a checked request, in its long-document mode: length-sorted passes
        (truncate), or ``group`` documents at a time through windows (default: all, batched together);
        ``should_stop``: as in `run`. A sparse model's rows keep ``request.top_k`` non-zeros (its
        max_active_dims, as every SparseEncoder encode), but for sparse output, whose `collect_rows` keeps them."""
        top_k = None if request.output == "sparse" else request.top_k
        kept = (lambda rows: rows) if top_k is None else (lambda rows: keep_largest(rows, top_k))
        if (request.long_documents or self.long_documents) == "truncate":
            batches = self._token_batches(items, request.batch_size, prompt, progress_bar, request.max_batch_tokens)
            for batch in stopping(batches, should_stop):  # each batch's forward pass runs as it is taken
                rows = self.pool_batch(batch, request.pooling, finish=request.finish)
                yield np.asarray(batch.indices, dtype=np.int64), kept(rows)
            return
        size = group or max(1, len(items))
        with progress(len(items), progress_bar, request.batch_size) as update:
            for first in range(0, len(items), size):  # `size` documents at a time, their windows batched
                part = items[first : first + size]
                try:
                    vectors = encode_long(self, part, request, prompt=prompt, truncate=False, should_stop=should_stop,
                                          done_one=update)  # fmt: skip
                except ModelOutputError as err:  # name the text by its position in `texts`, not in the group
                    if err.index is None:
                        raise
                    raise err.at(f"text {first + err.index}", first + err.index) from None
                yield np.arange(first, first + len(part), dtype=np.int64), kept(vectors)

    def token_spans(
        self, texts: str | Iterable[str], *, prompt: str | None = None, prompt_name: str | None = None,
        special_tokens: bool = True, long_documents: str | None = None,
    ) -> Any:  # fmt: skip
        """Which token each row of ``encode(texts, output="tokens", ...)`` is (same options), without running
        the model: per text int64 token ids (n_i,) and character spans (n_i, 2) ``[start, end)``, ``[-1, -1]``
        for tokens not from the text (special tokens, a pooled prompt); a single str gives one pair."""
        single, items = as_texts(texts)
        request = EncodeRequest.from_mapping(locals(), output="tokens").check()  # (no vectors: no truncate_dim check)
        mode = request.long_documents or self.long_documents
        result = token_spans(
            self, items, prompt=self._resolve_prompt(prompt, prompt_name),
            special_tokens=request.special_tokens is not False, truncate=mode == "truncate",
        )  # fmt: skip
        return result[0] if single else result

    def encode_chunks(
        self, texts: str | Iterable[str], *, chunks: Any = DEFAULT_CHUNKS, spans: Iterable[Any] | None = None,
        chunking: str = "late", batch_size: int = 32, prompt: str | None = None,
        prompt_name: str | None = None, names: list[str] | None = None, max_batch_tokens: int | None = None,
        pooling: Any = None, finish: bool = True, empty_documents: str = "error",
        truncate_dim: int | None = None, normalize: bool | None = None,
    ) -> Any:  # fmt: skip
        """One vector per chunk of each text → `tokenpool.model.chunks.ChunkEmbeddings` (doc, chunk, character
        start/end, vectors).

        ``chunks``: ``"tokens:SIZE[:OVERLAP]"`` (fixed token counts, at most a window's text tokens),
        ``"boundaries:MAX[:OVERLAP]"`` (whole paragraphs / sentences of at most MAX tokens, by the
        semantic-text-splitter library: ``pip install 'tokenpool[chunking]'``) or ``"spans"`` with
        ``spans[i]`` = ``[[start, end], ...]`` character spans of text i (one chunk each, in the given order;
        see docs/long-documents.md). ``chunking="late"`` pools each chunk's tokens from the whole document's
        windows; ``"naive"`` encodes each chunk's text alone. Empty texts, spans outside a text or covering no
        token are errors naming the text (its position, or ``names[i]``); ``empty_documents="whole"``: a text
        with no token (or only whitespace) gives one row of its whole text instead. Other options: as in `encode`.
        """
        request = EncodeRequest.from_mapping(locals(), output="chunks")
        return self.run(request, texts, spans=spans, names=names)

    def plan_chunks(
        self, texts: str | Iterable[str], *, chunks: Any = DEFAULT_CHUNKS, spans: Iterable[Any] | None = None,
        prompt: str | None = None, prompt_name: str | None = None, names: list[str] | None = None,
        empty_documents: str = "error",
    ) -> Any:  # fmt: skip
        """The chunks `encode_chunks` would embed, without running the model: `ChunkSpans` (doc, chunk,
        character start/end), e.g. to encode the chunk texts several ways in one pass."""
        _, items = as_texts(texts)
        request = EncodeRequest.from_mapping(locals(), output="chunks").check_encoder(self)
        prompt_text = self._resolve_prompt(prompt, prompt_name)
        return chunk_spans(plan_chunks(self, items, request, prompt=prompt_text, spans=spans, names=names)[1])

    def window_capacity(self, *, prompt: str | None = None, prompt_name: str | None = None) -> int:
        """Text tokens one window holds with this prompt: ``max_length`` less the special and prompt tokens (the
        largest chunk size; a document whose text the prompt's last token merges with can hold one more or less:
        chunk sizes are checked per document)."""
        return Layout.of(self.tokenization, self._resolve_prompt(prompt, prompt_name)).capacity

    def encode_sparse(
        self, texts: str | Iterable[str], *, batch_size: int = 32, prompt: str | None = None,
        prompt_name: str | None = None, top_k: int | None = None, threshold: float = 0.0,
        show_progress_bar: bool | None = None,
    ) -> Any:  # fmt: skip
        """SPLADE models: a float32 ``scipy.sparse.csr_matrix``, one row per text (a single str gives 1 × V),
        never N × V dense: ``top_k`` keeps the k largest values per row, ``threshold`` the values above it."""
        request = EncodeRequest.from_mapping(locals(), output="sparse")
        return self.run(request, texts, show_progress_bar=show_progress_bar).to_scipy()

    def calibrate(self, texts: str | Iterable[str], **options: Any) -> Any:
        """A `tokenpool.core.quantize.Calibration` (per-dimension ranges) from ``texts``, for int8/uint8 encodes
        given the same per-call ``truncate_dim`` / ``normalize`` (`tokenpool.model.outputs.calibrate`)."""
        return calibrate(self, texts, **options)

    @property
    def max_active_dims(self) -> int | None:
        """The non-zeros each row of a sparse model keeps (the folder's ``max_active_dims``, which
        sentence-transformers applies to every encode); None for a dense model or a folder without a limit."""
        return self.config.max_active_dims if self.is_sparse else None

    @property
    def model_id(self) -> str | None:
        """A fingerprint of the model's weights (``sha256:…``), the same for every copy of the folder."""
        return model_fingerprint(self._folder)

    def encode_queries(self, texts: str | Iterable[str], **options: Any) -> np.ndarray:
        """`encode` with the model's ``"query"`` prompt, when it has one, else no prompt (never the model's default
        prompt: as sentence-transformers' encode_query)."""
        return self.encode(texts, **self._side_prompt(options, (QUERY_PROMPT_NAME,)))

    def encode_documents(self, texts: str | Iterable[str], **options: Any) -> np.ndarray:
        """`encode` with the model's first prompt among "document", "passage", "corpus", when it has one, else no
        prompt (never the model's default prompt)."""
        return self.encode(texts, **self._side_prompt(options, DOCUMENT_PROMPT_NAMES))

    def _side_prompt(self, options: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
        if options.get("prompt") is None and options.get("prompt_name") is None:
            prompt, name = side_prompt(self.config, names)
            options.update(prompt=prompt, prompt_name=name)
        return options

    def iter_token_batches(
        self, texts: str | Iterable[str], *, batch_size: int = 32, prompt: str | None = None,
        prompt_name: str | None = None, max_batch_tokens: int | None = None,
        long_documents: str | None = None,
    ) -> Iterator[TokenBatch]:  # fmt: skip
        """Yield the raw token outputs of each length-sorted batch (to pool several ways), batched as in
        `encode`; one window per text, so ``long_documents="windows"`` is an `OptionError`."""
        request = EncodeRequest.from_mapping(locals()).check()  # (long_documents checked as in encode)
        mode = request.long_documents or self.long_documents
        if mode != "truncate":
            raise OptionError(
                f"iter_token_batches gives one window's token outputs per text; with long_documents="
                f"{mode!r} use iter_vector_batches or encode, which read every token"
            )
        _, items = as_texts(texts)
        prompt_text = self._resolve_prompt(prompt, prompt_name)
        return self._token_batches(items, batch_size, prompt_text, False, request.max_batch_tokens)

    def iter_vector_batches(
        self, texts: str | Iterable[str], *, batch_size: int = 32, prompt: str | None = None,
        prompt_name: str | None = None, max_batch_tokens: int | None = None,
        long_documents: str | None = None, pooling: Any = None, finish: bool = True,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """Stream ``encode``: ``(indices, float32 vectors)`` per batch, in this call's long-document mode (else
        the encoder's; windows: ``batch_size`` documents at a time), so a caller writes vectors as they come
        (texts of a batch are length-sorted; ``indices`` say which). ``pooling``, ``finish``: as in `encode`."""
        request = EncodeRequest.from_mapping(locals()).check_encoder(self)
        _, items = as_texts(texts)  # (checked here, not at the first batch: the batches come from a generator)
        return self._vector_batches(items, request, self._resolve_prompt(prompt, prompt_name), group=batch_size)

    def pool_batch(
        self, batch: TokenBatch, strategy: Any = None, *, finish: bool = True, finite: bool = True
    ) -> np.ndarray:
        """Pool one `TokenBatch` → float32 (b, D'): ``strategy`` None: the encoder's pooling, Dense /
        LayerNorm modules and (``finish``) truncate_dim and normalize; a strategy: that alone, raw. NaN/inf
        raises `ModelOutputError` unless ``finite=False``."""
        for name, value in (("finish", finish), ("finite", finite)):  # ("no" is true: as encode refuses it)
            check_bool(name, value, or_none=False)
        own = strategy is None
        members = self._members if own else self.check_pooling(parse_strategies(strategy))
        with self.runner.inference():
            pooled = pool(
                batch.hidden, batch.attention_mask, list(members), prompt_length=batch.prompt_length,
                reduction=applicable_reduction(self.config.splade_reduction, members),
            )  # fmt: skip
            if own and self._pipeline is not None:  # Dense / LayerNorm modules
                pooled = self._pipeline(pooled)
            out = self.runner.to_float32_numpy(pooled)
        if own and finish:  # truncate_dim and normalize in float32, not in a half-precision model's dtype
            out = finish_vectors(out, truncate_dim=self.truncate_dim, normalize=self.normalize, copy=False)
        return check_finite(out, batch.indices, self.dtype) if finite else out

    def after_pooling(self, rows: np.ndarray, *, finish: bool = True) -> np.ndarray:
        """float32 rows pooled with the encoder's own strategies (numpy, e.g. through windows) → its Dense /
        LayerNorm modules, then (``finish``) its truncate_dim and normalize, as `pool_batch` does."""
        if self._pipeline is not None:  # the rows as the runner's arrays, what its post-pooling modules take
            if self._pipeline.library == "torch":
                import torch

                given = torch.from_numpy(np.ascontiguousarray(rows)).to(device=self.device, dtype=self.dtype)
            else:
                given = np.asarray(rows, dtype=self.dtype)
            with self.runner.inference():
                rows = self.runner.to_float32_numpy(self._pipeline(given))
        if not finish:
            return rows
        return finish_vectors(rows, truncate_dim=self.truncate_dim, normalize=self.normalize, copy=False)

    def check_pooling(self, members: tuple[Pooling, ...]) -> tuple[Pooling, ...]:
        """``members`` (parsed strategies) when this model's token outputs can be pooled with them (hidden
        states or MLM logits); ValueError naming both otherwise."""
        produced = "logits" if self.is_sparse else "hidden"
        if input_kind(members) != produced:
            raise ValueError(
                f"cannot pool {INPUT_DESCRIPTIONS[produced]} with {[m.value for m in members]}: "
                f"they need {INPUT_DESCRIPTIONS[input_kind(members)]}"
            )
        return members

    def output_width(self, pooling: Any = None, finish: bool = True) -> int:
        """Columns of the rows a call gives: `dimension`; ``finish=False`` the width before truncate_dim; a
        per-call ``pooling`` its own pooled width."""
        if pooling is None:
            return self.dimension if finish else self.width
        members = self.check_pooling(parse_strategies(pooling))
        return pooled_width(members, hidden_size=self.runner_width, vocab_size=self.runner_width)

    def tokenize(
        self, texts: str | Iterable[str], *, prompt: str | None = None, prompt_name: str | None = None,
        truncation: str | None = "auto", exact_counts: bool = False,
    ) -> Tokenized:  # fmt: skip
        """``texts`` as the token ids `encode` runs (prompt, special tokens and EOS applied, truncated to
        ``max_length``), with each text's token count before truncation. A text over ``max_length × 64``
        characters is tokenised from that many (its count is of those) unless ``exact_counts`` (for callers
        that bound their texts, like the server). ``truncation``: ``"right"`` keeps a text's first tokens, ``"left"`` its last ones (special tokens and
        prompt stay), ``"auto"`` the tokenizer's own side (as `encode`), None every token (such rows cannot
        run when longer than ``max_length``). Run the result with `forward_ids` / `pool_ids`."""
        _, items = as_texts(texts)
        text = self._resolve_prompt(prompt, prompt_name)
        exact = check_bool("exact_counts", exact_counts, or_none=False)  # ("no" is no True)
        ids, counts = self.tokenization.encode(items, text, truncation, exact)
        length = self.tokenization.prompt_length(text)
        return Tokenized(ids, counts, None if length is None else np.full(len(ids), length, dtype=np.int64))

    def forward_ids(
        self, tokenized: Tokenized, *, batch_size: int = 32, max_batch_tokens: int | None = None
    ) -> Iterator[TokenBatch]:
        """Run the model over already tokenised rows: one `TokenBatch` per length-sorted padded pass (at most
        ``batch_size`` rows and ``max_batch_tokens`` padded tokens; a pass that runs out of memory is split),
        ``indices`` being positions in ``tokenized``."""
        if not isinstance(tokenized, Tokenized):
            raise TypeError(f"forward_ids takes the Tokenized of Encoder.tokenize, got {type(tokenized).__name__}")
        check_int(batch_size, "batch_size")
        budget = check_max_batch_tokens(max_batch_tokens)
        check_ids(tokenized.ids)
        given = tokenized.prompt_lengths  # (checked as `pool` checks them, before any pass: int64, one per row)
        prompts = None if given is None else prompt_lengths(given, len(tokenized))
        over = np.flatnonzero(tokenized.lengths > self.max_length)
        if len(over):
            raise OptionError(
                f"row {int(over[0])} has {len(tokenized.ids[int(over[0])])} tokens, more than max_length "
                f"{self.max_length} (tokenize with truncation='right' or 'left')"
            )
        batches = self.tokenization.id_batches(tokenized.ids, batch_size, budget)
        for indices, hidden, mask in run_passes(self.runner, batches):
            prompt = None if prompts is None else prompts[indices]
            if prompt is not None and (prompt == prompt[0]).all():  # all equal: one int, as `pool` takes it
                prompt = int(prompt[0])
            yield TokenBatch(indices, hidden, mask, prompt)

    def pool_ids(
        self, tokenized: Tokenized, *, batch_size: int = 32, max_batch_tokens: int | None = None,
        pooling: Any = None, finish: bool = True, finite: bool = True,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """`forward_ids` pooled: ``(indices, float32 rows)`` per pass, as `pool_batch` pools (``pooling``: other
        strategies than the encoder's; ``finish=False``: the rows before truncate_dim and normalize)."""
        for batch in self.forward_ids(tokenized, batch_size=batch_size, max_batch_tokens=max_batch_tokens):
            yield batch.indices, self.pool_batch(batch, pooling, finish=finish, finite=finite)

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.model_path)!r}, pooling={list(self.strategies)}, normalize={self.normalize}, "
            f"dimension={self.dimension}, max_length={self.max_length}, long_documents={self.long_documents!r}, "
            f"device={self.device!r}, dtype={self.dtype}, runtime={self.runtime!r})"
        )

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        return resolve_prompt(self.config, prompt, prompt_name, where=self.model_path)

    def _token_batches(
        self, items: list[str], batch_size: int, prompt: str | None, progress_bar: bool | None,
        max_batch_tokens: int | None = None,
    ) -> Iterator[TokenBatch]:  # fmt: skip
        """`forward_ids` over ``items`` (checked texts), `SORT_CHUNK` texts tokenised and length-sorted at a time."""
        length = self.tokenization.prompt_length(prompt)
        with progress(len(items), progress_bar, batch_size) as update:
            for start in range(0, len(items), SORT_CHUNK):
                ids, counts = self.tokenization.encode(items[start : start + SORT_CHUNK], prompt)
                lengths = None if length is None else np.full(len(ids), length, dtype=np.int64)
                for batch in self.forward_ids(
                    Tokenized(ids, counts, lengths), batch_size=batch_size, max_batch_tokens=max_batch_tokens
                ):
                    batch.indices = batch.indices + start
                    yield batch
                    update(len(batch.indices))


def resolve_max_length(
    max_length: int | None, config: PoolingConfig, tokenizer: Any, model_config: Any
) -> int:
    """The token limit: the caller's, else the folder's max_seq_length, else the tokenizer's model_max_length,
    never above the model's position limit (`_position_limit`)."""
    hard = _position_limit(text_config(model_config))
    if max_length is not None:  # a positive int: `EncoderOptions.check` ran first
        if hard is not None and max_length > hard:
            raise ValueError(f"{spell('max_length', max_length)} exceeds the model's limit of {hard} tokens")
        return int(max_length)  # (numpy's integers too)
    # sentence-transformers truncates at max_seq_length when the folder sets it (6.x stores it as the
    # tokenizer's model_max_length instead), else at the tokenizer's limit; both capped by the positions.
    limit = getattr(tokenizer, "model_max_length", None)
    limit = limit if is_int(limit) and 0 < limit < MAX_REAL_LENGTH else None
    default = next((n for n in (config.max_seq_length, limit, hard) if n is not None), None)
    if default is None:
        logger.warning("no max_seq_length, tokenizer or model length limit found; truncating at 512 tokens")
        return 512
    return default if hard is None else min(default, hard)


def _position_limit(text: Any) -> int | None:
    """Tokens the model can place: ``max_position_embeddings`` (or its family's name, `position_keys`), less
    ``padding_idx + 1`` for the model types whose positions start after it (`PAD_OFFSET_POSITION_TYPES`:
    RoBERTa's 514 positions hold 512 tokens; MPNet's padding index is always 1); None without a limit."""
    keys = position_keys(getattr(text, "model_type", None))
    positions = next((getattr(text, key) for key in keys if is_int(getattr(text, key, None))), None)
    if positions is None or positions < 1:
        return None
    if getattr(text, "model_type", None) not in PAD_OFFSET_POSITION_TYPES:
        return positions
    pad = 1 if text.model_type == "mpnet" else getattr(text, "pad_token_id", None)
    offset = pad + 1 if is_int(pad) and pad >= 0 else 0
    return positions - offset if positions > offset else positions


def _config_size(text: Any, key: str, folder: Path) -> int:
    """A positive integer size from the model config (``hidden_size``, ``vocab_size``), else a `ConfigError`."""
    value = getattr(text, key, None)
    if not is_int(value) or value < 1:
        raise ConfigError(f"{folder / 'config.json'}: {key} must be a positive integer, got {value!r:.40}")
    return value
