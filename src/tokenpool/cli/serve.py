"""``tokenpool serve``: an embedding server (OpenAI and TEI endpoints); the command lives in `tokenpool.serve.cli`."""

from __future__ import annotations

from typing import Any

from ..serve.cli import run
from .common import add_model_group

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    from ..serve.cli import add_parser as add_serve_parser

    add_serve_parser(commands, add_model_group)
