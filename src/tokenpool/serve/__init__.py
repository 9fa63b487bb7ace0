"""`tokenpool serve`: an embedding server with OpenAI- and TEI-compatible endpoints and dynamic batching.

Needs the ``serve`` extra (``pip install 'tokenpool[serve]'``: starlette, uvicorn, prometheus-client, orjson)
and the ``encode`` extra for real models. Submodules: `app` (the ASGI app and its routes), `http` (errors, API key,
bounded body read), `fields` (request field checks), `settings` (the server options), `service` (models, name policy, finishing), `openai`,
`tei` and `documents` (the protocols), `batcher` (a queue and model worker per model), `runner` (the model
side), `metrics`, `server` (uvicorn, header timeout, drain on SIGTERM); the command is `tokenpool.cli.serve`.
Nothing heavy is imported until a name below is used.
"""

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
