"""Stop 68, core: defects found in the pooling core, each against an independent reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tokenpool.core.streaming import RunningPool  # noqa: E402


@pytest.mark.parametrize("position", [2**53 - 2, 2**53, 2**53 + 1, 2**60])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_running_weightedmean_far_positions(library: str, position: int) -> None:
    """A block at a position past 2^53: torch's float32 arange of the ranks came out with the wrong length
    (RuntimeError "size of tensor a (4) must match ... (3)"); now both libraries give the exact weighted mean
    (Fractions) to float32's precision."""
    tokens = np.array([[1.0, -2.0], [3.0, 5.0], [7.0, 0.5]], dtype=np.float32)
    running = RunningPool("weightedmean", 1, 2)
    running.add(0, tokens if library == "numpy" else torch.from_numpy(tokens), position)
    weights = [position + 1 + i for i in range(3)]
    exact = [float(sum(Fraction(w) * Fraction(float(v)) for w, v in zip(weights, column, strict=True)) / sum(weights))
             for column in tokens.T]
    np.testing.assert_allclose(np.asarray(running.read())[0], exact, rtol=1e-6)
