"""Stop 55 (serve2): the server under concurrency and over its lifecycle. Answers are compared with independent
references: the usage the server reported for the requests it served, or `Encoder.encode`. Servers bind
127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, metric_value, post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402


class FailingRunner(FakeRunner):
    """A FakeRunner whose forward pass fails (a lost device, say) when it holds the text "boom"."""

    def embed(self, tokens):
        if any("boom" in text for text in self.row_texts(tokens)):
            raise RuntimeError("device lost")
        yield from super().embed(tokens)


def test_a_failed_forward_pass_is_not_counted_as_embedded():
    """A pass that raised counted its inputs and tokens in tokenpool_inputs_total / tokenpool_tokens_total (and
    tokens/s) though every request in it got a 500: a server whose model had died showed a healthy throughput.
    Now the counters hold what was embedded: the served requests' usage."""
    with start_server(FailingRunner(), ServeSettings(max_batch_requests=1)) as server:
        served = post(server, "/v1/embeddings", {"input": ["a b", "c"]})
        assert served.status_code == 200, served.text
        for _ in range(3):
            failed = post(server, "/v1/embeddings", {"input": ["boom boom boom", "d e f g"]})
            assert failed.status_code == 500, failed.text
        assert metric_value(server, 'tokenpool_requests_total{endpoint="openai_embeddings",status="500"}') == 3
        assert metric_value(server, "tokenpool_inputs_total") == 2
        assert metric_value(server, "tokenpool_tokens_total") == served.json()["usage"]["prompt_tokens"]
        assert metric_value(server, "tokenpool_tokens_per_second") * 10 == pytest.approx(served.json()["usage"]["prompt_tokens"])


@pytest.mark.parametrize(("path", "body"), [("/embed", {"inputs": "a b"}), ("/v1/embeddings", {"input": "a b"})])
def test_an_app_whose_lifespan_never_ran_refuses_instead_of_hanging(path, body):
    """`create_app` under an ASGI server that runs no lifespan (uvicorn --lifespan off, a Starlette Mount,
    httpx's ASGITransport) never started its model workers: /health said 503, but an embedding request was queued
    for a worker that never comes and waited for ever. Now it is a 503 saying why."""
    import asyncio

    from tokenpool.serve.app import create_app

    app = create_app(FakeRunner())

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            health = await client.get("/health")
            return health, await asyncio.wait_for(client.post(path, json=body), 10)

    health, answer = asyncio.run(ask())
    assert health.status_code == 503
    assert answer.status_code == 503, answer.text
    assert "lifespan" in answer.text and "fake-model" in answer.text
    assert app.service.in_flight == 0 and app.service.models[0].batcher.queued == 0


def test_the_drain_timeout_bounds_the_whole_drain_and_the_workers_get_what_is_left(monkeypatch):
    """The drain answered its requests 503 at --drain-timeout, then the lifespan shutdown waited for the workers
    another whole --drain-timeout (a pass of 4 s stopped a server of drain_timeout=1 after 2.2 s): the workers now
    get what is left of the drain's one deadline (at least `WORKER_STOP_SECONDS`)."""
    import threading
    import time

    from serve_fakes import wait_for

    from tokenpool.serve import app as serve_app
    from tokenpool.serve.batcher import Batcher

    given: list[float] = []
    real_close = Batcher.close
    monkeypatch.setattr(Batcher, "close", lambda self, timeout=None: given.append(timeout) or real_close(self, timeout))
    gate = threading.Event()  # shut: the pass never finishes while the drain runs
    runner = FakeRunner(gate=gate)
    server = start_server(runner, ServeSettings(batch_size=4, drain_timeout=1.5))
    try:
        answer: dict = {}
        sender = threading.Thread(target=lambda: answer.update(r=post(server, "/embed", {"inputs": ["in flight"]})))
        sender.start()
        assert runner.started.wait(20)
        wait_for(lambda: server.service.in_flight == 1)
        began = time.monotonic()
        server.drain()
        sender.join(30)
        assert answer["r"].status_code == 503
        wait_for(lambda: bool(given), timeout=30)
        elapsed_at_close = time.monotonic() - began
        # what the workers were given: what was left of the 1.5 s drain (its floor, as it was spent), not 1.5 s more
        assert given[0] <= max(1.5 - elapsed_at_close, 0) + serve_app.WORKER_STOP_SECONDS + 0.05, given
        assert given[0] >= serve_app.WORKER_STOP_SECONDS
    finally:
        gate.set()
        server.stop()


def test_stop_says_whether_the_server_thread_ended(caplog):
    """`RunningServer.stop` returned nothing: a server whose thread was still running after the timeout (a pass
    that never ends) looked stopped."""
    import threading

    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    server = start_server(runner, ServeSettings(batch_size=4, drain_timeout=30))
    sender = threading.Thread(target=lambda: post(server, "/embed", {"inputs": ["held"]}), daemon=True)
    sender.start()
    assert runner.started.wait(20)
    server.drain()  # the pass waits on the gate: the drain waits for it
    with caplog.at_level("WARNING", logger="tokenpool.serve"):
        assert server.stop(0.3) is False
    assert "still running" in caplog.text
    gate.set()
    assert server.stop(30) is True
