"""Hostile HTTP clients against `tokenpool serve` (fake model, loopback only, bounded in count and time): bodies
that are too large (refused while streaming, the server's memory bounded), not UTF-8, nested 100,000 deep,
100,000 inputs, lone surrogates, bad field values; hundreds of idle and slowloris connections; clients that
disconnect mid-batch; SIGTERM with requests in flight. Every answer is a JSON error object or the right vectors;
the server stays healthy."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_fakes import ROOT, FakeRunner, fake_vector, post, spawn  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server():
    settings = ServeSettings(max_body_bytes=1_000_000, read_timeout=READ_TIMEOUT, batch_size=4)
    with start_server(FakeRunner(), settings) as running:
        yield running


def exchange(url: str, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection, read the whole answer → (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"content-length:" in answer.lower():
                head, _, body = answer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def request_bytes(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


DEEP = b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
BAD_BODIES = [
    ("not UTF-8", b'{"input": "caf\xe9"}', 400, "UTF-8"),
    ("lone surrogate", b'{"input": ["fine", "\\ud800 alone"]}', 400, "surrogate"),
    ("100,000 levels deep", DEEP, 400, "depth"),
    ("100,000 inputs", json.dumps({"input": ["x"] * 100_000}).encode(), 400, "at most 2048"),
    ("dimensions -1", b'{"input": "x", "dimensions": -1}', 400, "between 1 and 8"),
    ("dimensions 10**30", b'{"input": "x", "dimensions": 1000000000000000000000000000000}', 400, "dimensions"),
    ("dimensions 1.5", b'{"input": "x", "dimensions": 1.5}', 400, "'dimensions' must be an integer"),
    ("dimensions '8'", b'{"input": "x", "dimensions": "8"}', 400, "'dimensions' must be an integer"),
    ("dimensions [8]", b'{"input": "x", "dimensions": [8]}', 400, "'dimensions' must be an integer"),
    ("encoding_format bytes", b'{"input": "x", "encoding_format": "bytes"}', 400, "'encoding_format'"),
    ("encoding_format 1", b'{"input": "x", "encoding_format": 1}', 400, "'encoding_format'"),
    ("a NUL in a field name", b'{"input": "x", "in\\u0000put": 1}', 400, "unrecognized"),
]


@pytest.mark.parametrize(("what", "body", "status", "needle"), BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_bad_bodies_get_json_errors_fast(server, what, body, status, needle):
    began = time.monotonic()
    got, answer = exchange(server.url, request_bytes("/v1/embeddings", body))
    assert time.monotonic() - began < 5.0
    assert got == status, answer
    assert needle in json.loads(answer)["error"]["message"]
    tei, answer = exchange(server.url, request_bytes("/embed", body.replace(b'"input"', b'"inputs"')))
    assert 400 <= tei < 500 and "error_type" in json.loads(answer)
    assert httpx.get(server.url + "/health").status_code == 200


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_an_oversized_body_is_refused_while_it_streams_and_memory_stays_bounded():
    process, url = spawn([sys.executable, str(ROOT / "tests" / "serve_fakes.py"), "--max-body-bytes", "1000000"])
    try:
        before = rss_kib(process.pid)
        host, port = url.removeprefix("http://").split(":")
        chunk = b"x" * 65536
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        sent = 0
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                while sent < 200_000_000:  # 200 MB unless the server stops us first
                    sock.sendall(framed)
                    sent += len(chunk)
            except OSError:  # the server answered and closed: the rest is never read
                pass
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 50_000_000, f"the server read {sent} bytes before refusing"
        assert rss_kib(process.pid) - before < 40_000, "the server's memory grew with the body"
        declared, body = exchange(url, b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert declared == 413 and b"999999999" in body
    finally:
        process.kill()
        process.wait()


def test_idle_and_slow_connections_neither_starve_others_nor_stay_open(server):
    host, port = server.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(150)]
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(150)]
    for sock in slow:  # slowloris: a request line and a header, never the end of the headers
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n")
    try:
        began = time.monotonic()
        response = post(server, "/embed", {"inputs": ["still served"]}, timeout=5)
        assert response.status_code == 200 and time.monotonic() - began < 2.0
        np.testing.assert_allclose(response.json(), [fake_vector("still served", 8)], rtol=1e-6)
        time.sleep(READ_TIMEOUT + 1.0)
        for sock in idle + slow:  # closed by the server: recv sees the end of the stream
            assert sock.recv(1024) == b""
        # headers on time, then a body that never finishes: 408 after the read timeout
        status, body = exchange(server.url, b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert status == 408 and b"did not arrive" in body
    finally:
        for sock in idle + slow:
            sock.close()


def test_clients_that_disconnect_mid_batch_leave_the_server_healthy():
    runner = FakeRunner(delay=0.05)
    with start_server(runner, ServeSettings(batch_size=4)) as running:
        def leave(k: int) -> None:
            with pytest.raises(httpx.ReadTimeout):
                post(running, "/embed", {"inputs": [f"leaver {k} {i}" for i in range(40)]}, timeout=0.3)

        leavers = [threading.Thread(target=leave, args=(k,)) for k in range(16)]
        for thread in leavers:
            thread.start()
        for thread in leavers:
            thread.join(30)
        response = post(running, "/embed", {"inputs": ["after them"]}, timeout=10)
        assert response.status_code == 200
        np.testing.assert_allclose(response.json(), [fake_vector("after them", 8)], rtol=1e-6)
        batcher = running.service.models[0].batcher
        deadline = time.monotonic() + 5
        while batcher.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batcher.pending == 0 and batcher.alive
        assert len(runner.seen) < 16 * 40 / 2, "most abandoned inputs were never computed"
        assert httpx.get(running.url + "/health").status_code == 200


def in_flight(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("tokenpool_requests_in_flight "))


def test_sigterm_with_a_large_request_in_flight_answers_it_and_exits_0():
    process, url = spawn([sys.executable, str(ROOT / "tests" / "serve_fakes.py"), "--delay", "0.01"])
    try:
        results: dict = {}

        def send(key, texts):
            results[key] = httpx.post(url + "/embed", json={"inputs": texts}, timeout=60)

        big = [f"big {i}" for i in range(400)]  # 100 passes of 4
        threads = [threading.Thread(target=send, args=("big", big))]
        threads += [threading.Thread(target=send, args=(k, [f"small {k}"])) for k in range(5)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while in_flight(url) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert {key: r.status_code for key, r in results.items()} == {"big": 200, **dict.fromkeys(range(5), 200)}
        np.testing.assert_allclose(results["big"].json(), [fake_vector(t, 8) for t in big], rtol=1e-6)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
