"""Stop 66, core pooling math: float32 sums past 3.4e38 (item 1), torch.compile warnings (item 2), torch's
float8_e8m0fnu (item 5)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tokenpool
from tokenpool.core import fast
from tokenpool.core.pooling import finish_vectors

torch = pytest.importorskip("torch")

SUMS = ("mean", "weightedmean", "mean_sqrt_len_tokens")
# float32's largest finite value is 3.4028235e38: two such tokens overflow a float32 sum
HUGE = (3.0e38, -3.0e38, 2.5e38, 1.0e38, -1.5e38, 1.0, 0.0)


def float64_reference(hidden: np.ndarray, mask: np.ndarray, prompt: int, strategy: str) -> np.ndarray:
    """The pooled rows by a plain loop in float64 (the exact mean of float32 values fits float64 with room)."""
    rows = []
    for values, real in zip(hidden.astype(np.float64), mask, strict=True):
        positions = np.flatnonzero(real)[prompt:]
        kept = values[positions]
        if len(positions) == 0:
            rows.append(np.zeros(values.shape[-1]))
            continue
        if strategy == "weightedmean":
            weights = np.arange(prompt + 1, prompt + len(positions) + 1, dtype=np.float64)
            rows.append((weights[:, None] * kept).sum(0) / weights.sum())
        else:
            divisor = len(positions) if strategy == "mean" else np.sqrt(len(positions))
            rows.append(kept.sum(0) / divisor)
    return np.stack(rows)


@st.composite
def huge_inputs(draw):
    rows, length, dim = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    values = draw(st.lists(st.sampled_from(HUGE), min_size=rows * length * dim, max_size=rows * length * dim))
    lengths = draw(st.lists(st.integers(0, length), min_size=rows, max_size=rows))
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    hidden = np.array(values, dtype=np.float32).reshape(rows, length, dim)
    return hidden, mask, draw(st.sampled_from(SUMS)), draw(st.sampled_from([0, 1]))


def _routes(hidden: np.ndarray, mask: np.ndarray):
    """(name, hidden, mask, pool call) for each route a float32 batch can take."""
    x = torch.from_numpy(hidden)
    yield "numpy", hidden, mask
    yield "torch-cpu", x, torch.from_numpy(mask)
    yield "torch-tracked", x.clone().requires_grad_(), torch.from_numpy(mask)  # torch's own kernels
    yield "torch-bfloat16", x.to(torch.bfloat16), torch.from_numpy(mask)


def _as64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check(got, hidden, mask, prompt, strategy, bfloat16=False, atol=0.0, cancelling=False):
    """``cancelling``: a row's float32 sum that does not overflow keeps float32's order-dependent rounding
    (1 + 1 + 3e38 - 3e38 is 2 or 0), so each row may be off by the summation bound L·2⁻²⁴·Σ|x| / divisor."""
    expected = float64_reference(hidden, mask, prompt, strategy)
    if cancelling:
        atol = hidden.shape[1] * 2.0**-24 * float64_reference(np.abs(hidden), mask, prompt, strategy)
    with np.errstate(over="ignore"):  # mean/√n may pass float32's range: inf is then the true answer
        expected = expected.astype(np.float32).astype(np.float64)
    got = _as64(got)
    assert not np.isnan(got).any()
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    rtol = 1e-2 if bfloat16 else 1e-6
    finite = np.isfinite(expected)
    assert np.all(np.abs(got - expected)[finite] <= (rtol * np.abs(expected) + atol)[finite]), (got, expected)


_CANCELLING = (np.array([3.0e38, 1.0, 1.0, 3.0e38, -3.0e38], np.float32).reshape(1, 5, 1), np.ones((1, 5), np.int64),
               "mean", 1)  # numpy sums 1 + 1 + 3e38 - 3e38 pairwise (0.5), torch in order (0.0): both float32's


@settings(max_examples=150, deadline=None)
@given(data=huge_inputs())
@example(data=_CANCELLING)
def test_float32_sums_past_the_range_are_finite_and_exact(data):
    """A mean of float32 values near 3e38 is finite (the mean lies between the values) and equals the float64
    loop's, on every route: numpy and torch fast paths, torch's own kernels, the generic path, pool_packed."""
    hidden, mask, strategy, prompt = data
    for name, x, m in _routes(hidden, mask):
        reference_hidden = hidden if name != "torch-bfloat16" else _as64(x).astype(np.float32)
        got = tokenpool.pool(x, m, strategy, prompt_length=prompt or None)
        _check(got, reference_hidden, mask, prompt, strategy, bfloat16=name == "torch-bfloat16", cancelling=True)
    lengths = mask.sum(1)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    packed = np.concatenate([hidden[i, :n] for i, n in enumerate(lengths)])
    for tokens in (packed, torch.from_numpy(packed)):
        _check(tokenpool.pool_packed(tokens, offsets, strategy, prompt_length=prompt or None),
               hidden, mask, prompt, strategy, cancelling=True)  # fmt: skip


def test_float32_overflow_on_the_generic_path(monkeypatch):
    """The generic Array API path (what JAX, CuPy and array-api-strict take) gives the same finite mean."""
    hidden = np.full((2, 3, 2), 3.0e38, np.float32)
    hidden[1, :, 1] = (3.0e38, 3.0e38, -3.0e38)
    mask = np.array([[1, 1, 1], [1, 1, 1]])
    monkeypatch.setattr(fast, "make_plan", lambda *args, **kwargs: None)
    monkeypatch.setattr(fast, "host_plan", lambda *args, **kwargs: None)
    for strategy in SUMS:
        for x, m in ((hidden, mask), (torch.from_numpy(hidden), torch.from_numpy(mask))):
            _check(tokenpool.pool(x, m, strategy), hidden, mask, 0, strategy)


def test_float32_overflow_on_the_compiled_path():
    """Inputs large enough for the compiled (numba) kernels: rows whose sum overflows are finite too, and the
    other rows keep their float32 sums bit for bit."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(66)
    hidden = rng.standard_normal((4, 512, 1024)).astype(np.float32)
    hidden[1] = 3.0e38
    hidden[2, :, :7] = -3.0e38
    mask = np.ones((4, 512), np.int64)
    mask[3, 300:] = 0
    for strategy in SUMS:
        got = tokenpool.pool(hidden, mask, strategy)
        _check(got, hidden, mask, 0, strategy, atol=1e-6)  # (float32 rounding in the rows of normal values)
        np.testing.assert_array_equal(got[[0, 3]], tokenpool.pool(hidden[[0, 3]], mask[[0, 3]], strategy))


def test_float32_overflow_gradient_is_finite():
    """The recomputed rows stay in autograd's graph: the gradient of a mean is 1/n per token, finite."""
    x = torch.full((1, 4, 2), 3.0e38, requires_grad=True)
    tokenpool.pool(x, torch.ones(1, 4), "mean").sum().backward()
    torch.testing.assert_close(x.grad, torch.full((1, 4, 2), 0.25))


def _e8m0_inputs():
    """float8_e8m0fnu hidden states (torch's, and ml_dtypes' as numpy and JAX hold them): powers of two only."""
    values = np.array([[[2.0, 4.0], [8.0, 16.0]], [[1.0, 1.0], [1.0, 1.0]]], np.float32)
    yield torch.from_numpy(values).to(torch.float8_e8m0fnu)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    yield values.astype(ml_dtypes.float8_e8m0fnu)


@pytest.mark.parametrize("strategy", ["mean", "max", "cls", "lasttoken", "weightedmean", "mean_sqrt_len_tokens"])
def test_float8_e8m0fnu_is_refused_where_a_zero_row_cannot_be_returned(strategy):
    """float8_e8m0fnu (an MX scale format) holds no zero and no sign: the zero vector of a row without tokens
    came back as 5.9e-39 (torch) or NaN (ml_dtypes), and the rows' signs and normalised values were lost. It is
    refused with a message that says why and what to do (as complex input is: TypeError)."""
    mask = np.array([[1, 1], [0, 0]])
    for hidden in _e8m0_inputs():
        m = torch.from_numpy(mask) if isinstance(hidden, torch.Tensor) else mask
        with pytest.raises(TypeError, match="float8_e8m0fnu.*no zero"):
            tokenpool.pool(hidden, m, strategy)
        with pytest.raises(TypeError, match="float8_e8m0fnu"):
            tokenpool.pool_packed(hidden[0], [0, 2, 2], strategy)
        with pytest.raises(TypeError, match="float8_e8m0fnu"):
            finish_vectors(hidden[:, 0], normalize=True)


def test_float8_formats_with_a_zero_still_pool():
    """The float8 formats that hold zero are pooled as before: an empty row is a zero vector."""
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        got = tokenpool.pool(torch.ones(2, 2, 3).to(dtype), torch.tensor([[1, 1], [0, 0]]), "mean")
        assert got.dtype == dtype and got.float().tolist() == [[1.0] * 3, [0.0] * 3]


_COMPILE_POOL = """
import warnings, torch
from tokenpool.torch import Pool
module = torch.compile(Pool(["mean", "max"], normalize=True), backend="eager")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = module(torch.randn(2, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
assert out.shape == (2, 8)
print("WARNINGS", [str(w.message)[:120] for w in caught])
"""


def test_compiling_pool_gives_no_warning():
    """``torch.compile(Pool(...))`` printed 18 Dynamo warnings about lru_cache'd functions: array-api-compat's
    type checks, reached from `is_array`, `device`, `without_empty_chunks` and the first `namespace` of a
    tensor inside the traced forward. Run in a fresh process (nothing remembered yet), with Dynamo's "eager"
    backend: the warnings come from tracing, and no C++ compiler is needed."""
    import os
    import subprocess
    import sys

    from tokenpool.torch import Pool

    try:
        done = subprocess.run([sys.executable, "-c", _COMPILE_POOL], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONWARNINGS": "default"})  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("torch.compile took over 300 s on this machine")
    if done.returncode != 0 and "torch._dynamo" in done.stderr and "Unsupported" in done.stderr:
        pytest.skip(f"torch.compile does not run here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WARNINGS []" in done.stdout, done.stdout
    with warnings.catch_warnings():  # (and the eager module still pools as `pool` does)
        warnings.simplefilter("error")
        x = torch.randn(2, 3, 4)
        torch.testing.assert_close(Pool("mean")(x), tokenpool.pool(x, None, "mean"))
