"""Stop 47's hunt in `tokenpool serve`: what a long-running server, its clients and its protocols run into.

Servers bind 127.0.0.1 on free ports and are stopped here; the fake runner (`serve_fakes.FakeRunner`) or a tiny
random BERT keeps them fast."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from tokenpool.serve import metrics as metrics_module  # noqa: E402
from tokenpool.serve.metrics import Metrics  # noqa: E402


def test_a_server_never_scraped_keeps_one_window_of_passes(monkeypatch):
    """The tokens-per-second window forgot old passes only when /metrics was scraped: a server nobody scraped
    kept a record of every forward pass since it started (memory growing without bound). Now each pass drops
    the records older than the window, and the gauge still reads the window's tokens."""
    clock = [0.0]
    monkeypatch.setattr(metrics_module.time, "monotonic", lambda: clock[0])
    model = Metrics(window=10.0).for_model("m")
    for _ in range(1000):
        clock[0] += 1.0
        model.observe_pass(inputs=1, requests=1, padded_tokens=4, tokens=3, seconds=0.01)
    assert len(model._recent) <= 11
    assert model.tokens_per_second() == pytest.approx(3 * 11 / 10.0)
