"""tokenpool's exceptions, and the one rule that sorts any exception into "bad input" or "failed".

Every bad-input error derives from `TokenpoolError`, a `ValueError` (some also from a builtin users catch,
e.g. `FileNotFoundError`); messages are one line. Front ends map `classify` once: the CLI to exit 2 / 1, an
HTTP server to 4xx / 5xx, `tokenpool.integrations.ray` to the worker errors it rebuilds."""

from __future__ import annotations

import importlib
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

Outcome = Literal["bad_input", "failed"]
BAD_INPUT: Outcome = "bad_input"
FAILED: Outcome = "failed"

# optional dependencies whose absence `install_hint` can name the extra for
_EXTRAS = {
    "torch": "encode", "transformers": "encode", "tqdm": "encode", "onnxruntime": "onnx", "onnx": "onnx",
    "tokenizers": "onnx", "scipy": "sparse", "semantic_text_splitter": "chunking", "bm25s": "bm25", "Stemmer": "bm25",
    "ray": "ray",
}  # fmt: skip


def is_int(value: object) -> bool:
    """Whether ``value`` is a whole number as tokenpool's options take one: any `numbers.Integral` (numpy's
    integers too, as shapes give them) but a bool; never a float, even 2.0 (a computed 2.9999 is no count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    value: Any, name: str, *, minimum: int = 1, optional: bool = False, error: type[Exception] = ValueError
) -> int | None:
    """``value`` as a Python int when it is a whole number (`is_int`) of at least ``minimum``, or None when
    ``optional`` and it is None; else ``error`` naming ``name`` and the value."""
    if optional and value is None:
        return None
    if not is_int(value) or value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise error(f"{name} must be {wanted}{' or None' if optional else ''}, got {shown_value(value)}")
    return int(value)


def check_bool(name: str, value: Any, *, or_none: bool = True, error: type[Exception] = TypeError) -> bool:
    """``value`` as a bool when it is one (numpy's included: "no" is no False); else ``error`` naming ``name``
    (``or_none``: the option also takes None, which its caller handles)."""
    import numpy as np  # (here: the command line's --help loads no numpy)

    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be True{', False or None' if or_none else ' or False'}, got {value!r}")
    return bool(value)


# what `parse_int` and `parse_number` read
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def shown_int(value: int) -> str:
    """An integer for a message: whole up to 24 characters, else its first and last ten digits and its count
    (one past Python's 4,300-digit str() limit by its size alone, where str() would raise)."""
    if abs(value).bit_length() > 14_000:
        return f"{'a negative' if value < 0 else 'an'} integer of about {int(abs(value).bit_length() * 0.30103)} digits"
    text = str(int(value))
    return text if len(text) <= 24 else f"{shown_digits(text)} ({len(text.lstrip('-'))} digits)"


def shown_digits(text: str) -> str:
    """A number's text for a message: whole up to 24 characters, else its first and last ten."""
    return text if len(text) <= 24 else f"{text[:10]}…{text[-10:]}"


def cut(text: str, limit: int = 60) -> str:
    """``text`` for a message: its first ``limit`` characters, a cut marked (a cut integer would be another one)."""
    return text if len(text) <= limit else text[:limit] + "…"


def shown_value(value: Any, form: Callable[[Any], str] = repr, *, short: bool = False) -> str:
    """``form(value)`` for a message, but `shown_int`'s short form for an integer of 25 or more digits and, when
    ``short``, a str `cut` (a caller's name or spec of 5,000 characters is not echoed whole; a path is shown whole)."""
    if short and isinstance(value, str):
        return form(cut(value))
    return shown_int(value) if is_int(value) and abs(int(value)) >= 10**24 else form(value)  # (numpy: no overflow)


def parse_int(text: str) -> int | None:
    """``text`` as an int when it is ASCII digits with an optional sign, else None: the one reader of integers
    written as text (options, files). Python's int() alone would also read "1_0" as 10, other scripts' digits
    ("١٠") and surrounding whitespace, and refuse over 4300 digits (Decimal has no such limit)."""
    if not _INTEGER.fullmatch(text):
        return None
    from decimal import Decimal

    return int(Decimal(text))


def env_flag(*names: str) -> bool:
    """Whether any of the environment variables ``names`` is on: 1, true, yes or on (any case); 0, false, an empty
    value or anything else is off (``TOKENPOOL_DEBUG=0`` is no request for tracebacks)."""
    import os

    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in names)


def lone_surrogate(text: str) -> str | None:
    """Where ``text`` holds a lone surrogate (a JSON ``\\ud800`` escape decodes to one), as "a lone surrogate
    (U+D800 at character 3)", else None: no text, no tokenizer can encode it, no parquet file hold it. The one
    test; each reader says where the text came from."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate (U+{ord(text[exc.start]):04X} at character {exc.start + 1})"
    return None


def parse_number(text: str, *, special: bool = False) -> float | None:
    """``text`` as a float when it is a plain decimal (ASCII digits, optional sign, point and exponent), or with
    ``special`` also inf / infinity / nan (signed, any case: for a reader whose range check names them), else
    None: the one reader of numbers written as text. Python's float() alone would also read "4_5" as 45, other
    scripts' digits and surrounding whitespace. One beyond float64's range reads as ±inf or 0."""
    plain = _DECIMAL.fullmatch(text) or (special and _SPECIAL.fullmatch(text))
    return float(text) if plain else None


def option_integer(text: str) -> int:
    """An argparse type: `parse_int`'s integers, else argparse's error "expected an integer, got 'TEXT'"."""
    return option_value(parse_int(text), "an integer", text)


def option_number(text: str) -> float:
    """An argparse type: `parse_number`'s numbers, inf and nan included (for the range checks to name), else
    argparse's error "expected a number, got 'TEXT'"."""
    return option_value(parse_number(text, special=True), "a number", text)


def option_value(value: Any, kind: str, text: str) -> Any:
    """``value``, an argparse type's reading of ``text``; None: the one refusal of every command's number flags,
    argparse's error "expected KIND, got 'TEXT'" (a long text cut)."""
    if value is None:
        import argparse

        raise argparse.ArgumentTypeError(f"expected {kind}, got {shown_value(text, short=True)}")
    return value


class TokenpoolError(ValueError):
    """Bad input to tokenpool (a file, an option, a model folder); the message says what and where."""


class CorpusError(TokenpoolError):
    """A user-facing problem with an input or output file; the message is one line, fit for the CLI."""


class ConfigError(TokenpoolError):
    """A model folder's configuration files are malformed or contradict each other."""


class OptionError(TokenpoolError):
    """An option value that cannot be used (out of range, unknown name, a combination that is not allowed)."""


class ModelFolderError(TokenpoolError, FileNotFoundError):
    """A model folder that does not exist (or the bundled model, when it is not installed)."""


def refuse_empty_model(model: Any) -> None:
    """Refuse an empty model ('') with `ModelFolderError`: ``Path("")`` is ".", a folder the user never named."""
    if model == "":
        raise ModelFolderError(f"{model!r}: no such model folder")


class ModelOutputError(RuntimeError):
    """The model produced NaN or inf for a text (a half-precision overflow, broken weights): "failed", not bad
    input. ``index``: the text's position in the call that raised it; `at` names it in the caller's terms."""

    def __init__(self, label: str, *, index: int | None = None, hint: str = "") -> None:
        super().__init__(f"the model produced non-finite values (NaN or inf) for {label}{hint}")
        self.index, self.hint = index, hint

    def at(self, label: str, index: int | None = None) -> ModelOutputError:
        """The same error naming the text as ``label`` (a line of a file, a document name)."""
        return ModelOutputError(label, index=index, hint=self.hint)


_BAD_INPUT = (TokenpoolError, ValueError, TypeError, OSError, ImportError)


def classify(exc: BaseException | type[BaseException]) -> Outcome:
    """``"bad_input"`` when ``exc`` (an exception or its class) is a ``ValueError``, ``TypeError``,
    ``OSError`` or ``ImportError`` (what tokenpool was given is to blame), else ``"failed"`` (a bug, …)."""
    kind = exc if isinstance(exc, type) else type(exc)
    return BAD_INPUT if issubclass(kind, _BAD_INPUT) else FAILED


_ENDS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what ends a line (`str.splitlines`)
LINE_ENDS = {ord(end): repr(end)[1:-1] for end in _ENDS}  # each as Python escapes it
# group 1: line ends between two word characters (a value's own, e.g. a file name's); else a line end and the
# whitespace around it (a line break of the message: "memory.\nTried", "boom()\nValueError", "  File ...")
_LINE_END = re.compile(f"(?<=\\w)([{_ENDS}]+)(?=\\w)|\\s*[{_ENDS}]\\s*")


def shown_name(text: str) -> str:
    """A name the user gave (an argument, a path) for a message: as given, but quoted as Python writes it
    (``'a\\nb'``) when it holds a backslash or a character that does not print, so that a line break and a typed
    backslash-n read differently (`one_line` writes a line break inside a value as ``\\n`` too)."""
    return text if text.isprintable() and "\\" not in text else repr(text)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, its type name when it has none: a line end with the whitespace
    around it becomes one space, one between two word characters is escaped (`LINE_ENDS`); other spaces stay."""
    text = (str(exc) or type(exc).__name__).strip()
    return _LINE_END.sub(lambda end: end[1].translate(LINE_ENDS) if end[1] else " ", text)


def require(module: str, message: str) -> Any:
    """The module ``module``, imported; when it is not installed a `ModuleNotFoundError` with ``message``
    (what needs it, how to install it), named for the module as `install_hint` reads it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModuleNotFoundError(message, name=module) from err


def lazy_names(namespace: dict[str, Any], table: Mapping[str, str]) -> tuple[Callable, Callable]:
    """PEP 562 ``__getattr__`` and ``__dir__`` (listing ``__all__``) for the names ``table`` maps to modules:
    a module is imported on first use (importing the package stays light), the value kept in ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace["__all__"])

    return __getattr__, __dir__


def install_hint(exc: BaseException) -> str | None:
    """``pip install 'tokenpool[EXTRA]'`` when ``exc`` is the ImportError of an optional dependency, else None."""
    extra = _EXTRAS.get(exc.name or "") if isinstance(exc, ImportError) else None
    return None if extra is None else f"pip install 'tokenpool[{extra}]'"


class UnsafeModelFolderError(TokenpoolError):
    """A model folder that would need tokenpool to run its code or unpickle its files, which it refuses by
    default (`trust_remote_code=True` opts in to a folder's Python code; pickled weights are never loaded)."""
