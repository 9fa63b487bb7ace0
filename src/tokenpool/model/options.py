"""`EncoderOptions`: the model options shared by `Encoder`, the CLI, LlamaIndex and Ray, declared once with
their help text and flag (the CLI's option groups and the LlamaIndex fields are derived from it)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from .. import devices
from ..devices import MAX_DEVICE_INDEX
from ..errors import check_bool, shown_value

__all__ = [
    "EncoderOptions", "OptionInfo", "Declared", "option", "LONG_DOCUMENT_MODES", "RUNTIME_NAMES", "DTYPE_NAMES",
    "check_bool", "check_dtype", "device_parts", "parse_device", "spell", "spelled_as",
]  # fmt: skip

# texts longer than max_length: cut at it, or read whole through overlapping windows (`tokenpool.model.windows`)
LONG_DOCUMENT_MODES = ("truncate", "windows")
# the runtimes of `tokenpool.model.runtimes.RUNTIMES`, named here so that the CLI's --help loads nothing
RUNTIME_NAMES = ("torch", "onnx")
# the weights dtypes by name, any case, "torch." in front allowed ("auto": the folder's own); torch's names of them
DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64", "double": "float64",  # (as torch.float64 is taken)
}  # fmt: skip
# how messages name a parameter (`spell`): its Python name, or, inside `spelled_as` (a command), what set it
_SPELLING: ContextVar[Mapping[str, str] | None] = ContextVar("tokenpool_spelling", default=None)


@contextlib.contextmanager
def spelled_as(flags: Mapping[str, str] | None) -> Iterator[None]:
    """Within this block, `spell` writes the parameters of ``flags`` (name → flag, or environment variable) as
    they were given: the command line sets each option's flag, derived from its parser; None: Python names."""
    token = _SPELLING.set(None if flags is None else {**(_SPELLING.get() or {}), **flags})
    try:
        yield
    finally:
        _SPELLING.reset(token)


def spell(name: str, value: Any = ..., *, short: bool = False) -> str:
    """Parameter ``name`` (with ``value``, when given) as its caller wrote it, for a message: ``max_queue=4``
    from Python, ``--max-queue 4`` (``--no-normalize`` for False) from the command line (`spelled_as`), and
    ``--model a=...,max-length=4`` (``normalize=false``) as an option of serve's ``--model`` list; ``short``: a
    long str value cut (`shown_value`: a caller's spec, never a path)."""
    flag = (_SPELLING.get() or {}).get(name)
    if flag is None:
        return name if value is ... else f"{name}={shown_value(value, short=short)}"
    text = shown_value(value, lambda given: shlex.quote(str(given)), short=short)  # (a huge integer's short form: unquoted)
    if " " in flag and value is not ...:  # (a KEY of a --model NAME=FOLDER,KEY=VALUE list)
        return f"{flag}={text.lower() if isinstance(value, bool) else text}"
    if value is ... or value is True:
        return flag
    return "--no-" + flag.removeprefix("--") if value is False else f"{flag} {text}"


def check_dtype(dtype: Any) -> Any:
    """``dtype`` checked without importing torch: None, a name of `DTYPE_NAMES` or "auto" (returned in canonical
    lower case), or a floating torch dtype (only where torch is loaded can a caller hold one); ValueError else."""
    torch = sys.modules.get("torch")
    if dtype is None:
        return None
    if torch is not None and isinstance(dtype, torch.dtype):
        if dtype not in [getattr(torch, name) for name in set(DTYPE_NAMES.values())]:
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        name = dtype.strip().lower().removeprefix("torch.")
        if name == "auto" or name in DTYPE_NAMES:
            return name
    raise ValueError(
        f"dtype must be None, 'auto', 'float32', 'float16', 'bfloat16', 'float64' or a torch dtype, got {dtype!r}"
    )


def device_parts(device: Any) -> tuple[str, int | None]:
    """``device`` as (type, index) (`tokenpool.devices.device_parts`, every runtime's reader of device names), an
    index above torch's named as the caller wrote the option (`spell`); `OptionError` else."""
    return devices.device_parts(device, spell("device"))


def parse_device(device: Any) -> Any:
    """``device`` as a ``torch.device``, checked as far as it can be on any machine (`EncoderOptions.check`, e.g.
    on a Ray driver without the actors' GPUs): a device torch knows ("tpu" is not one), and not "meta" (no data).
    Whether this machine has it is `tokenpool.model.runners.resolve_device`'s check."""
    import torch

    from ..devices import device_index_refusal
    from ..errors import cut, is_int, shown_int

    if is_int(device) and device > MAX_DEVICE_INDEX:  # (a bare index: 300 would be torch's 44 too)
        raise device_index_refusal(spell("device"), shown_int(int(device)))
    if is_int(device) and device < 0:  # torch's words, which one below int64 did not reach (its parse overflowed)
        raise ValueError(f"unknown device {shown_value(device)}: Device index must not be negative")
    # a GPU index or torch's own types as torch reads them; anything else (a bool, 1.5) named by `device_parts`
    parts = (device,) if is_int(device) or isinstance(device, (bytes, torch.device)) else device_parts(device)
    try:
        resolved = torch.device(*parts)
    except (RuntimeError, TypeError) as err:  # (torch's words end with the device string: cut, as the value is)
        said = str(err).replace(device, cut(device)) if isinstance(device, str) else str(err)
        raise ValueError(f"unknown device {shown_value(device, short=True)}: {said}") from None
    if resolved.type == "meta":
        raise ValueError(f"device {device!r} holds no data, so it cannot run a model: use 'cpu' or a GPU")
    return resolved


@dataclass(frozen=True)
class OptionInfo:
    """How one encoder option is shown: its help text and, where the CLI has it, the flag."""

    help: str
    flag: str | None = None  # None: not a command-line option
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    kind: str = "str"  # "str", "positive_int" or "bool" (a --x/--no-x pair)


def option(default: Any, info: OptionInfo) -> Any:
    """A dataclass field declared with its `OptionInfo` (help text, flag)."""
    return field(default=default, metadata={"info": info})


class Declared:
    """What a dataclass of `option` fields offers: its names, their `OptionInfo` and defaults, and an instance
    from any mapping (a dict, or parsed command-line arguments)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The declared names, in declaration order."""
        return tuple(f.name for f in fields(cls) if "info" in f.metadata)

    @classmethod
    def info(cls, name: str) -> OptionInfo:
        return next(f.metadata["info"] for f in fields(cls) if f.name == name)

    @classmethod
    def default(cls, name: str) -> Any:
        value = next(f.default for f in fields(cls) if f.name == name)
        return None if value is MISSING else value

    @classmethod
    def from_mapping(cls, values: Any, **overrides: Any) -> Any:
        """The fields found among ``values`` (a dict or an object with attributes), unknown keys ignored."""
        get = values.get if isinstance(values, dict) else lambda key, default: getattr(values, key, default)
        found = {name: get(name, cls.default(name)) for name in cls.names()}
        return cls(**{**found, **overrides})

    def given(self) -> dict[str, Any]:
        """The fields that differ from their defaults (what a user actually chose)."""
        return {name: getattr(self, name) for name in self.names() if getattr(self, name) != self.default(name)}


@dataclass(frozen=True)
class EncoderOptions(Declared):
    """Everything that decides which model runs and how its output is pooled (not per-call options)."""

    # fmt: off
    model: str | os.PathLike | None = option(None, OptionInfo(
        "model folder (sentence-transformers or Hugging Face layout) or Hub id org/name, downloaded once "
        "(default: the bundled all-MiniLM-L6-v2)", flag="--model", metavar="MODEL"))
    revision: str | None = option(
        None, OptionInfo("Hub revision (branch, tag or commit) of a Hub id --model", flag="--revision"))
    cache_dir: str | None = option(None, OptionInfo(
        "where Hub models are cached (default: HF_HUB_CACHE / HF_HOME)", flag="--cache-dir", metavar="DIR"))
    pooling: Any = option("auto", OptionInfo(
        "strategy or list to concatenate, e.g. mean, cls, mean,max (default: auto = the model's config)",
        flag="--pooling"))
    normalize: bool | None = option(None, OptionInfo(
        "L2-normalise the vectors (default: as the model's config says)", flag="--normalize", kind="bool"))
    truncate_dim: int | None = option(None, OptionInfo(
        "keep the first D dimensions (Matryoshka)", flag="--dim", metavar="D", kind="positive_int"))
    max_length: int | None = option(None, OptionInfo(
        "truncate texts to this many tokens (default: the model's max_seq_length)", flag="--max-length",
        metavar="TOKENS", kind="positive_int"))
    device: str | None = option(None, OptionInfo(
        "torch device, e.g. cpu, cuda, cuda:1, mps (default: cuda if available)", flag="--device"))
    dtype: str | None = option(None, OptionInfo(
        "weights dtype (default: float32)", flag="--dtype",
        choices=("float32", "float16", "bfloat16", "float64", "auto")))
    long_documents: str = option("truncate", OptionInfo(
        "texts longer than max_length: truncate (default), or windows = overlapping windows, every token "
        "pooled once from the window where it is most central", flag="--long-documents",
        choices=LONG_DOCUMENT_MODES))
    window_stride: int | None = option(None, OptionInfo(
        "tokens from one window's start to the next's (default: half a window); must be below the window",
        flag="--window-stride", metavar="TOKENS", kind="positive_int"))
    runtime: str = option("torch", OptionInfo(
        "model runtime: torch (transformers) or onnx (ONNX Runtime; needs only tokenpool[onnx])",
        flag="--runtime", choices=RUNTIME_NAMES))
    onnx_file: str | None = option(None, OptionInfo(
        "ONNX file for --runtime onnx: a name in the folder's onnx/ (e.g. model_O3.onnx, "
        "model_qint8_avx512.onnx) or a path (default: onnx/model.onnx, else an export cached once)",
        flag="--onnx-file", metavar="FILE"))
    add_eos: bool | None = option(None, OptionInfo(
        "append the EOS token (default: for last-token pooling when the tokenizer does not)"))
    trust_remote_code: bool = option(False, OptionInfo(
        "run Python code the model folder names in an 'auto_map' (default: refuse such folders)",
        flag="--trust-remote-code", kind="bool"))
    # fmt: on

    def check(self) -> EncoderOptions:
        """These options, checked without reading the model folder (so a bad value fails before any load), with
        every integer option a Python int (numpy's integers are taken; a bool is no integer)."""
        from ..core.pooling import check_truncate_dim
        from ..core.strategies import check_combination, is_auto, parse_strategies
        from ..errors import OptionError, check_int
        from .safety import check_bool_option

        if self.runtime not in RUNTIME_NAMES:
            raise OptionError(f"runtime must be {' or '.join(map(repr, RUNTIME_NAMES))}, got {self.runtime!r}")
        if self.onnx_file is not None and self.runtime != "onnx":
            raise OptionError(f"{spell('onnx_file', str(self.onnx_file))} needs {spell('runtime', 'onnx')} "
                              f"(the runtime is {self.runtime!r})")  # fmt: skip
        check_bool_option("trust_remote_code", self.trust_remote_code)
        for name, kinds in (("revision", str), ("cache_dir", (str, os.PathLike))):  # (a local folder reads neither)
            if getattr(self, name) is not None and not isinstance(getattr(self, name), kinds):
                raise TypeError(f"{name} must be a {'str' if kinds is str else 'folder path'} or None, "
                                f"got {type(getattr(self, name)).__name__}")  # fmt: skip
        if not is_auto(self.pooling):
            check_combination(parse_strategies(self.pooling))
        for name in ("normalize", "add_eos"):
            if getattr(self, name) is not None:
                check_bool(name, getattr(self, name))
        checks = {
            "truncate_dim": check_truncate_dim,
            "max_length": lambda value: check_int(value, "max_length"),
            "window_stride": lambda value: check_int(value, "window_stride", error=OptionError),
        }
        ints = {name: None if getattr(self, name) is None else check(getattr(self, name)) for name, check in checks.items()}
        check_dtype(self.dtype)
        if self.device is not None:  # torch's own parse where torch runs it (an int GPU index too), else the runtime's
            torch_parse = self.runtime == "torch" and importlib.util.find_spec("torch") is not None
            (parse_device if torch_parse else device_parts)(self.device)  # (no device is used, none need be present)
        if self.long_documents not in LONG_DOCUMENT_MODES:
            raise OptionError(f"long_documents must be one of {LONG_DOCUMENT_MODES}, "
                              f"got {shown_value(self.long_documents, short=True)}")
        return replace(self, **ints)
