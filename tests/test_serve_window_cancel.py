"""A single long document stops between its window passes once its request is cancelled: the window engine asks
a ``should_stop`` check before each forward pass (`Cancelled` when it says so), the server's check is the
batcher's cancellation (`Job.cancelled`, set when the client goes away). Library calls without a check run and
answer as before (one worker, gated forward passes: counts, not times, are asserted)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from serve_fakes import leave_during_first_pass, metric_value, wait_for  # noqa: E402

from tokenpool.model import longdocs  # noqa: E402
from tokenpool.model.request import EncodeRequest  # noqa: E402

SENTENCE = "the weather was fine and the river ran slowly past the old mill at noon while nobody watched"
LONG = " ".join(f"{SENTENCE} {k}." for k in range(40))  # ~760 tokens: ~110 windows of 14, stride 7


def _counted(monkeypatch, encoder) -> list[int]:
    """Rows of each forward pass of ``encoder`` from now on (this test only)."""
    calls: list[int] = []
    forward = encoder.runner.forward

    def counting(ids, mask):
        calls.append(len(ids))
        return forward(ids, mask)

    monkeypatch.setattr(encoder.runner, "forward", counting)
    return calls


@pytest.mark.parametrize("k", [0, 1, 3])
def test_the_engine_runs_k_passes_when_should_stop_turns_true_after_k(small, monkeypatch, k):
    calls = _counted(monkeypatch, small)
    engine = longdocs.WindowEngine(small, prompt=None, stride=None)
    plan = engine.plan(0, longdocs.tokenize_document(small.tokenization, LONG), None, False)
    assert len(plan.starts) > 4 * (k + 1)  # many passes of 4 rows
    with pytest.raises(longdocs.Cancelled):
        list(engine.run([plan], batch_size=4, should_stop=lambda: len(calls) >= k))
    assert len(calls) == k


REQUESTS = {
    "late": EncodeRequest(output="chunks", chunks="tokens:8:2", batch_size=4, finish=False),
    "naive": EncodeRequest(output="chunks", chunks="tokens:8:2", chunking="naive", batch_size=4, finish=False),
    "windows": EncodeRequest(long_documents="windows", batch_size=4),
    "tokens": EncodeRequest(output="tokens", long_documents="windows", batch_size=4),
    "truncate": EncodeRequest(batch_size=4),
}


@pytest.mark.parametrize("mode", REQUESTS)
def test_encoder_run_stops_before_the_pass_after_should_stop(small, monkeypatch, mode):
    texts = [LONG] if mode != "truncate" else [SENTENCE] * 20
    calls = _counted(monkeypatch, small)
    # truncated texts' passes (naive chunks too) may run `parallel_passes` at a time (`batching.run_passes`)
    ahead = small.runner.parallel_passes - 1 if mode in ("naive", "truncate") else 0
    with pytest.raises(longdocs.Cancelled):
        small.run(REQUESTS[mode], texts, should_stop=lambda: len(calls) >= 2)
    assert 2 <= len(calls) <= 2 + ahead


def _values(result) -> list[np.ndarray]:
    if isinstance(result, list):
        return result
    return [result.vectors, result.doc, result.start] if hasattr(result, "vectors") else [result]


@pytest.mark.parametrize("mode", REQUESTS)
def test_a_check_that_never_stops_changes_no_bit(small, mode):
    texts = [LONG, SENTENCE] if mode != "truncate" else [SENTENCE] * 20
    plain = _values(small.run(REQUESTS[mode], texts))
    checked = _values(small.run(REQUESTS[mode], texts, should_stop=lambda: False))
    assert len(plain) == len(checked)
    assert all(np.array_equal(a, b) for a, b in zip(plain, checked, strict=True))


# ---------------------------------------------------------------------------------------------- the server

MODES = {  # one long document each; the 499 is counted on this endpoint
    "late_chunking": ("/embed", {"inputs": LONG.split(". "), "late_chunking": True}, "embed"),
    "chunks": ("/embed_documents", {"documents": [LONG], "chunks": "tokens:8:2"}, "embed_documents"),
    "naive": ("/embed_documents", {"documents": [LONG], "chunks": "tokens:8:2", "chunking": "naive"},
              "embed_documents"),  # fmt: skip
    "windows": ("/embed", {"inputs": [LONG], "long_documents": "windows"}, "embed"),
}


@pytest.fixture(scope="module")
def gated(tiny_bert_folder):
    """One worker on the tiny model (max_length 16, 64 tokens a pass: 4 windows); its forward passes wait for
    ``server.gate``; ``server.log`` records ("forward", rows) per pass and ("texts", n) per short request."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server
    from tokenpool.serve.settings import ServeSettings

    runner = EncoderRunner(Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu"))
    gate, entered, log, lock = threading.Event(), threading.Event(), [], threading.Lock()
    forward, embed = runner.encoder.runner.forward, runner.embed

    def gated_forward(ids, mask):
        with lock:
            log.append(("forward", len(ids)))
        entered.set()
        assert gate.wait(20)
        return forward(ids, mask)

    def logged(tokens):
        with lock:
            log.append(("texts", len(tokens)))
        return embed(tokens)

    runner.encoder.runner.forward, runner.embed = gated_forward, logged
    with start_server(runner, ServeSettings(workers=1, max_batch_tokens=64, max_document_chars=8000)) as server:
        server.gate, server.entered, server.log, server.batcher = gate, entered, log, server.service.models[0].batcher
        yield server
        gate.set()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_a_long_document_stops_at_its_next_window_pass_after_its_client_left(gated, mode):
    from serve_fakes import post

    path, body, endpoint = MODES[mode]
    wait_for(lambda: gated.batcher.pending == 0)
    gated.gate.clear(), gated.entered.clear(), gated.log.clear()
    cancelled = f'tokenpool_requests_total{{endpoint="{endpoint}",status="499"}}'
    before = metric_value(gated, cancelled)
    leave_during_first_pass(gated, path, body)
    wait_for(lambda: metric_value(gated, cancelled) == before + 1)  # answered 499 (and cancelled) as now
    results: dict = {}
    short = threading.Thread(target=lambda: results.__setitem__("short", post(gated, "/embed", {"inputs": ["hi"]})))
    short.start()
    wait_for(lambda: gated.batcher.queued >= 1)  # queued behind the document's pass
    gated.gate.set()
    short.join(15)
    assert results["short"].status_code == 200  # the worker is free again
    wait_for(lambda: gated.batcher.pending == 0)
    passes = [entry for entry in gated.log[: gated.log.index(("texts", 1))] if entry[0] == "forward"]
    assert 1 <= len(passes) <= 2, f"{len(passes)} window passes ran for a client that had left"
