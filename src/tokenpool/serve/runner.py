"""The model side of the server: the `Runner` protocol and `EncoderRunner` (a `tokenpool.Encoder` through its
token-id API). Rows are *raw* (no normalisation, no Matryoshka cut): each request's own options apply
afterwards, so requests with different options share one forward pass."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..core import compiled
from ..core.quantize import Calibration
from ..errors import ModelOutputError, OptionError, one_line
from ..model import unpadded
from ..model.folders import display_name
from ..model.longdocs import ChunkEmbeddings, tokenize_document
from ..model.outputs import check_output_options
from ..model.request import EncodeRequest
from ..model.runners import TorchRunner, set_torch_threads
from ..model.tokenization import Tokenized

__all__ = ["EncoderRunner", "Runner", "check_runner", "share_cpus"]


@runtime_checkable
class Runner(Protocol):
    """What the server needs from a model. `EncoderRunner` is the real one; tests use slow fakes. Optional:
    ``try_tokenize`` (`tokenize`, or None while another thread holds the tokenizer), ``share_threads``,
    ``parallel_passes``, ``unpadded``, ``splits_cpus`` and ``take_cpus`` (`share_cpus`), ``release_threads``
    (called once its workers stopped; else ``share_threads(1, 0)``), ``max_active_dims`` (a sparse model's
    non-zeros kept per row once it is finished: `service.ModelView` hands it to each checked request, whose
    `EncodeRequest.finish_rows` keeps them), ``truncation_side`` (where the model
    cuts a long input, "right" or "left", for requests that name no side; default "right"), ``body_lengths`` (as
    `EncoderRunner`'s: without it a chunk count takes the prompt's tokens alone, one short of a document whose
    first word the prompt's end joins), ``appends_eos`` (True: the model appends EOS to a row that does not end
    with it, so a chunk count takes ``body_lengths`` with no prompt too), and for TEI's
    /tokenize and /decode ``token_spans``, ``token_texts`` and ``decode``, for inputs sent as token ids
    ``tokenize_ids`` and ``vocabulary_size``, for /embed_all ``token_vectors`` (as `EncoderRunner`'s)."""

    name: str  # the model id the server reports by default
    width: int  # columns of `embed`'s rows (the pooled width before any Matryoshka cut)
    dimension: int  # the served dimension: width, or the --dim the encoder was built with
    max_length: int  # tokens per input after truncation (the model's window)
    normalize: bool  # the model's own normalisation (its config, or the command line's --normalize)
    is_sparse: bool  # SPLADE: rows are vocabulary-wide and mostly zero
    prompts: Mapping[str, str]  # the model's named prompts
    default_prompt: str  # prompt text used when a request names none ("" for none)
    info: Mapping[str, Any]  # extra facts for /info (pooling, dtype, device, ...)
    calibration: Calibration | None  # per-dimension ranges for int8/uint8 answers (None: those are refused)

    def tokenize(self, texts: Sequence[str], prompt: str, truncation: str | None) -> Any:
        """``prompt + text`` of each text as the token ids the model runs, cut to ``max_length`` on the
        ``truncation`` side ("right", "left"; None: not cut), in one tokenizer pass: an object (a
        `tokenpool.model.tokenization.Tokenized`) with ``counts`` (tokens before truncation), ``lengths``
        (tokens as run), ``select(rows)`` and a ``concat(parts)`` class method."""

    def embed(self, tokens: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Run the model over tokenised rows (one forward pass; more when it runs out of memory), yielding
        ``(indices, rows)``: rows[i] (float32, ``width`` wide) belongs to tokens row indices[i]."""

    def embed_documents(self, documents: Sequence[str], prompt: str, **options: Any) -> Any:
        """Whole documents read through windows → a `tokenpool.model.longdocs.ChunkEmbeddings` of raw rows: one
        per chunk (``chunks``, ``spans``, ``chunking`` as `Encoder.encode_chunks`), or one per document
        (``chunks=None``); ``names`` name the documents in messages (as the request sent them: ``'documents[0]'``), and
        ``should_stop`` (asked before each forward pass) True raises `tokenpool.model.windows.Cancelled`."""


class EncoderRunner:
    """A `tokenpool.Encoder` as a server runner, its rows unfinished (``finish=False``), with all the optional
    parts of `Runner` (``parallel_passes``: 2 for torch on a CPU with 2+ threads, else 1)."""

    def __init__(self, encoder: Any, *, name: str | None = None, default_prompt: str | None = None,
                 calibration: Calibration | None = None) -> None:  # fmt: skip
        _check_servable(encoder, calibration)
        self.calibration = calibration
        self.name = name or default_model_name(encoder.model_path)
        self.is_sparse = bool(encoder.is_sparse)
        self.normalize = bool(encoder.normalize)
        self.max_length = int(encoder.max_length)
        self.dimension = int(encoder.dimension)
        self.width = int(encoder.output_width(finish=False))
        self.encoder = encoder
        # a SparseEncoder's saved limit of non-zeros per row, kept by the finishing step (after normalisation, as
        # `Encoder.encode` and sentence-transformers keep it); the rows `embed` yields are raw
        self.max_active_dims = encoder.max_active_dims
        self.appends_eos = bool(getattr(encoder, "add_eos", False))  # (none to a row ending with it: `Runner`)
        tokenization = getattr(encoder, "tokenization", None)
        self.truncation_side = getattr(tokenization, "truncation_side", "right")  # (the tokenizer's, as encode cuts)
        self.vocabulary_size = _vocabulary_size(encoder)
        lock = getattr(tokenization, "lock", None)  # every tokenizer call holds it
        self._tokenizer_lock = lock if isinstance(lock, type(threading.RLock())) else None  # (`try_tokenize` re-enters)
        # the process's torch threads (None: not torch on a CPU with a count per thread) and CPUs; the model's
        # share of them is ``_cpu_threads`` and ``_cpus`` (`take_cpus`: all of them unless several models share)
        self._process_threads = _torch_cpu_threads(encoder)
        self._process_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self._on_cpu = str(encoder.device).startswith("cpu")
        if self._on_cpu:  # the pooling kernels now (numba compiles them once per machine, ~25 s holding the GIL,
            compiled.kernels()  # then loads them from its cache): not inside a request, stalling the event loop
        self.take_cpus(0, 1)
        self.unpadded = bool(getattr(encoder.runner, "unpadded", False))  # pads cost nothing (model/unpadded.py)
        self.prompts: Mapping[str, str] = dict(encoder.config.prompts)
        if default_prompt is None:  # the model's default prompt, if it names one
            default_prompt = self.prompts.get(encoder.config.default_prompt_name, "")
        self.default_prompt = default_prompt
        if default_prompt:  # one leaving no room in the window would refuse every request naming no prompt
            try:
                encoder.tokenize([""], prompt=default_prompt)
            except ValueError as err:
                raise OptionError(f"the default prompt of {self.name}: {one_line(err)}") from None
        self.info: Mapping[str, Any] = {  # (no folder: /info, open without --api-key, names the model by its name)
            "pooling": list(encoder.strategies),
            "dtype": str(encoder.dtype).removeprefix("torch."),
            "device": str(encoder.device),
            "max_input_length": self.max_length,
            "memory_bytes": _memory_bytes(encoder),
        }

    def tokenize(self, texts: Sequence[str], prompt: str, truncation: str | None) -> Any:
        # inputs are bounded by --max-input-chars: every token is counted, so usage says how many were cut
        return self.encoder.tokenize(list(texts), prompt=prompt, truncation=truncation, exact_counts=True)

    def try_tokenize(self, texts: Sequence[str], prompt: str, truncation: str | None) -> Any | None:
        """`tokenize`, or None at once when another thread holds the tokenizer (the server's event loop then
        tokenises in a thread rather than wait for it)."""
        lock = self._tokenizer_lock
        if lock is None:
            return self.tokenize(texts, prompt, truncation)
        if not lock.acquire(blocking=False):  # a large request, or a worker's document, is being tokenised
            return None
        try:  # (the lock is reentrant: the tokenisation takes it again inside)
            return self.tokenize(texts, prompt, truncation)
        finally:
            lock.release()

    def tokenize_ids(self, rows: Sequence[Sequence[int]], truncation: str | None) -> Tokenized:
        """Token ids a client sent as the rows the model runs, each as given (it is the model's whole input, as
        /tokenize shows it), one over ``max_length`` cut on the ``truncation`` side (None: kept whole, and refused
        by the caller) keeping the model's special-token frame: `Tokenization.cut_ids`."""
        return self.encoder.tokenization.cut_ids(rows, truncation)

    def token_vectors(self, tokens: Tokenized) -> list[np.ndarray]:
        """Each row's every token's vector (TEI's /embed_all): the model's last hidden states, float32
        (tokens, hidden), special and prompt tokens included, unpooled and unnormalised; one forward pass."""
        encoder, out = self.encoder, [None] * len(tokens)
        left = encoder.tokenization.left_pad
        for batch in encoder.forward_ids(tokens, batch_size=max(1, len(tokens))):
            with encoder.runner.inference():
                hidden = encoder.runner.to_float32_numpy(batch.hidden)
            for k, index in enumerate(np.asarray(batch.indices).tolist()):
                n = len(tokens.ids[index])
                start = hidden.shape[1] - n if left else 0
                out[index] = np.ascontiguousarray(hidden[k, start : start + n])
        return out  # type: ignore[return-value]

    def body_lengths(self, documents: Sequence[str], prompt: str) -> list[int]:
        """Each document's body tokens (no special or prompt tokens) as its chunk plan counts them, read after
        ``prompt`` (`tokenize_document`): what --max-chunks counts before any forward pass."""
        return [len(tokenize_document(self.encoder.tokenization, text, prompt)) for text in documents]

    def token_spans(self, texts: Sequence[str], special_tokens: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each text's tokens, none cut (a prompt is sent in front of its text, tokenised with it as `tokenize`
        does): int64 ids and (n, 2) character spans ``[start, end)`` in the text, ``[-1, -1]`` for the special
        tokens around it (left out unless ``special_tokens``): `Encoder.token_spans`."""
        # (prompt="": the texts hold their prompt already, and the model's default one must not come in twice)
        return self.encoder.token_spans(list(texts), prompt="", special_tokens=special_tokens,
                                        long_documents="windows")  # fmt: skip

    def token_texts(self, ids: Sequence[int]) -> list[str | None]:
        """The vocabulary entry of each id (``[CLS]``, ``##ing``); None for an id the vocabulary lacks."""
        with self._tokenizer_lock or contextlib.nullcontext():
            return list(self.encoder.tokenizer.convert_ids_to_tokens(list(ids)))

    def decode(self, rows: Sequence[Sequence[int]], skip_special_tokens: bool) -> list[str]:
        """Each row of ids as text, as the tokenizer library decodes it (TEI's decoding: no clean-up of the
        spaces around punctuation); a tokenizer without one (not a fast tokenizer) is an `OptionError`."""
        backend = getattr(self.encoder.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise OptionError(f"{self.name} has no fast tokenizer (tokenizer.json) to decode token ids with")
        with self._tokenizer_lock or contextlib.nullcontext():
            return list(backend.decode_batch([list(row) for row in rows], skip_special_tokens=skip_special_tokens))

    def embed(self, tokens: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # NaN rows are checked per input by the batcher; a pass mixes requests of all lengths: on a CPU attention
        # runs per group of similar lengths (4-7% less time a pass, ~1 ulp; stop 41; not measured on GPUs, where
        # padded attention is cheap and each group costs a kernel launch)
        # (its batches are taken inside the context, not yielded from it: a generator has no context of its own,
        # so a ``yield`` there left attention grouped in the caller's context while it was suspended)
        with unpadded.grouped_attention() if self._on_cpu else contextlib.nullcontext():
            batches = list(self.encoder.pool_ids(tokens, batch_size=len(tokens), finish=False, finite=False))
        yield from batches

    @property
    def splits_cpus(self) -> bool:
        """Whether this model's passes run torch on the CPU with a thread count per calling thread (OpenMP): the
        only threads a server of several models can split among them (`take_cpus`)."""
        return self._process_threads is not None

    def take_cpus(self, share: int, shares: int) -> None:
        """Run this model's passes on share number ``share`` of ``shares`` of the process's torch threads and
        CPUs (the server gives each of its CPU models one: `share_cpus`); ``(0, 1)``: all of them. A share of
        fewer than 2 threads runs one pass at a time (``parallel_passes``); fewer CPUs than shares: each model
        on all of them, unpinned from one another."""
        threads, cpus = self._process_threads, self._process_cpus
        self._cpu_threads = None if threads is None else max(1, threads // shares)
        fits = len(cpus) >= shares
        self._cpus = cpus[share * len(cpus) // shares : (share + 1) * len(cpus) // shares] if fits else cpus
        self.parallel_passes = 2 if (self._cpu_threads or 0) >= 2 else 1

    def share_threads(self, passes: int, worker: int = 0) -> None:
        """Give the calling worker (number ``worker``) its share of this model's CPU threads while ``passes``
        forward passes run at once (torch's thread count is per calling thread for its OpenMP work; nothing to
        do off the CPU), and keep it on this model's CPUs, on CPUs of its own while it shares (`pin_thread`)."""
        if self._cpu_threads is not None:
            share = max(1, self._cpu_threads // max(1, passes))
            set_torch_threads(share)
            pin_thread(self._cpus, worker * share, share if passes > 1 else None)

    def release_threads(self) -> None:
        """The calling thread back on the process's torch threads and CPUs, as before the server (and so torch's
        count for threads started later: the last count set by any thread)."""
        if self._process_threads is not None:
            set_torch_threads(self._process_threads)
            pin_thread(self._process_cpus, 0, None)

    def embed_documents(
        self, documents: Sequence[str], prompt: str, *, chunks: Any, spans: Any, chunking: str, batch_size: int,
        max_batch_tokens: int, names: Sequence[str] | None = None, should_stop: Callable[[], bool] | None = None,
    ) -> Any:  # fmt: skip
        options = {"batch_size": batch_size, "prompt": prompt, "max_batch_tokens": max_batch_tokens, "finish": False,
                   "caller": "http"}  # (messages name the request's JSON fields)
        names = None if names is None else list(names)
        if chunks is not None:
            request = EncodeRequest(output="chunks", chunks=chunks, chunking=chunking, **options)
            return self.encoder.run(request, list(documents), spans=spans, names=names, should_stop=should_stop)
        try:
            request = EncodeRequest(long_documents="windows", **options)
            vectors = self.encoder.run(request, list(documents), should_stop=should_stop)
        except ModelOutputError as err:  # name the text as `encode_chunks` names a document
            if names is None or err.index is None:
                raise
            raise err.at(f"text {names[err.index]}", err.index) from None
        n = np.arange(len(documents), dtype=np.int64)
        ends = np.array([len(d) for d in documents], dtype=np.int64)
        return ChunkEmbeddings(n, np.zeros_like(n), np.zeros_like(n), ends, vectors)


def _vocabulary_size(encoder: Any) -> int | None:
    """Token ids a client may send are below this: the ids the tokenizer knows (its added tokens too: the Rust
    tokenizer's count, which the ONNX runtime's `FolderTokenizer` has and ``len`` has not) within the model's
    embedding table; None when neither is known."""
    tokenizer = encoder.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    known = (backend.get_vocab_size(with_added_tokens=True) if backend is not None
             else len(tokenizer) if hasattr(tokenizer, "__len__") else None)  # fmt: skip
    sizes = [int(n) for n in (known, getattr(encoder.tokenization, "vocab_size", None)) if n is not None]
    return min(sizes) if sizes else None


def _check_servable(encoder: Any, calibration: Calibration | None) -> None:
    """`OptionError` for an encoder the server cannot serve as given: one reading long documents in windows (a
    request asks for them itself), or a calibration that is not for it (a sparse model, another model)."""
    if getattr(encoder, "long_documents", "truncate") != "truncate":
        raise OptionError(f"tokenpool serve takes an Encoder of long_documents='truncate', got "
                          f"{encoder.long_documents!r}: a request asks for windows itself "
                          "(\"long_documents\": \"windows\")")  # fmt: skip
    if calibration is not None and encoder.is_sparse:  # (the check below named a precision='int8' never given)
        raise OptionError(f"a calibration (int8/uint8 ranges) is for dense models; {display_name(encoder)} is a "
                          "sparse (SPLADE) model, whose rows are served exactly (/embed_sparse)")  # fmt: skip
    if calibration is not None:
        check_output_options(encoder, "int8", calibration)  # made for this model, pooling and normalisation


def check_runner(runner: Any, name: Any = None) -> None:
    """TypeError naming ``runner`` (served as ``name``, a mapping's key) when it lacks a part the server reads of
    every `Runner`: its attributes, `Runner.tokenize` and `Runner.embed` (an `Encoder` is served through
    `EncoderRunner`)."""
    missing = [part for part in (*Runner.__annotations__, "tokenize", "embed") if not hasattr(runner, part)]
    if missing:
        served = "" if name is None else f"the model {name!r}: "
        raise TypeError(f"{served}{type(runner).__name__} is not a server runner (it has no {', '.join(missing)}); "
                        "serve a model as EncoderRunner(Encoder(folder))")


def share_cpus(runners: Sequence[Any]) -> None:
    """Split the process's torch threads and CPUs among the served ``runners`` whose threads split
    (``splits_cpus``: torch on the CPU), one share each in order, so that models under load at once do not run
    more threads than there are cores; a lone one keeps them all. (Optional in `Runner`: ``take_cpus``.)"""
    local = [runner for runner in runners if getattr(runner, "splits_cpus", False)]
    for share, runner in enumerate(local):
        runner.take_cpus(share, len(local))


def pin_thread(cpus: Sequence[int], first: int, count: int | None) -> None:
    """Keep the calling thread on ``cpus[first : first + count]``, or on all ``cpus`` when ``count`` is None or
    that share does not fit (more workers than CPUs: two pinned to one CPU would wait for each other while
    another CPU idles). Two passes side by side on 2 cores, each on one thread, ran faster pinned than left
    to wander (stop 40, docs/serve.md): the event loop's wake-ups no longer move a pass's thread to the other
    core and its caches. No-op where the OS cannot pin or ``cpus`` is empty."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    fits = count is not None and first + count <= len(cpus)
    mask = set(cpus[first : first + count]) if fits else set(cpus)
    with contextlib.suppress(OSError):  # a CPU taken away from the process since start-up: left where it is
        os.sched_setaffinity(0, mask)  # (0: the calling thread)


def _torch_cpu_threads(encoder: Any) -> int | None:
    """torch's thread count when the encoder's torch runner could run passes side by side (a CPU, 2+ threads,
    thread counts per thread: `TorchRunner.parallel_passes`, the one place that decides), else None."""
    if not isinstance(encoder.runner, TorchRunner) or encoder.runner.parallel_passes < 2:
        return None
    import torch

    return int(torch.get_num_threads())


def _memory_bytes(encoder: Any) -> int | None:
    """Bytes of the model's weights and buffers (torch), or of its ONNX file; None when not known."""
    model = getattr(encoder.runner, "model", None)
    if hasattr(model, "parameters"):
        tensors = [*model.parameters(), *model.buffers()]
        return int(sum(t.numel() * t.element_size() for t in tensors))
    path = getattr(encoder.runner, "path", None)
    return int(path.stat().st_size) if path is not None and hasattr(path, "stat") else None


def default_model_name(folder: Any) -> str:
    """A readable id for a model folder: its name; for a Hugging Face cache snapshot the repo id; for a
    package's ``.../<package>/model`` folder the package name. A relative folder is named as its absolute
    path would be (``.``: the current folder's name), symbolic links left as given."""
    path = Path(os.path.abspath(folder))
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/")
    if path.name == "model" and path.parent.name:
        return path.parent.name
    return path.name or str(path)
