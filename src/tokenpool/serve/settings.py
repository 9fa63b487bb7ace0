"""`ServeSettings`: the limits and batching of one server (the ``tokenpool serve`` options), checked once."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import OptionError, check_bool, check_int
from ..model.options import spell

__all__ = ["HOST", "LOG_LEVEL", "LOG_LEVELS", "OPENAI_MAX_INPUTS", "PORT", "ServeSettings"]

OPENAI_MAX_INPUTS = 2048
# where and how `server.serve_forever` listens unless told (the ``tokenpool serve`` defaults): this machine only
HOST, PORT = "127.0.0.1", 8080
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")  # uvicorn's, as --log-level takes them
LOG_LEVEL = "warning"


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server (the ``tokenpool serve`` options)."""

    api_key: str | None = None
    served_model_names: tuple[str, ...] = ()  # empty: the runner's name
    strict_model_name: bool = False  # refuse (404) a `model` the server does not serve, as OpenAI does
    auto_truncate: bool = False  # TEI routes cut inputs over the window unless a request sends "truncate": false
    max_batch_tokens: int = 16384
    max_batch_requests: int = 64
    batch_size: int = 32
    max_wait_ms: float = 2.0
    max_wait_busy_ms: float = 16.0  # the wait (if longer than max_wait_ms) while answered requests may come back
    max_queue: int = 4096
    max_inputs: int = OPENAI_MAX_INPUTS
    max_input_chars: int = 65536
    max_document_chars: int = 1 << 20  # a whole document (late chunking, chunks, windows)
    max_chunks: int = 4096  # chunk vectors one request may produce (/embed_documents, late chunking)
    max_body_bytes: int = 16 * 1024 * 1024
    drain_timeout: float = 30.0
    read_timeout: float = 10.0  # a request's headers, then its body, must each arrive within this
    workers: int | None = None  # forward passes run at once; None: the runner's parallel_passes

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_batch_requests", "batch_size", "max_queue", "max_inputs",
                     "max_input_chars", "max_document_chars", "max_chunks", "max_body_bytes"):  # fmt: skip
            check_int(getattr(self, name), name, error=OptionError)
        check_int(self.workers, "workers", optional=True, error=OptionError)
        for name in ("max_wait_ms", "max_wait_busy_ms", "drain_timeout", "read_timeout"):
            value, longest = getattr(self, name), threading.TIMEOUT_MAX * (1000 if name.endswith("_ms") else 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= longest:
                raise OptionError(f"{spell(name)} must be a number from 0 to {longest:.0f}, got {value!r}")
        if self.read_timeout == 0:  # every connection would be closed before its request arrived
            raise OptionError(f"{spell('read_timeout')} must be above 0 seconds: with 0 the server closes every "
                              "connection at once")  # fmt: skip
        if self.max_queue < self.max_inputs:
            raise OptionError(f"{spell('max_queue', self.max_queue)} must be at least "
                              f"{spell('max_inputs', self.max_inputs)}, or a request of {spell('max_inputs')} "
                              "inputs could never be queued")  # fmt: skip
        if self.api_key is not None and not (isinstance(self.api_key, str) and self.api_key):
            raise OptionError("api_key must be a non-empty string or None")
        if self.api_key is not None and self.api_key != self.api_key.strip():  # HTTP trims header values
            raise OptionError(f"{spell('api_key')} begins or ends with whitespace (a newline from a file, say); "
                              "no client can send such a key, so every request would get 401")  # fmt: skip
        odd = next((k for k, char in enumerate(self.api_key or "") if not " " <= char <= "~"), None)
        if odd is not None:  # (no character of the key is shown)
            raise OptionError(f"{spell('api_key')} has a character outside printable ASCII at position {odd}: an "
                              "HTTP header carries printable ASCII only (the openai client cannot send it, others send other "
                              "bytes), so every request would get 401; use letters, digits and punctuation")  # fmt: skip
        for name in ("strict_model_name", "auto_truncate"):  # a string ("false") would be true
            # (the project's one bool check; numpy's as Python's)
            object.__setattr__(self, name, check_bool(name, getattr(self, name), or_none=False, error=OptionError))
        names = self.served_model_names
        if not isinstance(names, (list, tuple)):  # a string would be served as one name per character
            raise OptionError(f"served_model_names must be a list or tuple of names, got {names!r}")
        names = tuple(names)
        if not all(isinstance(n, str) and n for n in names):
            raise OptionError(f"{spell('served_model_names')} must be non-empty strings, got {names!r}")
        object.__setattr__(self, "served_model_names", names)

    def check_keyed(self, keyed: bool) -> None:
        """Refuse ``served_model_names`` beside models served by name (``keyed``: a mapping of names to runners,
        ``--model NAME=FOLDER``), which are served under those names: the names are for a server's one runner."""
        if keyed and self.served_model_names:
            raise OptionError("served_model_names (--served-model-name) names the model of a server given one runner "
                              "(--model FOLDER); models given by name (a mapping of names to runners, --model "
                              "NAME=FOLDER) are served under their names: give the names one way")  # fmt: skip
