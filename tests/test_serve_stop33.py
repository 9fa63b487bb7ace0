"""Corners of `tokenpool serve` found by the stop-33 bug hunt. Servers bind 127.0.0.1 on free ports and stop by
themselves; the fake runner (`serve_fakes.FakeRunner`) keeps them fast."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402

pytestmark = pytest.mark.slow

MODEL_SERIES = ("tokenpool_queue_depth", "tokenpool_queue_requests", "tokenpool_batch_size_count",
                "tokenpool_batch_requests_count", "tokenpool_batch_padded_tokens_count",
                "tokenpool_batch_duration_seconds_count", "tokenpool_inputs_total", "tokenpool_tokens_total",
                "tokenpool_tokens_truncated_total", "tokenpool_tokens_per_second")  # fmt: skip


def test_every_model_series_exists_at_zero_before_its_first_request():
    """A fresh server's /metrics had no `tokenpool_queue_depth`, `tokenpool_tokens_total`, ... series at all, and
    a model never asked had none ever (the docs promise one series per served model); a counter that appears
    at its first increment loses that increment to Prometheus' `rate()` and `increase()`."""
    with start_server({"a": FakeRunner(), "b": FakeRunner()}) as server:
        text = httpx.get(server.url + "/metrics").text
        lines = set(text.splitlines())
        for name in MODEL_SERIES:
            for model in ("a", "b"):
                assert f'{name}{{model="{model}"}} 0.0' in lines, (name, model)


@pytest.mark.parametrize(("path", "field", "status"), [("/v1/embeddings", "input", 400), ("/embed", "inputs", 422)])
def test_a_nested_list_of_strings_is_not_called_token_ids(path, field, status):
    """`"input": [["a", "b"]]` was answered "'input' holds token ids (input[0] is an array) ... send strings":
    it holds strings, one level too deep. Token ids (integers, or lists of them) keep their own message."""
    with start_server(FakeRunner()) as server:
        nested = httpx.post(server.url + path, json={field: ["ok", ["a", "b"]]})
        assert nested.status_code == status
        assert "token ids" not in nested.text and f"'{field}[1]' must be a string, got array" in nested.text
        for ids in ([[1, 2], [3]], [1, 2], [[]]):
            refused = httpx.post(server.url + path, json={field: ids})
            assert refused.status_code == status and "token ids" in refused.text, refused.text
