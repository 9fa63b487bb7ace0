"""Whole-document requests are embedded a pass's worth of documents at a time: a client that sends many
documents and leaves stops costing anything after the documents that are running, and another client's short
request runs between two of them (one worker, gated forward passes: counts, not times, are asserted)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import assert_same_vectors, leave_during_first_pass, metric_value, post, wait_for  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow

# ~30 tokens each: with a 64-token budget per pass, one document per pass, two or three 16-token windows
DOCUMENTS = [f"document {k} says that the weather was fine and the river ran slowly past the old mill at noon" * 2
             for k in range(40)]  # fmt: skip
MODES = {
    "late": ("/embed_documents", {"documents": DOCUMENTS, "chunks": "tokens:8:2"}, "embed_documents"),
    "naive": ("/embed_documents", {"documents": DOCUMENTS, "chunks": "tokens:8:2", "chunking": "naive"},
              "embed_documents"),  # fmt: skip
    "spans": ("/embed_documents", {"documents": DOCUMENTS, "chunks": "spans", "spans": [[[0, 20], [9, 40]]] * 40},
              "embed_documents"),  # fmt: skip
    "windows": ("/embed", {"inputs": DOCUMENTS, "long_documents": "windows"}, "embed"),
}


def _encoder(folder):
    from tokenpool import Encoder

    return Encoder(folder, pooling="mean", max_length=16, device="cpu")


@pytest.fixture(scope="module")
def gated(tiny_bert_folder):
    """One worker on the tiny model; its forward passes wait for ``server.gate``; ``server.log`` records the
    runner's calls in order: ("documents", how many) and ("texts", how many)."""
    from tokenpool.serve.runner import EncoderRunner

    runner = EncoderRunner(_encoder(tiny_bert_folder))
    gate, entered, log, lock = threading.Event(), threading.Event(), [], threading.Lock()
    forward, embed, documents = runner.encoder.runner.forward, runner.embed, runner.embed_documents

    def gated_forward(ids, mask):
        entered.set()
        assert gate.wait(20)
        return forward(ids, mask)

    def logged(kind, call):
        def run(items, *args, **options):
            with lock:
                log.append((kind, len(items)))
            return call(items, *args, **options)

        return run

    runner.encoder.runner.forward = gated_forward
    runner.embed, runner.embed_documents = logged("texts", embed), logged("documents", documents)
    with start_server(runner, ServeSettings(workers=1, max_batch_tokens=64, max_document_chars=4000)) as server:
        server.gate, server.entered, server.log, server.batcher = gate, entered, log, server.service.models[0].batcher
        yield server
        gate.set()


def _closed_gate(server) -> None:
    wait_for(lambda: server.batcher.pending == 0)
    server.gate.clear()
    server.entered.clear()
    server.log.clear()


def _send(server, path: str, body, results: dict, key: str) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.__setitem__(key, post(server, path, body)))
    thread.start()
    return thread


def _documents_before_texts(log: list) -> int:
    """Documents handed to the model before the first short request's pass."""
    return sum(n for kind, n in log[: log.index(("texts", 1))] if kind == "documents")


@pytest.mark.parametrize("mode", MODES)
def test_documents_stop_soon_after_their_client_left(gated, mode):
    path, body, endpoint = MODES[mode]
    _closed_gate(gated)
    cancelled = f'tokenpool_requests_total{{endpoint="{endpoint}",status="499"}}'
    before = metric_value(gated, cancelled)
    leave_during_first_pass(gated, path, body)
    wait_for(lambda: metric_value(gated, cancelled) == before + 1)  # answered 499 as a single-text request is
    results: dict = {}
    short = _send(gated, "/embed", {"inputs": ["a short text"]}, results, "short")
    wait_for(lambda: gated.batcher.pending >= 1 and gated.batcher.queued >= 1)
    gated.gate.set()
    short.join(15)
    assert results["short"].status_code == 200
    wait_for(lambda: gated.batcher.pending == 0)
    handed = sum(n for kind, n in gated.log if kind == "documents")
    assert handed <= 2, f"{handed} of {len(DOCUMENTS)} documents were embedded for a client that had left"
    assert _documents_before_texts(gated.log) <= 2


def test_a_short_request_runs_between_the_documents_of_a_long_one(gated, tiny_bert_folder):
    _closed_gate(gated)
    results: dict = {}
    body = {"documents": DOCUMENTS[:12], "chunks": "tokens:8:2", "return_text": True}
    documents = _send(gated, "/embed_documents", body, results, "documents")
    assert gated.entered.wait(15)
    short = _send(gated, "/embed", {"inputs": ["a short text"]}, results, "short")
    wait_for(lambda: gated.batcher.pending == 12 + 1)  # the short request queued behind the running pass
    gated.gate.set()
    short.join(15)
    documents.join(15)
    assert results["short"].status_code == 200 and results["documents"].status_code == 200
    assert _documents_before_texts(gated.log) <= 2, gated.log
    expected = _encoder(tiny_bert_folder).encode_chunks(DOCUMENTS[:12], chunks="tokens:8:2")
    data = results["documents"].json()["data"]
    assert [(d["document"], d["chunk"], d["start"], d["end"]) for d in data] == list(
        zip(expected.doc.tolist(), expected.chunk.tolist(), expected.start.tolist(), expected.end.tolist(), strict=True)
    )
    assert all(d["text"] == DOCUMENTS[d["document"]][d["start"] : d["end"]] for d in data)
    assert_same_vectors([d["embedding"] for d in data], expected.vectors)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"documents": ["a doc", "another"], "chunks": "spans", "spans": [[[0, 3]]]}, "1 lists for 2 documents"),
        ({"documents": ["a doc"], "chunks": "tokens:8", "spans": [[[0, 3]]]}, "'spans' goes with"),
        ({"documents": ["a doc"], "chunks": "spans"}, "'spans' goes with"),
    ],
)
def test_spans_are_checked_before_the_documents_queue(gated, body, needle):
    """Each pass takes the spans of its own documents, so their count is checked with the request."""
    _closed_gate(gated)
    gated.gate.set()
    response = post(gated, "/embed_documents", body)
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]
    assert not gated.log


def test_a_document_pass_takes_the_next_documents_that_fit_and_at_least_one():
    from tokenpool.serve.batcher import Job, document_pass

    job = Job([30, 20, 100, 10, 10, 10], run=lambda taken, should_stop: None)
    assert job.pending == [0, 1, 2, 3, 4, 5]  # in order, not longest first
    assert document_pass(job, batch_size=32, max_batch_tokens=64) == [0, 1]
    job.pending = [2, 3, 4, 5]
    assert document_pass(job, batch_size=32, max_batch_tokens=64) == [2]  # over the budget alone
    job.pending = [3, 4, 5]
    assert document_pass(job, batch_size=2, max_batch_tokens=64) == [3, 4]
