"""`EncodeRequest`: one encode's options, checked in one place: `check` before any model loads,
`check_encoder` against the loaded `Encoder`, each giving the request in canonical form. Messages name a field
as its caller writes it: a Python keyword, a flag (``caller="cli"``) or the server's JSON field
(``caller="http"``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..core.chunking import CHUNKINGS, parse_chunks
from ..core.pooling import finish_vectors
from ..core.quantize import (
    CALIBRATED_PRECISIONS,
    Calibration,
    CalibrationMismatch,
    call_normalize,
    check_precision,
    quantize,
)
from ..core.sparse import check_sparse_options, keep_largest
from ..core.strategies import Pooling, check_combination, is_auto, parse_strategies
from ..errors import OptionError, check_int, is_int, shown_int, shown_value
from .folders import display_name
from .options import (
    LONG_DOCUMENT_MODES,
    Declared,
    EncoderOptions,
    OptionInfo,
    check_bool,
    option,
    spell,
    spelled_as,
)
from .texts import check_prompt, resolve_prompt

__all__ = [
    "EncodeRequest", "OUTPUTS", "CALLERS", "EMPTY_DOCUMENTS", "HTTP_NAMES", "display_name",
]

OUTPUTS = ("vectors", "tokens", "sparse", "chunks")
EMPTY_DOCUMENTS = ("error", "whole")
CALLERS = ("python", "cli", "http")
HTTP_NAMES = {"truncate_dim": "dimensions"}  # a request field's JSON name where it is not the Python one
MAX_SIZE = 2**63 - 1  # numpy's int64: no count reaches it (and a job's manifest writes no int of 4,300+ digits)
_FLOAT32_ONLY = ("precision", "calibration", "top_k", "threshold", "decoded_tokens", "dense")
_SPARSE_ONLY = ("top_k", "threshold", "decoded_tokens")
_SWITCHES = ("decoded_tokens", "dense", "special_tokens", "normalize", "finish")  # (`check_bool`'s)


@dataclass(frozen=True)
class EncodeRequest(Declared):
    """One encode call's options (not the model's: those are `EncoderOptions`)."""

    # fmt: off
    output: str = option("vectors", OptionInfo(
        "vectors (pooled, one per text), sparse (SPLADE rows as indices and values), tokens (every token's "
        "vector), chunks (one vector per chunk; also implied by `chunks`)"))
    precision: str = option("float32", OptionInfo(
        "float32, float16, int8/uint8 (calibrated), binary/ubinary", flag="--precision"))
    calibration: Any = option(None, OptionInfo(
        "int8/uint8: a Calibration, its dict, or its JSON file (ignored by other precisions, but it must fit "
        "the model; on the command line refused with them)", flag="--calibration"))
    calibration_size: int | None = option(None, OptionInfo(
        "int8/uint8 without a calibration: calibrate on the first N texts (corpus jobs)",
        flag="--calibration-size", kind="positive_int"))
    chunks: Any = option(
        None, OptionInfo("tokens:SIZE[:OVERLAP], boundaries:MAX[:OVERLAP] or spans", flag="--chunks"))
    chunking: str = option("late", OptionInfo("late or naive", flag="--chunking", choices=("late", "naive")))
    batch_size: int = option(
        32, OptionInfo("texts per forward pass, at most", flag="--batch-size", kind="positive_int"))
    max_batch_tokens: int | None = option(
        None, OptionInfo("padded tokens per forward pass", flag="--max-batch-tokens", kind="positive_int"))
    special_tokens: bool | None = option(None, OptionInfo(
        "token vectors: keep the tokenizer's special tokens (default)", flag="--special-tokens", kind="bool"))
    prompt: str | None = option(None, OptionInfo("text prepended to every input", flag="--prompt"))
    prompt_name: str | None = option(None, OptionInfo("a prompt of the model's config", flag="--prompt-name"))
    top_k: int | None = option(None, OptionInfo("sparse rows: keep the K largest values", flag="--top-k"))
    threshold: float = option(0.0, OptionInfo("sparse rows: keep values above X", flag="--threshold"))
    decoded_tokens: bool = option(
        False, OptionInfo("sparse rows: add the decoded tokens", flag="--tokens", kind="bool"))
    dense: bool = option(False, OptionInfo("sparse models: N × V float32 rows", flag="--dense", kind="bool"))
    long_documents: str | None = option(None, OptionInfo(
        "this call's long-document mode (default: the encoder's)", flag="--long-documents",
        choices=LONG_DOCUMENT_MODES))
    pooling: Any = option(None, OptionInfo(
        "pool with these strategies instead of the encoder's own (raw rows: no Dense modules, truncate_dim "
        "or normalize); e.g. for evaluation"))
    truncate_dim: int | None = option(None, OptionInfo(
        "this call's Matryoshka cut: the first D dimensions of the encoder's vectors (default: the encoder's "
        "truncate_dim); at most the encoder's dimension"))
    normalize: bool | None = option(
        None, OptionInfo("this call's L2 normalisation, True or False (default: the encoder's normalize)"))
    finish: bool = option(True, OptionInfo(
        "apply the encoder's truncate_dim and normalize; False: the rows before that step, for a caller "
        "that finishes them itself (`tokenpool.core.pooling.finish_vectors`), e.g. per server request"))
    empty_documents: str = option("error", OptionInfo(
        "chunks: a document with no token to chunk (or only whitespace) is an error, or ('whole') one row of the "
        "whole text"))
    # fmt: on
    caller: str = field(default="python", compare=False)  # how messages spell fields: "python", "cli", "http"

    def __post_init__(self) -> None:
        for name in _SWITCHES:  # numpy's bools as Python's (`check_bool` takes both; checks read ``dense is True``)
            if isinstance(value := getattr(self, name), np.bool_):
                object.__setattr__(self, name, bool(value))

    def spell(self, name: str, value: Any = ..., *, valued: bool = True, short: bool = False) -> str:
        """Field ``name`` (of this request or of `EncoderOptions`) as the caller writes it (`options.spell`, with
        the declared flags for ``caller="cli"``): ``top_k=3`` or ``--top-k 3`` (``--no-normalize`` for a false
        switch), the server's ``'top_k': 3``; ``valued=False``: the name or flag alone; ``short``: a long str
        value cut (`shown_value`)."""
        value = getattr(self, name) if value is ... else value
        if self.caller == "http":
            said = f"'{HTTP_NAMES.get(name, name)}'"
            return f"{said}: {_json(value, short=short)}" if valued else said
        with spelled_as(_FLAGS if self.caller == "cli" and spell(name) == name else {}):  # (a command's own wins)
            return spell(name, value if valued else ..., short=short)

    def _value(self, value: Any) -> str:
        """A value as the caller writes it (``'int8'`` in Python, ``int8`` on a command line)."""
        if self.caller == "http":
            return _json(value)
        return repr(value) if self.caller == "python" else str(value)

    def _said_output(self, output: str) -> str:
        """The output kind as the caller asked for it (a long chunks spec cut, as `shown_value` cuts it)."""
        if output == "chunks":
            return self.spell("chunks", valued=self.caller == "python", short=True)
        if self.caller == "cli":
            return {"tokens": "--token-vectors", "sparse": "sparse rows", "vectors": "pooled vectors"}[output]
        return f"output={output!r}"

    def check(self, options: EncoderOptions | None = None) -> EncodeRequest:
        """This request, checked without a model (and with ``options``, the encoder options, when given) and
        in canonical form; `OptionError` / `ValueError` / `TypeError` naming the field otherwise."""
        request = self._checked(options)
        # the call's own cut, at least 1 as every size (`check_encoder` names its model's range, up to its dimension)
        check_int(self.truncate_dim, self.spell("truncate_dim", valued=False), optional=True, error=OptionError)
        return request

    def _checked(self, options: EncoderOptions | None = None) -> EncodeRequest:
        """`check` but for the lower bound of the call's truncate_dim, which `check_encoder` checks with the model."""
        self._check_choice("caller", CALLERS, spelled=False)
        output = self._checked_output()
        precision = check_precision(self.precision)
        self._check_float32_only(output, precision)
        self._check_pooling(precision)
        sizes = self._checked_sizes()
        top_k, threshold = check_sparse_options(self.top_k, self.threshold)
        self._check_switches(output)
        self._check_calibration(precision)
        check_prompt(self.prompt, self.prompt_name)
        self._check_chunking()
        self._check_finishing(output)
        self._check_token_pooling(output, None if options is None else options.pooling)
        if options is not None:
            options.check()
            self._check_token_vectors(output, options.truncate_dim, options.normalize)
        self._check_windows_read(output, options or EncoderOptions())  # (without: the call's own long_documents)
        return replace(
            self, output=output, precision=precision, top_k=top_k, threshold=threshold, **sizes,
            truncate_dim=None if self.truncate_dim is None else int(self.truncate_dim),
            calibration_size=None if self.calibration_size is None else int(self.calibration_size),
        )  # fmt: skip

    def _checked_sizes(self) -> dict[str, int | None]:
        """The batch sizes as ints (`check_int`); these and ``calibration_size`` at most `MAX_SIZE` (a corpus job
        records them: a larger one failed after the model loaded, or Ray started)."""
        sizes = {name: check_int(getattr(self, name), self.spell(name, valued=False), optional=name != "batch_size")
                 for name in ("batch_size", "max_batch_tokens")}  # fmt: skip
        for name in (*sizes, "calibration_size"):
            if is_int(getattr(self, name)) and getattr(self, name) > MAX_SIZE:
                raise OptionError(f"{self.spell(name)}: at most {MAX_SIZE}")
        return sizes

    def _check_choice(self, name: str, choices: tuple[Any, ...], *, spelled: bool = True) -> None:
        """`OptionError` when field ``name`` is not one of ``choices`` (named as the caller spells it)."""
        if getattr(self, name) not in choices:
            shown = self.spell(name, valued=False) if spelled else name
            raise OptionError(f"{shown} must be one of {choices}, got {shown_value(getattr(self, name), short=True)}")

    def _check_finishing(self, output: str) -> None:
        """The call's own truncate_dim (an int; its range is checked against the model) and normalize are for
        finished pooled vectors or chunk vectors."""
        dim, norm = self.truncate_dim, self.normalize
        if dim is not None and not is_int(dim):
            raise TypeError(f"{self.spell('truncate_dim', valued=False)} must be an integer, got {dim!r}")
        if norm is not None:
            check_bool(self.spell("normalize", valued=False), norm)
        self._check_token_vectors(output, dim, norm)
        given = [name for name in ("truncate_dim", "normalize") if getattr(self, name) is not None]
        if given and (output == "sparse" or self.pooling is not None or not self.finish):
            what = (self._said_output("sparse") if output == "sparse"
                    else f"pooling={self.pooling!r}" if self.pooling is not None else "finish=False")  # fmt: skip
            raise OptionError(f"{self.spell(given[0])} finishes the encoder's pooled vectors; it cannot be combined "
                              f"with {what} (raw rows)")  # fmt: skip

    def _checked_output(self) -> str:
        self._check_choice("output", OUTPUTS, spelled=False)
        if self.chunks is None:
            if self.output == "chunks":
                raise OptionError(
                    f"chunk output needs {self.spell('chunks', valued=False)}: a chunk spec such as tokens:128:16"
                )
            return self.output
        if self.output not in ("vectors", "chunks"):
            raise OptionError(
                f"{self.spell('chunks', short=True)} gives one vector per chunk; it cannot be combined with "
                f"{self._said_output(self.output)}"
            )
        return "chunks"

    def _check_switches(self, output: str) -> None:
        for name in ("decoded_tokens", "dense"):
            check_bool(self.spell(name, valued=False), getattr(self, name), or_none=False)
        if self.special_tokens is not None:
            check_bool("special_tokens", self.special_tokens)
        given = {"special_tokens"} if self.special_tokens is False else set()  # True: what pooling reads too
        if unread_options(given, chunks=self.chunks, precision=self.precision, calibration=self.calibration,
                          output=output):  # fmt: skip
            raise OptionError(
                f"{self.spell('special_tokens')} is for {self._said_output('tokens')} (pooled vectors always "
                f"read the special tokens)"
            )
        if self.long_documents is not None:
            self._check_choice("long_documents", LONG_DOCUMENT_MODES)

    def _check_calibration(self, precision: str) -> None:
        given = self.calibration
        if given is not None and not isinstance(given, (Calibration, dict, str, os.PathLike)):
            raise TypeError(
                f"calibration must be a tokenpool Calibration (or its dict, or its JSON file), got "
                f"{type(given).__name__}"
            )
        if precision not in CALIBRATED_PRECISIONS:
            # Python callers may pass one calibration along for every precision (it must still fit the model);
            # a command-line --calibration that would be ignored is a mistake
            if given is not None and self.caller == "cli":
                raise OptionError(
                    f"{self.spell('calibration', valued=False)} is for {self.spell('precision', 'int8')} or "
                    f"{self._value('uint8')}, not {self._value(precision)}"
                )
            return
        size = self.calibration_size
        if given is None and size is None:
            how = ("start the server with --calibration FILE (several models: --model NAME=FOLDER,calibration=FILE)"
                   if self.caller == "http"
                   else f"{self._calibrate_call()} on a sample of the corpus, or Calibration.load(file)")  # fmt: skip
            raise OptionError(
                f"{self.spell('precision', precision)} needs a calibration (per-dimension ranges fixed for the corpus): "
                f"{how}"
            )
        if given is None and not (is_int(size) and size >= 2):
            raise OptionError(
                f"{self.spell('calibration_size', valued=False)} must be at least 2 (texts), got {size!r}"
            )

    def _check_chunking(self) -> None:
        self._check_choice("chunking", CHUNKINGS)
        if self.chunks is not None:
            parse_chunks(self.chunks, self.spell("chunks", valued=False), self.spell("chunks", short=True))

    def _check_pooling(self, precision: str) -> None:
        """A per-call pooling (or unfinished rows) gives raw float32 rows: no precision, whose codes and
        calibration are for the encoder's own finished vectors."""
        check_bool("finish", self.finish, or_none=False)
        self._check_choice("empty_documents", EMPTY_DOCUMENTS, spelled=False)
        if self.pooling is not None:
            check_combination(parse_strategies(self.pooling))
        if (self.pooling is not None or not self.finish) and precision != "float32":
            what = f"pooling={self.pooling!r}" if self.pooling is not None else "finish=False"
            raise OptionError(f"{self.spell('precision', precision)} is for the encoder's own vectors, not {what}")

    def _check_float32_only(self, output: str, precision: str) -> None:
        """Token and chunk rows are float32 vectors: no precision, calibration or sparse-row option; nor is there
        a precision for a sparse model's N × V rows (``dense``: float32, as `Encoder.encode` gives them)."""
        if self.dense is True and output not in ("tokens", "chunks") and precision != "float32":
            raise OptionError(f"{self.spell('precision', precision)} is not supported with {self.spell('dense')} "
                              f"(its rows are a sparse model's N × V float32 vectors)")  # fmt: skip
        if output not in ("tokens", "chunks"):
            return
        values = {**{name: getattr(self, name) for name in _FLOAT32_ONLY}, "precision": precision}
        for name in _FLOAT32_ONLY:
            if values[name] != self.default(name):
                raise OptionError(
                    f"{self.spell(name, values[name])} is not supported with {self._said_output(output)} (its rows "
                    f"are float32 vectors)"
                )

    def _check_windows_read(self, output: str, options: EncoderOptions) -> None:
        """The encoder's window_stride, given for a call that reads no windows (neither
        long_documents='windows' nor late chunking), would be ignored, as would long_documents='windows' with
        naive chunks (each chunk's text is encoded as truncate mode encodes it); the encoder's are refused only in
        a call checked with its options (an `Encoder` may hold a stride or mode for its later calls, e.g. late chunks);
        and a call's own long_documents, either mode, with late chunks (pooled from the windows in either)."""
        if output == "chunks" and self.chunking == "late" and self.long_documents is not None:
            raise OptionError(f"{self.spell('long_documents')} would be ignored: {self.spell('chunking', 'late')} pools "
                              f"each chunk from the whole document's windows in either mode; leave "
                              f"{self.spell('long_documents', valued=False)} out")  # fmt: skip
        mode = self.long_documents or options.long_documents
        naive = f"{self.spell('chunking', 'naive')} encodes each chunk's text alone, in no windows"
        if options.window_stride is not None and not (
                (self.chunking == "late") if output == "chunks" else mode == "windows"):  # fmt: skip
            why = naive if output == "chunks" else (
                f"windows are read only with {self.spell('long_documents', 'windows')} or late chunking "
                f"({self.spell('chunks', valued=False)} with {self.spell('chunking', 'late')})")  # fmt: skip
            raise OptionError(f"{self.spell('window_stride', options.window_stride)} would be ignored: {why}")
        if output == "chunks" and self.chunking == "naive" and mode == "windows":
            spans = parse_chunks(self.chunks) == "spans"
            cut = " (a span longer than max_length is cut, as in truncate mode)" if spans else ""
            raise OptionError(f"{self.spell('long_documents', 'windows')} would be ignored: {naive}{cut}")

    def _check_token_vectors(self, output: str, truncate_dim: Any, normalize: Any) -> None:
        """Token vectors are the model's outputs: whole (no truncate_dim) and, when the caller says, not
        normalised (``normalize`` is only an encoder option's value here, None unless given)."""
        if output != "tokens":
            return
        why = {"truncate_dim": "it truncates pooled vectors; token vectors are whole",
               "normalize": "token vectors are the model's outputs, not normalised"}  # fmt: skip
        for name, value in (("truncate_dim", truncate_dim), ("normalize", normalize)):
            if value is not None:
                said = self._said_output("tokens")
                raise OptionError(f"{self.spell(name, value)} cannot be used with {said} ({why[name]})")

    def _check_token_pooling(self, output: str, pooling: Any) -> None:
        """Token vectors are not pooled: a call's own ``pooling`` would be ignored, and so would encoder
        options' one-token pooling (cls, lasttoken; not the folder's "auto") in a run checked with them (the
        CLI, Ray). (An `Encoder` may hold such a pooling for its other calls, e.g. late chunks.)"""
        if output != "tokens":
            return
        said = self._said_output("tokens")
        if self.pooling is not None:
            raise OptionError(f"{self.spell('pooling')} would be ignored: with {said} the rows are the tokens' own "
                              f"vectors, not pooled")  # fmt: skip
        if pooling is None or is_auto(pooling):
            return
        one = [m.value for m in parse_strategies(pooling) if m in (Pooling.CLS, Pooling.LAST_TOKEN)]
        if one:
            raise OptionError(
                f"{self.spell('pooling', pooling)} reads one token per text ({', '.join(one)}); with {said} every "
                f"token's vector is returned, so it would be ignored (leave pooling to the model's config, or use mean)"
            )

    def check_encoder(self, encoder: Any) -> EncodeRequest:
        """This request checked against the loaded ``encoder`` (a sparse or dense model, the calibration's
        model, its truncate_dim, its prompts); the calibration comes back loaded."""
        self._check_model_kind(encoder, check_precision(self.precision))
        request = self._checked()
        used = [field for field in _SPARSE_ONLY if getattr(request, field) not in (None, 0.0, False)]
        if used and not request.writes_sparse(encoder):
            shown = ", ".join(request.spell(field) for field in used)
            verb = "applies" if len(used) == 1 else "apply"
            why = (f"{self.spell('dense')} makes the rows dense (N × V float32 vectors)" if request.dense
                   and getattr(encoder, "is_sparse", False) else f"{display_name(encoder)} writes dense vectors")
            raise OptionError(f"{shown} {verb} to sparse (SPLADE) rows; {why}")
        if request.pooling is not None:
            encoder.check_pooling(parse_strategies(request.pooling))
        request._check_token_vectors(request.output, getattr(encoder, "truncate_dim", None), None)
        request.check_dimension(encoder)
        if request.prompt_name is not None:
            where = None if self.caller == "http" else encoder.model_path  # no server path in an HTTP answer
            name = "prompt_name" if self.caller == "http" else self.spell("prompt_name", valued=False)  # (JSON: same)
            resolve_prompt(encoder.config, request.prompt, request.prompt_name, where=where, name=name)
        return replace(request, calibration=request._loaded_calibration(encoder), top_k=request._top_k(encoder))

    def _top_k(self, encoder: Any) -> int | None:
        """The non-zeros kept per row of a sparse model's pooled rows (sparse, N × V with ``dense``, or chunk
        rows): the request's ``top_k``, else the folder's ``max_active_dims`` (a SparseEncoder's saved limit,
        which sentence-transformers applies to every encode)."""
        if self.top_k is not None or self.output == "tokens":
            return self.top_k
        return getattr(encoder, "max_active_dims", None)

    def _check_model_kind(self, encoder: Any, precision: str) -> None:
        """Sparse rows need a SPLADE model; ``dense`` is for one; a precision is for dense rows."""
        name = display_name(encoder)
        sparse_model = bool(getattr(encoder, "is_sparse", False))
        if self.output == "sparse" and not sparse_model:
            raise OptionError(
                f"sparse output needs a SPLADE model (pooling 'splade' on MLM logits); {name} pools "
                f"{list(encoder.strategies)} into dense vectors"
            )
        if self.dense is True and not sparse_model:
            raise OptionError(f"{self.spell('dense')} is for sparse (SPLADE) models; {name} is a dense model")
        if sparse_model and self.dense is not True and precision != "float32":
            raise OptionError(
                f"{self.spell('precision', precision)} is for dense models; {name} is a sparse (SPLADE) model, "
                f"whose rows keep their non-zeros exactly as sparse rows (indices and values)"
            )

    def check_dimension(self, encoder: Any) -> None:
        """The call's truncate_dim cuts a dense model's vectors to 1..its dimension; neither it nor the encoder's
        own (``Encoder(truncate_dim=...)``, ``--dim``) applies to a sparse model (it would keep the first vocabulary
        ids). The Encoder runs it with no call options when it is built: a sparse one with a truncate_dim is
        refused there, with this message."""
        own = getattr(encoder, "truncate_dim", None)
        if getattr(encoder, "is_sparse", False) and (self.truncate_dim is not None or own is not None):
            given = getattr(getattr(encoder, "options", None), "truncate_dim", own)  # (None: the folder's config)
            said = (self.spell("truncate_dim", valued=False) if self.truncate_dim is not None
                    else self.spell("truncate_dim", own) if given is not None
                    else f"the folder's truncate_dim {own} (config_sentence_transformers.json)")  # fmt: skip
            raise OptionError(f"{said} does not apply to a sparse (SPLADE) model ({display_name(encoder)}): its rows "
                              f"are vocabulary-wide")  # fmt: skip
        if self.truncate_dim is None:
            return
        if not 1 <= self.truncate_dim <= int(encoder.dimension):
            raise OptionError(f"{self.spell('truncate_dim', valued=False)} must be between 1 and {encoder.dimension} "
                              f"(the model's dimension), got {shown_int(self.truncate_dim)}")  # fmt: skip

    def finishes_itself(self) -> bool:
        """Whether the call sets its own truncate_dim or normalize (its rows are then finished by `finish_rows`)."""
        return self.truncate_dim is not None or self.normalize is not None

    def finish_rows(self, rows: Any, encoder: Any) -> Any:
        """Rows before the finishing step (``finish=False``) → this call's vectors: the Matryoshka cut, then L2
        normalisation, each the call's own or else the encoder's (``encoder.dimension``, ``encoder.normalize``),
        then a sparse model's ``top_k`` non-zeros (its max_active_dims: kept after normalisation, as the
        encoder's own finishing step and sentence-transformers keep them)."""
        dimension = self.truncate_dim if self.truncate_dim is not None else int(encoder.dimension)
        normalize = call_normalize(encoder, self.normalize)
        cut = dimension if dimension < rows.shape[1] else None
        finished = finish_vectors(rows, truncate_dim=cut, normalize=normalize, copy=False)  # (the call's own rows)
        return finished if self.top_k is None else keep_largest(finished, self.top_k)

    def codes(self, vectors: Any) -> Any:
        """Finished float32 vectors in this call's precision (a request checked against its encoder: the
        calibration loaded)."""
        if self.precision == "float32":
            return vectors
        return quantize(vectors, self.precision, self.calibration)

    def _loaded_calibration(self, encoder: Any) -> Any:
        """The calibration as a `Calibration`, checked to be made with ``encoder`` (None when not given)."""
        given = self.calibration
        if given is None:
            return None
        calibration = (
            given if isinstance(given, Calibration)
            else Calibration.from_dict(given) if isinstance(given, dict)
            else Calibration.load(given)
        )  # fmt: skip
        if self.precision not in CALIBRATED_PRECISIONS:  # passed along, unused: it must fit the model itself
            calibration.check_encoder(encoder)
            return calibration
        try:
            calibration.check_encoder(encoder, dimension=self.truncate_dim, normalize=self.normalize)
        except CalibrationMismatch as err:
            if self.caller == "http":
                raise CalibrationMismatch(f"{self.spell('precision')}: {err}") from None
            if self.caller == "python" and self.spell("calibration", valued=False) != "calibration":
                raise  # (a command's own check, serve's: its user makes no Python call)
            how = (f"leave out {self.spell('calibration', valued=False)} to calibrate on the input"
                   if self.caller == "cli" else f"make a matching calibration with {self._calibrate_call()}")  # fmt: skip
            raise CalibrationMismatch(f"{err}; {how}") from None
        return calibration

    def _calibrate_call(self) -> str:
        """How a Python caller makes the calibration of this call's vectors (its own truncate_dim / normalize)."""
        own = [f"{name}={value!r}" for name in ("truncate_dim", "normalize")
               if (value := getattr(self, name)) is not None]  # fmt: skip
        return f"encoder.calibrate({', '.join(['texts', *own])})"

    def writes_sparse(self, encoder: Any) -> bool:
        """Whether this request's pooled rows from ``encoder`` are sparse rows (a SPLADE model, not ``dense``).
        `Encoder.encode` itself returns N × V float32 rows for ``output="vectors"``; corpus jobs write these."""
        sparse_model = bool(getattr(encoder, "is_sparse", False))
        return sparse_model and not self.dense and self.output in ("vectors", "sparse")


def unread_options(
    given: Any, *, chunks: Any, precision: Any, calibration: Any, output: str | None = None
) -> list[tuple[str, str]]:
    """The options of ``given`` ("chunking", "spans", "calibration_size", "special_tokens") that an encode of
    ``chunks`` / ``precision`` / ``calibration`` / ``output`` would not read, each with what it lacks, in rule
    order: one table for the request, the CLI and Ray. ``output`` None leaves "special_tokens" unread."""
    rules = (
        ("chunking", "chunks", chunks is None),
        ("spans", "spans chunks", not reads_spans(chunks)),
        ("calibration_size", "calibrated precision", precision not in CALIBRATED_PRECISIONS),
        ("calibration_size", "no calibration", calibration is not None),
        ("special_tokens", "token vectors", output != "tokens"),
    )
    return [(name, lacks) for name, lacks, unmet in rules if unmet and name in given]


def reads_spans(chunks: Any) -> bool:
    """Whether ``chunks`` is the spans spec as `parse_chunks` reads it (" SPANS" too); None or a spec that does
    not parse is not (its own check refuses it)."""
    try:
        return parse_chunks(chunks) == "spans"
    except OptionError:
        return False


def _json(value: Any, *, short: bool = False) -> str:
    """A value as JSON for an HTTP caller's message (its repr when it has no JSON form); ``short``: a long str
    cut (`shown_value`)."""
    try:
        return shown_value(value, lambda given: json.dumps(given, default=str), short=short)
    except (TypeError, ValueError):
        return repr(value)


# each field's command-line flag (`EncodeRequest.spell` of ``caller="cli"``, e.g. in a Ray actor)
_FLAGS = {name: cls.info(name).flag for cls in (EncoderOptions, EncodeRequest) for name in cls.names()
          if cls.info(name).flag is not None}  # fmt: skip
