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
    sums cannot overflow (65,504 per token); it is skipped there, in `pool` and `pool_packed`, and float32 input
    keeps it. Results are those of a float64 reference either way."""
    import numpy as np

    from tokenpool.core import pooling
    from tokenpool.core.packed import pool_packed

    checked = []  # (`readable_now` is the check's first step past the float16 one)
    monkeypatch.setattr(pooling, "readable_now", lambda x: checked.append(x.shape) or True)
    tokens = np.arange(20, dtype=np.float32).reshape(5, 4)  # two packed rows: tokens 0-1 and 2-4
    expected = np.stack([tokens[:2].astype(np.float64).mean(axis=0), tokens[2:].astype(np.float64).mean(axis=0)])
    hidden = np.zeros((2, 3, 4), np.float32)
    hidden[0, :2], hidden[1, :3] = tokens[:2], tokens[2:]
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    for dtype in (np.float16, np.float32):
        checked.clear()
        np.testing.assert_allclose(pooling.pool(hidden.astype(dtype), mask, "mean"), expected, rtol=1e-3)
        np.testing.assert_allclose(pool_packed(tokens.astype(dtype), np.array([0, 2, 5]), "mean"), expected, rtol=1e-3)
        assert len(checked) == (0 if dtype == np.float16 else 2), (dtype, checked)
