"""The model runtimes, one `Runtime` entry each (its config and tokenizer reader, its runner factory, what it
cannot run). A new runtime is one entry here, its name in `tokenpool.model.options.RUNTIME_NAMES` (which the
command line lists without importing this module)."""

from __future__ import annotations

from .onnx import ONNX_RUNTIME
from .runners import TORCH_RUNTIME, Runtime

__all__ = ["RUNTIMES", "Runtime"]

RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (TORCH_RUNTIME, ONNX_RUNTIME)}
