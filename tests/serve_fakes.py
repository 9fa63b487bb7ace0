"""A fake model runner for server tests (slow on demand, records what it computed), and a script that serves
it with the real server code: ``python tests/serve_fakes.py --port 0 --delay 0.5`` (used by the SIGTERM test).

Its vectors are a fixed function of the text, so a test can tell which request a row came from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


TEXTS = [
    "A man is playing a guitar.",
    "Someone plays an instrument on a stage while a crowd of people listens quietly.",
    "A cat sleeps.",
    "naïve café — Ünïcode façade, 日本語のテキスト",
    "The stock market fell sharply on Monday after the announcement.",
    "x",
]


@contextlib.contextmanager
def tiny_server(folder: Path, settings: Any) -> Iterator[Any]:
    """The tiny model, built as the `small` reference encoder (mean, max_length 16, not normalised), served
    under the name "tiny" with ``settings`` on 127.0.0.1, and stopped after."""
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    encoder = Encoder(folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    with start_server(EncoderRunner(encoder, name="tiny"), settings) as server:
        yield server


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_same_vectors(got, expected) -> None:
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == np.shape(expected)
    assert cosines(got, expected).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(expected, axis=-1), rtol=1e-4)


def metric_value(server, name: str, headers=None) -> float:
    """The sum of ``name``'s series on the server's /metrics (``name`` may carry its labels: that series alone)."""
    text = httpx.get(server.url + "/metrics", headers=headers).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(predicate, timeout: float = 20.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def leave_during_first_pass(server, path: str, body) -> None:
    """Send ``body`` on a raw connection and close it once the server's gated first forward pass has begun
    (``server.entered``, an Event the test's gated forward sets): a client that leaves mid-request."""
    url = httpx.URL(server.url)
    content = json.dumps(body).encode()
    with socket.create_connection((url.host, url.port)) as client:
        client.sendall(f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(content)}\r\n\r\n".encode() + content)  # fmt: skip
        assert server.entered.wait(15), "the first forward pass began"


def post(server, path: str, body, *, headers=None, timeout: float = 30.0) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers=headers, timeout=timeout)


def spawn(argv: list[str], env_extra=None) -> tuple[subprocess.Popen, str]:
    """Start a server process and wait for its ``listening on URL`` line → (process, url)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.update(env_extra or {})
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    line = ""
    deadline = time.monotonic() + 120
    while "listening on" not in line:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("server did not start")
    return process, line.split("listening on ", 1)[1].split()[0]


def fake_vector(text: str, width: int) -> np.ndarray:
    """Deterministic, text-specific, never zero: seeded by the text's CRC32."""
    rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
    return (rng.standard_normal(width) + 0.1).astype(np.float32)


@dataclass
class FakeTokens:
    """What `FakeRunner.tokenize` gives (the shape of `Tokenized`): per text a row of its text number, as many
    tokens as it has words + 2, cut to max_length on the asked side."""

    ids: list[list[int]]
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(row) for row in self.ids], dtype=np.int64)

    def select(self, rows):
        return FakeTokens([self.ids[i] for i in rows], self.counts[list(rows)])

    @classmethod
    def concat(cls, parts):
        return cls([row for part in parts for row in part.ids], np.concatenate([part.counts for part in parts]))


class FakeRunner:
    """Runner protocol; tokens = whitespace-separated words + 2 (like [CLS] ... [SEP]); a row's vector is
    `fake_vector` of its prompt + text, whatever the truncation."""

    name = "fake-model"
    is_sparse = False
    normalize = False
    prompts = {"query": "query: "}
    default_prompt = ""
    info = {"pooling": ["mean"], "dtype": "float32"}
    calibration = None

    def __init__(
        self,
        *,
        width: int = 8,
        delay: float = 0.0,
        max_length: int = 16,
        gate: threading.Event | FileGate | None = None,
    ):
        self.width = self.dimension = width
        self.delay = delay
        self.max_length = max_length
        self.gate = gate  # when set, each forward pass waits for it
        self.seen: list[str] = []
        self.passes: list[list[str]] = []
        self.texts: list[str] = []  # token id k stands for texts[k]
        self.lock = threading.Lock()
        self.started = threading.Event()  # set when the first forward pass begins

    def tokenize(self, texts: Sequence[str], prompt: str, truncation: str | None) -> FakeTokens:
        ids, counts = [], []
        with self.lock:
            for text in texts:
                self.texts.append(prompt + text)
                counts.append(len((prompt + text).split()) + 2)
                ids.append([len(self.texts) - 1] * (counts[-1] if truncation is None else min(counts[-1], self.max_length)))
        return FakeTokens(ids, np.array(counts, dtype=np.int64))

    def row_texts(self, tokens: FakeTokens) -> list[str]:
        """The prompt + text each tokenised row stands for."""
        return [self.texts[row[0]] for row in tokens.ids]

    def embed(self, tokens: FakeTokens) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rows = np.argsort(-tokens.lengths, kind="stable")
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay:
            time.sleep(self.delay)
        texts = [self.row_texts(tokens)[i] for i in rows]
        with self.lock:
            self.seen.extend(texts)
            self.passes.append(texts)
        yield rows, np.stack([fake_vector(text, self.width) for text in texts])


class NanRunner(FakeRunner):
    """A FakeRunner whose model gives NaN for every text holding "nan" (a float16 overflow, say)."""

    def embed(self, tokens: FakeTokens) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        texts = self.row_texts(tokens)
        for rows, vectors in super().embed(tokens):
            poisoned = np.array([["nan" in texts[i]] for i in rows])
            yield rows, np.where(poisoned, np.float32("nan"), vectors)


def submit_texts(batcher, texts: list[str]) -> tuple[Any, threading.Event]:
    """A batcher job of ``texts`` (tokenised by the batcher's runner) and the event its delivery sets."""
    from tokenpool.serve.batcher import Job

    done = threading.Event()
    tokens = batcher.runner.tokenize(texts, "", "right")
    job = Job(tokens.lengths, tokens, deliver=lambda _job: done.set())
    batcher.submit(job)
    return job, done


class FileGate:
    """A gate between processes: `wait` returns once ``path`` exists."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.path.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tokenpool.serve.server import serve_forever
    from tokenpool.serve.settings import ServeSettings

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-batch-requests", type=int, default=64)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--gate-file", help="forward passes wait until this file exists")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    args = parser.parse_args(argv)
    settings = ServeSettings(
        max_batch_requests=args.max_batch_requests, drain_timeout=args.drain_timeout, batch_size=4,
        max_body_bytes=args.max_body_bytes,
    )
    gate = FileGate(args.gate_file) if args.gate_file else None
    return serve_forever(FakeRunner(delay=args.delay, gate=gate), settings, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
