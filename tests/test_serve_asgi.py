"""`tokenpool serve`'s plain ASGI layer against independent references: its routing against Starlette's own
router on the same routes, its responses' raw headers against Starlette's `Response`, the streamed body read,
the per-connection header timer, and rows finished in the worker (alone or several requests' in one pass)
against numpy.

Servers bind 127.0.0.1 on free ports and stop by themselves; the fake runner keeps them fast."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, fake_vector, post, wait_for  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.responses import Response as StarletteResponse  # noqa: E402
from starlette.routing import Route as StarletteRoute  # noqa: E402

from tokenpool.serve.app import ROUTES, App, Route  # noqa: E402
from tokenpool.serve.batcher import Job  # noqa: E402
from tokenpool.serve.http import ApiError, Request, Response, read_json  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.service import Service  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
PATHS = ("/v1/embeddings", "/v1/models", "/v1/models/x", "/v1/models/a/b", "/v1/models/a\nb", "/v1/modelsx",
         "/embeddings", "/models", "/embed", "/embed_sparse", "/embed_documents", "/", "/info", "/health",
         "/health\n", "/metrics", "/nothing", "/v1/nothing", "/embed/x", "/EMBED")  # fmt: skip


def _call(app, method: str, path: str, root_path: str = "") -> tuple[int, dict[str, str], bytes]:
    """One request through an ASGI app → (status, headers, body); under ``root_path`` (a mount, or uvicorn's
    --root-path) the path holds it first, as ASGI servers and Starlette 1.x pass it."""
    path = root_path + path
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": root_path,
             "query_string": b"", "headers": [(b"host", b"127.0.0.1")], "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000), "http_version": "1.1"}  # fmt: skip
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, sent[1]["body"]


def _named(name: str):
    async def endpoint(request) -> Response:
        return Response(name.encode(), 200)

    return endpoint


def test_routing_decides_as_starlettes_router_on_the_same_routes():
    """Which route answers each method and path, and the 404/405 (with the methods a 405 allows), as
    Starlette's router decides on the same route table (its Allow order is a set's: compared as sets)."""
    names = [f"{k} {name}" for k, (_, name, _, _, _) in enumerate(ROUTES)]  # ("health" has two routes)
    ours = App(Service(FakeRunner()), [Route(path, method, _named(name))
                                       for (path, _, _, method, _), name in zip(ROUTES, names, strict=True)])  # fmt: skip

    async def refused(request, exc):
        return PlainTextResponse(str(exc.status_code), exc.status_code, headers=exc.headers)

    def named(name):
        async def endpoint(request):
            return PlainTextResponse(name)

        return endpoint

    reference = Starlette(routes=[StarletteRoute(path, named(name), methods=[method])
                                  for (path, _, _, method, _), name in zip(ROUTES, names, strict=True)],
                          exception_handlers={HTTPException: refused})  # fmt: skip
    reference.router.redirect_slashes = False
    for method, path, root in itertools.product(METHODS, PATHS, ["", "/tp"]):  # (also mounted under a prefix)
        status, headers, body = _call(ours, method, path, root)
        want_status, want_headers, want_body = _call(reference, method, path, root)
        assert status == want_status, (method, path, root)
        if status == 200:
            assert body.decode() == want_body.decode(), (method, path, root)
        if status == 405:
            assert set(headers["allow"].split(", ")) == set(want_headers["allow"].split(", ")), (method, path, root)


@pytest.mark.parametrize("body, status, headers, media_type", [
    (b'{"a":1}', 200, None, "application/json"),
    (b"", 200, None, None),
    (b"# HELP x\n", 200, None, "text/plain; version=1.0.0; charset=utf-8"),
    (b"plain", 200, None, "text/plain"),
    (b'{"error":"x"}', 429, {"Retry-After": "3"}, "application/json"),
    (b'{"error":"x"}', 503, {"Retry-After": "5", "Connection": "close"}, "application/json"),
    (b"[]", 200, {"x-total-tokens": "12", "x-truncated-tokens": "0"}, "application/json"),
])  # fmt: skip
def test_a_response_has_the_raw_headers_starlettes_had(body, status, headers, media_type):
    ours = Response(body, status, headers, media_type)
    want = StarletteResponse(body, status, headers, media_type=media_type)
    assert ours.raw_headers == want.raw_headers
    assert ours.status_code == want.status_code and ours.body == want.body


def _receiver(messages: list[dict], stall: bool = False):
    """A receive callable handing out ``messages``, then waiting for ever (``stall``) or a disconnect."""
    calls = []

    async def receive():
        calls.append(len(calls))
        if len(calls) <= len(messages):
            return messages[len(calls) - 1]
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive, calls


def _read(messages, *, limit=1000, timeout=5.0, stall=False, headers=()):
    receive, calls = _receiver(messages, stall)
    scope = {"type": "http", "headers": list(headers)}
    try:
        return asyncio.run(read_json(Request(scope, receive), limit, timeout)), calls
    except ApiError as err:
        return err, calls


def test_a_body_in_pieces_is_read_whole_and_a_big_one_refused_before_the_rest():
    pieces = [b'{"input": ', b'"a b', b' c"}']
    got, _ = _read([{"type": "http.request", "body": p, "more_body": k < 2} for k, p in enumerate(pieces)])
    assert got == json.loads(b"".join(pieces))
    got, _ = _read([{"type": "http.request", "body": b'{"a": 1}'}])  # no more_body: the last piece
    assert got == {"a": 1}
    big = [{"type": "http.request", "body": b"x" * 400, "more_body": True} for _ in range(10)]
    err, calls = _read(big)
    assert err.status == 413 and err.headers == {"Connection": "close"} and len(calls) == 3  # 1,200 > 1,000
    err, _ = _read([], headers=[(b"content-length", b"5000")])
    assert err.status == 413 and "5000 bytes" in err.message


def test_a_body_cut_off_or_late_is_a_499_or_a_408():
    err, _ = _read([{"type": "http.request", "body": b'{"a"', "more_body": True}])  # then the client leaves
    assert err.status == 499 and err.kind == "client_disconnected"
    began = time.monotonic()
    err, _ = _read([{"type": "http.request", "body": b'{"a"', "more_body": True}], timeout=0.2, stall=True)
    assert err.status == 408 and "0.2 s" in err.message and time.monotonic() - began < 2
    err, _ = _read([{"type": "http.request", "body": b"", "more_body": False}])
    assert err.status == 400 and err.kind == "empty"


def _raw_request(path: str = "/health") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def _answered(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


@pytest.fixture(scope="module")
def quick_timeout():
    with start_server(FakeRunner(), ServeSettings(read_timeout=0.5, batch_size=4)) as running:
        yield running


def test_a_keep_alive_connection_that_stops_midway_through_its_headers_is_closed_on_time(quick_timeout):
    """The header timer outlives a connection's first requests: the headers of a later request that stop
    coming get the connection closed read_timeout after that request's first byte, not sooner."""
    url = httpx.URL(quick_timeout.url)
    with socket.create_connection((url.host, url.port), timeout=5) as sock:
        for _ in range(3):  # requests every 0.3 s for longer than the timeout: each answered, the connection kept
            sock.sendall(_raw_request())
            assert _answered(sock).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
        began = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server
        waited = time.monotonic() - began
    assert 0.4 <= waited < 2.0, waited


def test_a_connection_that_never_sends_is_closed_after_the_timeout(quick_timeout):
    url = httpx.URL(quick_timeout.url)
    with socket.create_connection((url.host, url.port), timeout=5) as sock:
        began = time.monotonic()
        assert sock.recv(1024) == b""
        assert 0.4 <= time.monotonic() - began < 2.0


def test_a_jobs_inputs_are_taken_longest_first_ties_in_order():
    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 64, 300):
        lengths = rng.integers(1, 6, n).tolist()  # many ties
        want = np.argsort(-np.asarray(lengths), kind="stable").tolist()
        assert Job(lengths).pending == want
        assert Job(np.asarray(lengths)).pending == want


@pytest.fixture()
def gated():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    with start_server(runner, ServeSettings(batch_size=16)) as running:
        running.runner, running.gate = runner, gate
        yield running
        gate.set()


def _send(server, path, body, results, key):
    thread = threading.Thread(target=lambda: results.__setitem__(key, post(server, path, body)))
    thread.start()
    return thread


def test_requests_of_different_options_finished_in_one_pass_get_their_own_answers(gated):
    """Rows are finished in the worker, those of requests with equal options in one call: each answer is the
    fake vector cut, normalised and cast as its own request asks (numpy), whatever shared its pass."""
    results: dict = {}
    threads = [_send(gated, "/embed", {"inputs": ["blocker"]}, results, "blocker")]
    assert gated.runner.started.wait(20)
    asks = {
        "cut": ("/embed", {"inputs": ["t0", "t1 t1"], "dimensions": 4}),
        "cut too": ("/embed", {"inputs": "t2", "dimensions": 4}),
        "unit": ("/embed", {"inputs": ["t3"], "normalize": True}),
        "half": ("/v1/embeddings", {"input": ["t4"], "precision": "float16", "dimensions": 6}),
        "plain": ("/v1/embeddings", {"input": "t5"}),
    }
    for key, (path, body) in asks.items():
        threads.append(_send(gated, path, body, results, key))
    wait_for(lambda: gated.service.models[0].batcher.queued == 6)
    gated.gate.set()
    for thread in threads:
        thread.join(30)
    assert sorted(gated.runner.passes[1]) == ["t0", "t1 t1", "t2", "t3", "t4", "t5"]  # one pass for all
    vector = {text: fake_vector(text, 8) for text in ("t0", "t1 t1", "t2", "t3", "t4", "t5")}
    as_sent = lambda answer: np.asarray(answer, dtype=np.float32)  # noqa: E731 - float32 values round-trip exactly
    np.testing.assert_array_equal(as_sent(results["cut"].json()), [vector["t0"][:4], vector["t1 t1"][:4]])
    np.testing.assert_array_equal(as_sent(results["cut too"].json()), [vector["t2"][:4]])
    unit = vector["t3"].astype(np.float64) / np.linalg.norm(vector["t3"].astype(np.float64))
    np.testing.assert_allclose(results["unit"].json(), [unit], rtol=1e-6)
    half = np.frombuffer(base64.b64decode(results["half"].json()["data"][0]["embedding"]), dtype="<f2")
    np.testing.assert_array_equal(half, vector["t4"][:6].astype(np.float16))
    np.testing.assert_array_equal(as_sent(results["plain"].json()["data"][0]["embedding"]), vector["t5"])


def test_the_queue_gauges_read_the_queue_when_scraped(gated):
    results: dict = {}
    threads = [_send(gated, "/embed", {"inputs": ["blocker"]}, results, "blocker")]
    assert gated.runner.started.wait(20)
    threads += [_send(gated, "/embed", {"inputs": [f"q{k}", f"r{k}"]}, results, k) for k in range(3)]
    wait_for(lambda: gated.service.models[0].batcher.queued == 6)
    text = httpx.get(gated.url + "/metrics").text
    assert 'tokenpool_queue_depth{model="fake-model"} 6.0' in text
    assert 'tokenpool_queue_requests{model="fake-model"} 3.0' in text
    gated.gate.set()
    for thread in threads:
        thread.join(30)
    text = httpx.get(gated.url + "/metrics").text
    assert 'tokenpool_queue_depth{model="fake-model"} 0.0' in text
    assert 'tokenpool_queue_requests{model="fake-model"} 0.0' in text
