"""Running the app with uvicorn: in the foreground with a SIGTERM drain (`serve_forever`), or in a background
thread for notebooks and tests (`start_server`)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from ..errors import OptionError
from ..model.options import spell
from .app import create_app
from .runner import Runner
from .service import Service
from .settings import HOST, LOG_LEVEL, PORT, ServeSettings

logger = logging.getLogger("tokenpool.serve")

__all__ = ["RunningServer", "bind", "serve_forever", "start_server"]


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: a free one); OSError naming the address if taken."""
    if not (isinstance(host, str) and host.strip()):  # "" is every interface to the OS: not what was asked
        raise OptionError(f"{spell('host')} must name an address, got {host!r} (an unset variable?): 127.0.0.1 for this machine "
                          "only, 0.0.0.0 for every interface")  # fmt: skip
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains: new embedding requests get 503 while queued and
    running ones finish; then the server stops and the process exits 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self.on_ready: Callable[[], None] | None = None  # called once the server listens
        self._idle_ticks = 0

    def handle_exit(self, sig: int, frame: Any) -> None:  # runs in the main thread, between bytecodes
        if self.service.draining or not self.started:
            self.should_exit = True
            self.force_exit = self.service.draining
            return
        self.service.begin_drain()
        print("tokenpool serve: draining (new requests get 503); a second signal stops at once",
              file=sys.stderr)  # fmt: skip

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if not self.service.draining:
            return False
        if self.service.idle:
            self._idle_ticks += 1
            return self._idle_ticks >= 2 and self._stop_within(self.service.drain_left())  # (two ticks, 0.1 s apart)
        self._idle_ticks = 0
        if self.service.drain_left() <= 0:  # (the drain began: a signal, `RunningServer.drain`, `begin_drain`)
            logger.error("drain timeout: stopping with %d requests in flight", self.service.in_flight)
            self.service.expire()  # answered 503 now, before uvicorn's own graceful timeout cancels them
            return self._stop_within(0.0)
        return False

    def _stop_within(self, seconds: float) -> bool:
        """True (stop serving), with uvicorn's own graceful wait cut to what is left of the drain (half a second at
        least, for the 503s just answered to reach their clients): --drain-timeout bounds the whole wait."""
        self.config.timeout_graceful_shutdown = max(seconds, 0.5)  # (requests still being read: cancelled, 503)
        return True


def _protocol(read_timeout: float) -> type:
    """uvicorn's httptools protocol, closing a connection whose request line and headers have not all arrived
    within ``read_timeout`` seconds of its opening or of the request's first byte: uvicorn itself waits forever
    for a first request, so idle and slowloris connections would pile up. One timer a connection at a time, not
    one a request: when it fires it closes the connection, or waits on for headers awaited since later."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: Any = None
        _awaited: float | None = None  # loop time since when headers have been awaited (None: none are)

        def _arm(self, delay: float) -> None:
            self._header_timer = self.loop.call_later(delay, self._expire)

        def _expire(self) -> None:
            self._header_timer = None
            if self._awaited is None:  # no headers awaited: the next request's first byte arms it again
                return
            left = self._awaited + read_timeout - self.loop.time()
            if left > 0:
                self._arm(left)
            elif not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._awaited = self.loop.time()
            self._arm(read_timeout)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._awaited is None:  # (a connection's first request: awaited since the connection opened)
                self._awaited = self.loop.time()
            if self._header_timer is None:
                self._arm(read_timeout)

        def on_headers_complete(self) -> None:
            self._awaited = None
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def _server(runner: Runner, settings: ServeSettings | None, log_level: str) -> _DrainingServer:
    """The app serving ``runner`` (`create_app`) in a draining uvicorn server."""
    settings = settings or ServeSettings()
    if isinstance(log_level, str) and log_level.lower() not in uvicorn.config.LOG_LEVELS:  # (uvicorn: a KeyError)
        raise OptionError(f"log_level must be one of {', '.join(uvicorn.config.LOG_LEVELS)}, got {log_level!r}")
    app = create_app(runner, settings)
    config = uvicorn.Config(app, http=_protocol(settings.read_timeout), log_level=log_level, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
                            server_header=False)  # fmt: skip
    return _DrainingServer(config, app.service)


def serve_forever(runner: Runner, settings: ServeSettings | None = None, *, host: str = HOST,
                  port: int = PORT, log_level: str = LOG_LEVEL,
                  sock: socket.socket | None = None) -> int:  # fmt: skip
    """Serve until SIGTERM/SIGINT (then drain); prints ``tokenpool serve: listening on URL`` to stderr once
    ready. Returns 0 after a clean drain."""
    server = _server(runner, settings, log_level)
    sock = sock or bind(host, port)
    url, names = _url(sock), ", ".join(server.service.names)
    server.on_ready = lambda: print(f"tokenpool serve: listening on {url} (model {names})", file=sys.stderr,
                                    flush=True)  # fmt: skip
    server.run(sockets=[sock])
    if not server.started:
        raise RuntimeError("the server did not start (see the log above)")
    if not all(model.batcher.stopped for model in server.service.models):
        # a forward pass outlived --drain-timeout (or a second signal came): leaving the interpreter while a
        # worker thread is inside torch aborts the process ("terminate called without an active exception")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


class RunningServer:
    """A server running in a background thread of this process; ``url``, ``service``, `stop`."""

    def __init__(self, runner: Runner, settings: ServeSettings | None, host: str, port: int,
                 log_level: str) -> None:  # fmt: skip
        self._server = _server(runner, settings, log_level)
        self.service: Service = self._server.service
        self.settings, self.app = self.service.settings, self._server.config.app
        self._sock = bind(host, port)
        self.url = _url(self._sock)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="tokenpool-serve", daemon=True)  # fmt: skip

    def start(self, timeout: float = 30.0) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True  # (a thread still starting ends once it can)
                self._sock.close()  # (the port: no server will listen on it)
                raise RuntimeError("the server thread did not start")
            time.sleep(0.01)
        return self

    def drain(self) -> None:
        """What SIGTERM does to `serve_forever`: new requests get 503, the rest finish, then the server stops."""
        self._server.handle_exit(15, None)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server; True once its thread has ended, False (and a warning) when it still runs after
        ``timeout`` seconds (a forward pass that does not end, say)."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("the server thread is still running %s s after stop() was called", timeout)
            return False
        return True

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(runner: Runner, settings: ServeSettings | None = None, *, host: str = HOST,
                 port: int = 0, log_level: str = LOG_LEVEL) -> RunningServer:  # fmt: skip
    """Start a server in a background thread (port 0: a free port) and return once it accepts requests."""
    return RunningServer(runner, settings, host, port, log_level).start()
