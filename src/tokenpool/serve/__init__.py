"""`tokenpool serve`: an embedding server with OpenAI- and TEI-compatible endpoints and dynamic batching
(``pip install 'tokenpool[serve]'``; docs/architecture.md lists its modules). Nothing heavy is imported until
a name below is used."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "create_app": "tokenpool.serve.app",
    "ServeSettings": "tokenpool.serve.settings",
    "Batcher": "tokenpool.serve.batcher",
    "EncoderRunner": "tokenpool.serve.runner",
    "Runner": "tokenpool.serve.runner",
    "serve_forever": "tokenpool.serve.server",
    "start_server": "tokenpool.serve.server",
    "RunningServer": "tokenpool.serve.server",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tokenpool.serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
