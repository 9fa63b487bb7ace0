"""Stop 66 review (s66r-e) of s66-core: the float32 overflow redo warns nothing new and steps aside where the
library has no float64 (a float64 redo there is float32 again, with JAX's warning)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tokenpool

SUMS = ("mean", "weightedmean", "mean_sqrt_len_tokens")


def float64_reference(hidden: np.ndarray, strategy: str) -> np.ndarray:
    """Every token real: the pooled rows by a plain float64 loop, rounded to float32 (inf past its range)."""
    rows = []
    for values in hidden.astype(np.float64):
        n = len(values)
        if strategy == "weightedmean":
            weights = np.arange(1, n + 1, dtype=np.float64)
            rows.append((weights[:, None] * values).sum(0) / weights.sum())
        else:
            rows.append(values.sum(0) / (n if strategy == "mean" else np.sqrt(n)))
    with np.errstate(over="ignore"):
        return np.stack(rows).astype(np.float32)


def _huge() -> np.ndarray:
    hidden = np.full((2, 4, 3), 3.0e38, np.float32)  # mean/√4 of these is 6e38: inf in float32, truly
    hidden[0, :, 0] = 1.0
    hidden[1, :, 2] = (3.0e38, -3.0e38, 3.0e38, -3.0e38)
    return hidden


@pytest.mark.parametrize("strategy", SUMS)
def test_redone_sums_warn_nothing(strategy):
    """A mean/√n past float32's range is inf (the true float32 answer); casting the float64 redo back printed
    numpy's "overflow encountered in cast" RuntimeWarning (an error under -W error), which no route printed
    before the redo."""
    hidden = _huge()
    inputs = [(hidden, None)]
    torch = pytest.importorskip("torch")
    inputs.append((torch.from_numpy(hidden), None))
    for x, mask in inputs:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = tokenpool.pool(x, mask, strategy)
        np.testing.assert_array_equal(np.asarray(got), float64_reference(hidden, strategy))


@pytest.mark.parametrize("strategy", SUMS)
def test_jax_without_x64_is_not_redone(strategy):
    """JAX without jax_enable_x64 has no float64: the redo was float32 again (inf, as JAX's own mean) and
    printed JAX's "Explicitly requested dtype float64" UserWarning on every such call. Now it is skipped: the
    rows are JAX's own float32 result, with no warning."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    assert not jax.config.jax_enable_x64
    hidden = jnp.asarray(_huge())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tokenpool.pool(hidden, None, strategy)
    if strategy == "mean":
        expected = jnp.mean(hidden, axis=1)  # JAX's own float32 mean: inf where its sum overflows
    elif strategy == "mean_sqrt_len_tokens":
        expected = jnp.sum(hidden, axis=1) / jnp.sqrt(4.0)
    else:
        weights = jnp.arange(1.0, 5.0, dtype=jnp.float32)
        expected = jnp.sum(weights[None, :, None] * hidden, axis=1) / jnp.sum(weights)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.isfinite(np.asarray(got)), np.isfinite(np.asarray(expected)))
    finite = np.isfinite(np.asarray(expected))
    np.testing.assert_allclose(np.asarray(got)[finite], np.asarray(expected)[finite], rtol=1e-6)


def test_jax_with_x64_redoes_the_sums():
    """With jax_enable_x64 the float32 means near 3.4e38 are finite and exact, as numpy's and torch's."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    try:
        hidden = _huge()
        got = np.asarray(tokenpool.pool(jax.numpy.asarray(hidden), None, "mean"))
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_array_equal(got, float64_reference(hidden, "mean"))


_IMPORT_WITH_CUDA_DEFAULT = """
import torch
torch.set_default_device("cuda")
import tokenpool.torch
print("CUDA started:", torch.cuda.is_initialized())
"""


def test_importing_the_torch_module_allocates_nothing():
    """``import tokenpool.torch`` made a tensor on torch's default device to look up torch's namespace: with
    ``torch.set_default_device("cuda")`` the import started CUDA (before a fork: its children cannot use CUDA),
    or failed where CUDA is absent. Importing a module starts nothing, as before stop 66."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, "-c", _IMPORT_WITH_CUDA_DEFAULT], capture_output=True, text=True,
                          timeout=300, env=os.environ)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CUDA started: False" in done.stdout
