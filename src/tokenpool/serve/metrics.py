"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """Counters, gauges and histograms under the ``tokenpool_`` prefix."""

    def __init__(self, window: float = 10.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tokenpool_requests",
            "HTTP requests answered, by endpoint and status code",
            ("endpoint", "status"),
            registry=r,
        )
        self.errors = Counter(
            "tokenpool_errors", "Requests answered with an error, by kind", ("kind",), registry=r
        )
        self.latency = Histogram(
            "tokenpool_request_duration_seconds",
            "Time from a request's arrival to its response, by endpoint",
            ("endpoint",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("tokenpool_requests_in_flight", "Requests being handled now", registry=r)
        self.queue_inputs = Gauge("tokenpool_queue_depth", "Inputs waiting for the model worker", registry=r)
        self.queue_requests = Gauge("tokenpool_queue_requests", "Requests with inputs waiting", registry=r)
        self.batch_inputs = Histogram(
            "tokenpool_batch_size",
            "Inputs per worker round (one or more forward passes)",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "tokenpool_batch_requests", "Requests sharing one worker round", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "tokenpool_batch_padded_tokens",
            "Padded tokens computed per worker round",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "tokenpool_batch_duration_seconds",
            "Model time per worker round",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inputs = Counter("tokenpool_inputs", "Inputs embedded", registry=r)
        self.tokens = Counter("tokenpool_tokens", "Real (unpadded) tokens embedded", registry=r)
        self.tokens_per_second = Gauge(
            "tokenpool_tokens_per_second",
            f"Real tokens embedded per second over the last {window:g} s",
            registry=r,
        )
        self.tokens_per_second.set_function(self._tokens_per_second)
        self._window = window
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def observe_round(
        self, *, inputs: int, requests: int, padded_tokens: int, tokens: int, seconds: float
    ) -> None:
        self.batch_inputs.observe(inputs)
        self.batch_requests.observe(requests)
        self.batch_tokens.observe(padded_tokens)
        self.batch_seconds.observe(seconds)
        self.inputs.inc(inputs)
        self.tokens.inc(tokens)
        with self._lock:
            self._recent.append((time.monotonic(), tokens))

    def queue(self, inputs: int, requests: int) -> None:
        self.queue_inputs.set(inputs)
        self.queue_requests.set(requests)

    def answered(self, endpoint: str, status: int, seconds: float, error_kind: str | None = None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if error_kind is not None:
            self.errors.labels(error_kind).inc()

    def _tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - self._window:
                self._recent.popleft()
            total = sum(count for _, count in self._recent)
        return total / self._window
