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
