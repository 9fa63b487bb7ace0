"""Stop 67 (serve): the server as a demanding user meets it. References are independent: the fake model's
`fake_vector` of each text, or what a request alone gets. Servers bind 127.0.0.1 on free ports and are stopped
here."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, fake_vector, post, submit_texts, wait_for  # noqa: E402

from tokenpool.serve.batcher import Batcher  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402


class Failing(FakeRunner):
    """A model whose forward pass raises whenever it holds a text with "boom" (an input that crashes a runtime, a
    device assert): ``error`` says what it raises."""

    error: Exception = RuntimeError("device-side assert triggered")

    def embed(self, tokens):
        if any("boom" in text for text in self.row_texts(tokens)):
            raise self.error
        yield from super().embed(tokens)


@pytest.mark.parametrize("error", [RuntimeError("device-side assert triggered"), ValueError("bad token in 'boom'")])
def test_a_request_that_fails_the_shared_forward_pass_does_not_fail_the_others(error):
    """Requests batched into one forward pass with a request that makes the model raise all got its error (a 500,
    or, for an error that reads as bad input, a 422 quoting the other client's input): one bad request poisoned
    every request it shared a pass with. Now the pass is run again a request at a time, and only that request
    fails; the others get the vectors they get alone."""
    runner = Failing()
    runner.error = error
    batcher = Batcher(runner, ServeSettings(max_batch_requests=8, max_wait_ms=1000, max_wait_busy_ms=1000))
    batcher.start()
    try:
        jobs = [submit_texts(batcher, texts) for texts in (["fine words"], ["boom here", "and more"], ["x", "y z"])]
        for _, done in jobs:
            assert done.wait(20)
        assert len(runner.passes) == 2  # (the fake records passes that succeed: each request alone, two passes)
        (good, _), (bad, _), (other, _) = jobs
        assert bad.error is error
        assert good.error is None and other.error is None
        np.testing.assert_array_equal(good.rows, [fake_vector("fine words", runner.width)])
        np.testing.assert_array_equal(other.rows, [fake_vector(t, runner.width) for t in ("x", "y z")])
        assert batcher.alive
    finally:
        assert batcher.close(10)


def test_the_others_of_a_failed_shared_pass_get_200_over_http():
    gate = threading.Event()
    runner = Failing(gate=gate)
    with start_server(runner, ServeSettings(max_batch_requests=8, workers=1)) as server:
        results: dict[str, httpx.Response] = {}

        def send(name: str, text: str) -> None:
            results[name] = post(server, "/embed", {"inputs": [text]})

        sent = {"blocker": "first in", "good": "fine words", "bad": "boom", "also": "more text"}
        threads = [threading.Thread(target=send, args=item) for item in sent.items()]
        threads[0].start()
        assert runner.started.wait(20)  # the blocker's pass holds the worker at the gate ...
        for thread in threads[1:]:
            thread.start()
        batcher = server.service.models[0].batcher
        wait_for(lambda: batcher.queued_requests == 3)  # ... while the other three queue for the next pass
        gate.set()
        for thread in threads:
            thread.join(30)
        assert results["bad"].status_code == 500 and results["bad"].json()["error_type"] == "Backend"
        for name in ("blocker", "good", "also"):
            assert results[name].status_code == 200, results[name].text
            np.testing.assert_allclose(results[name].json(), [fake_vector(sent[name], runner.width)], rtol=1e-6)
