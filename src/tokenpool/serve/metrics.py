"""Prometheus metrics of one server (its own registry, so several servers can live in one process); the
model-side ones carry a ``model`` label, one per served model (`Metrics.for_model`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "ModelMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
# the model-side families, labelled by model: name (after ``tokenpool_``) → (kind, help, buckets)
_PER_MODEL = {
    "queue_depth": (Gauge, "Inputs waiting for the model worker", None),
    "queue_requests": (Gauge, "Requests with inputs waiting", None),
    "batch_size": (Histogram, "Inputs per forward pass", _SIZE_BUCKETS),
    "batch_requests": (Histogram, "Requests sharing one forward pass", _SIZE_BUCKETS),
    "batch_padded_tokens": (Histogram, "Padded tokens computed per forward pass", _TOKEN_BUCKETS),
    "batch_duration_seconds": (Histogram, "Model time per forward pass", _LATENCY_BUCKETS),
    "inputs": (Counter, "Inputs embedded", None),
    "tokens": (Counter, "Real (unpadded) tokens embedded", None),
    "tokens_truncated": (Counter, "Tokens cut off inputs longer than the window", None),
    "tokens_per_second": (Gauge, "Real tokens embedded per second over the last {window:g} s", None),
}


class Metrics:
    """Counters, gauges and histograms under the ``tokenpool_`` prefix."""

    def __init__(self, window: float = 10.0) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.window = window
        self.requests = Counter("tokenpool_requests", "HTTP requests answered, by endpoint and status code",
                                ("endpoint", "status"), registry=r)  # fmt: skip
        self.errors = Counter("tokenpool_errors", "Requests answered with an error, by kind", ("kind",), registry=r)
        self.latency = Histogram("tokenpool_request_duration_seconds", "Time from a request's arrival to its response",
                                 ("endpoint",), buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.in_flight = Gauge("tokenpool_requests_in_flight", "Requests being handled now", registry=r)
        self.per_model = {name: kind(f"tokenpool_{name}", text.format(window=window), ("model",), registry=r,
                                     **({} if buckets is None else {"buckets": buckets}))
                          for name, (kind, text, buckets) in _PER_MODEL.items()}  # fmt: skip
        self._models: list[ModelMetrics] = []
        self._answered: dict[tuple[str, int], tuple[Any, Any]] = {}  # (endpoint, status) → its two series

    def for_model(self, name: str) -> ModelMetrics:
        """The metrics of one served model (its label values)."""
        model = ModelMetrics(self, name)
        self._models.append(model)
        return model

    def refresh(self) -> None:
        """Bring the windowed gauges up to date (before a scrape)."""
        for model in self._models:
            self.per_model["tokens_per_second"].labels(model.name).set(model.tokens_per_second())

    def answered(self, endpoint: str, status: int, seconds: float, error_kind: str | None = None) -> None:
        series = self._answered.get((endpoint, status))
        if series is None:  # a few endpoints × statuses: each pair's series looked up once
            series = self._answered[endpoint, status] = (self.requests.labels(endpoint, str(status)),
                                                         self.latency.labels(endpoint))  # fmt: skip
        series[0].inc()
        series[1].observe(seconds)
        if error_kind is not None:
            self.errors.labels(error_kind).inc()


class ModelMetrics:
    """What a model's batcher reports, labelled with the model's name."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.metrics = metrics
        self.name = name
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        # every series exists from the start at 0, not from its first event; each is looked up once
        self._series = {key: family.labels(name) for key, family in metrics.per_model.items()}

    def observe_pass(self, *, inputs: int, requests: int, padded_tokens: int, tokens: int, seconds: float,
                     embedded: int | None = None) -> None:  # fmt: skip
        """One forward pass of ``inputs`` inputs (the batch histograms); ``embedded`` of them (default: all) came
        back with their ``tokens`` real tokens (the counters and tokens/s: a pass that failed embedded none)."""
        series = self._series
        series["batch_size"].observe(inputs)
        series["batch_requests"].observe(requests)
        series["batch_padded_tokens"].observe(padded_tokens)
        series["batch_duration_seconds"].observe(seconds)
        series["inputs"].inc(inputs if embedded is None else embedded)
        series["tokens"].inc(tokens)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, tokens))
            self._forget(now)

    def truncated(self, tokens: int) -> None:
        self._series["tokens_truncated"].inc(tokens)

    def queue(self, inputs: int, requests: int) -> None:
        self._series["queue_depth"].set(inputs)
        self._series["queue_requests"].set(requests)

    def _forget(self, now: float) -> None:
        """Drop the passes older than the window (under the lock), on every pass as on every scrape: a server
        never scraped keeps one window's passes, not every pass since it started."""
        while self._recent and self._recent[0][0] < now - self.metrics.window:
            self._recent.popleft()

    def tokens_per_second(self) -> float:
        with self._lock:
            self._forget(time.monotonic())
            return sum(count for _, count in self._recent) / self.metrics.window
