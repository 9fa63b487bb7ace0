"""Stop 60: a request caught by the SIGTERM drain's end gets the documented 503 (docs/serve.md: "requests
not answered by then get a 503"), never uvicorn's plain-text 500. The races are forced with events, not
timing: the request is held in its tokenisation (off the event loop) while the drain's deadline passes.
Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from serve_fakes import FakeRunner, post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

BIG = "word " * 7000  # over the server's 32,768 characters: tokenised in a thread, off the event loop


class HeldTokenizer(FakeRunner):
    """A FakeRunner whose tokenisation waits for ``release`` (``tokenizing`` says it began) and whose forward
    passes wait for ``gate`` (shut: a pass outlives the drain)."""

    def __init__(self) -> None:
        super().__init__(gate=threading.Event())
        self.tokenizing, self.release = threading.Event(), threading.Event()

    def tokenize(self, texts, prompt, truncation):
        self.tokenizing.set()
        self.release.wait(30)
        return super().tokenize(texts, prompt, truncation)


def _held_request(monkeypatch) -> tuple[HeldTokenizer, Any, threading.Thread, dict, threading.Event]:
    """A server of --drain-timeout 0 with one /embed request in flight, held in its tokenisation, and the
    drain begun (SIGTERM's `RunningServer.drain`) → (runner, server, sender, answer, expired: set once the
    drain's deadline passed and every request waiting for the model was answered)."""
    runner = HeldTokenizer()
    server = start_server(runner, ServeSettings(drain_timeout=0))
    expired = threading.Event()
    expire = server.service.expire
    monkeypatch.setattr(server.service, "expire", lambda: (expire(), expired.set()))
    answer: dict = {}
    body = {"inputs": [BIG], "truncate": True}
    sender = threading.Thread(target=lambda: answer.update(r=post(server, "/embed", body)))
    sender.start()
    assert runner.tokenizing.wait(20)
    server.drain()
    return runner, server, sender, answer, expired


def _assert_drain_503(answer) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error_type"] == "Unhealthy" and answer.headers["retry-after"]


def test_a_request_reaching_its_model_after_the_drain_deadline_gets_503_and_runs_no_pass(monkeypatch):
    """The CI flake of test_serve's SIGTERM test (a 500 where 200 or 503 was expected): the signal came while
    its request was still being read and tokenised; the drain's deadline answered every request *waiting*
    (none), then the request queued its pass after the deadline and waited on it until uvicorn's graceful
    timeout cancelled it into a plain-text 500. It now gets the drain's 503 at once, and no pass starts after
    the deadline."""
    runner, server, sender, answer, expired = _held_request(monkeypatch)
    try:
        assert expired.wait(20)  # the deadline passed while the request was tokenised
        runner.release.set()
        sender.join(30)
        _assert_drain_503(answer["r"])
        assert "--drain-timeout" in answer["r"].json()["error"]
        assert not runner.started.is_set(), "a forward pass began after the drain's deadline"
    finally:
        runner.release.set()
        runner.gate.set()
        server.stop()


def test_a_request_cancelled_by_the_shutdown_gets_503_not_500(monkeypatch):
    """A request still being read or tokenised when uvicorn's graceful shutdown timeout ends is cancelled;
    uvicorn answered the cancelled request "Internal Server Error" (500, plain text). It is the drain's 503
    now."""
    runner, server, sender, answer, _ = _held_request(monkeypatch)
    try:
        sender.join(30)  # the tokenisation is held until the answer came: the shutdown cancelled the request
        _assert_drain_503(answer["r"])
    finally:
        runner.release.set()
        runner.gate.set()
        server.stop()


class _Draining:
    """A service draining with ``left`` seconds of its --drain-timeout left, idle or not."""

    def __init__(self, left: float, idle: bool) -> None:
        self.draining, self.idle, self.in_flight, self.left, self.expired = True, idle, 0 if idle else 1, left, False

    def drain_left(self) -> float:
        return self.left

    def expire(self) -> None:
        self.expired = True


@pytest.mark.parametrize(("left", "idle", "graceful"), [(-0.1, False, 0.5), (12.0, True, 12.0), (0.2, True, 0.5)])
def test_the_drain_timeout_bounds_uvicorns_own_graceful_wait(left, idle, graceful):
    """docs/serve.md: "--drain-timeout bounds the whole wait". When the drain stopped the server, uvicorn still
    gave requests being read (a stalled upload) its graceful timeout, set once to the whole --drain-timeout: with
    the default 30 s a shutdown could take a minute. That wait is now what is left of the drain (half a second at
    least, for the 503s just answered); requests still being read then are cancelled and answered 503."""
    import asyncio

    from tokenpool.serve import server as server_module

    server = server_module._server(FakeRunner(), ServeSettings(drain_timeout=30), "warning")
    assert server.config.timeout_graceful_shutdown == 30  # (before a drain: the whole timeout, as before)
    server.service = service = _Draining(left, idle)
    ticks = [asyncio.run(server.on_tick(1)) for _ in range(2)]
    assert ticks[-1] is True and service.expired is (not idle)
    assert server.config.timeout_graceful_shutdown == pytest.approx(graceful)
