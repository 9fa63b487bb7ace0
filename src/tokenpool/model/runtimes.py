"""The model runtimes, one `Runtime` entry each (its config and tokenizer reader, its runner factory, what it
cannot run). A new runtime is one entry here, its name in `tokenpool.model.options.RUNTIME_NAMES` (which the
command line lists without importing this module)."""

from __future__ import annotations

from ..errors import OptionError
from .onnx import ONNX_RUNTIME
from .runners import TORCH_RUNTIME, Runtime

__all__ = ["RUNTIMES", "Runtime", "runtime_named"]

RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (TORCH_RUNTIME, ONNX_RUNTIME)}


def runtime_named(name: str) -> Runtime:
    """The registry entry ``name``; `OptionError` listing the runtimes otherwise."""
    if name not in RUNTIMES:
        raise OptionError(f"runtime must be {' or '.join(map(repr, RUNTIMES))}, got {name!r}")
    return RUNTIMES[name]
