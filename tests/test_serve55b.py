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
