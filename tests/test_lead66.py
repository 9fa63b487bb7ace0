"""Stop 66, the lead's own fixes: each test fails before its fix."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_serve_refuses_a_bad_pooling_combination_before_binding_or_loading():
    """Stop 66: `serve` checked only the pooling names before binding its port and loading the model; a bad
    combination (splade with another strategy) was found after both, so a taken port hid it and a model load
    came first. The Encoder's one options check (`EncoderOptions.check`) now runs before either, as in `embed`."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "tokenpool", "serve", "--port", str(port),
                               "--pooling", "splade,mean"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'splade' pools MLM logits and cannot be combined" in lines[0]


def test_half_precision_input_skips_the_overflow_check(monkeypatch):
    """Stop 66: the float32 overflow check (a device→host copy on CUDA) ran for float16 input too, whose float32
    sums cannot overflow (65,504 per token); it is skipped there, and float32 input keeps it."""
    import numpy as np

    from tokenpool.core import pooling

    calls = []
    monkeypatch.setattr(pooling, "overflowed_rows", lambda *args: calls.append(args[1]))
    mask = np.array([[1, 1, 0]])
    hidden = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    for dtype in (np.float16, np.float32):
        expected = hidden[:, :2].astype(np.float64).mean(axis=1)  # the float64 reference
        got = pooling.pool(hidden.astype(dtype), mask, "mean")
        np.testing.assert_allclose(got, expected, rtol=1e-3)
        assert len(calls) == (0 if dtype == np.float16 else 1), dtype
