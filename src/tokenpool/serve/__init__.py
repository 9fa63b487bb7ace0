"""`tokenpool serve`: an embedding server with OpenAI- and TEI-compatible endpoints and dynamic batching
(``pip install 'tokenpool[serve]'``; docs/architecture.md lists its modules). Nothing heavy is imported until
a name below is used."""

from __future__ import annotations

from ..errors import lazy_names

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
__getattr__, __dir__ = lazy_names(globals(), _LAZY)
