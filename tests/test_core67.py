"""Stop 67, core pooling math: torch.compile(fullgraph=True) with integer/float masks (item 1), the streamed
finiteness check (item 2), and a demanding user's inputs against a float64 loop reference (item 3)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool
from strategies_hyp import pooling_inputs

import tokenpool

torch = pytest.importorskip("torch")

# rows with holes, left padding, an empty row and a full row
_MASK = [[1, 1, 0, 1, 0, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]


def _reference(hidden: np.ndarray, mask: np.ndarray, strategy: str) -> np.ndarray:
    """A float64 loop over each row's real tokens (zeros for a row without any)."""
    out = np.zeros((hidden.shape[0], hidden.shape[2]))
    for i in range(hidden.shape[0]):
        tokens = hidden[i][np.asarray(mask[i]) != 0].astype(np.float64)
        if len(tokens) == 0:
            continue
        if strategy == "mean":
            out[i] = tokens.mean(0)
        elif strategy == "max":
            out[i] = tokens.max(0)
        elif strategy == "lasttoken":
            out[i] = tokens[-1]
        elif strategy == "weightedmean":
            weights = np.arange(1, len(tokens) + 1)
            out[i] = weights @ tokens / weights.sum()
    return out


@pytest.mark.usefixtures("quiet_dynamo")
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32, torch.uint8])
def test_fullgraph_compile_of_pool_with_a_numeric_mask(dtype):
    """``torch.compile(pool, fullgraph=True)`` with an integer or float mask failed: the mask's 0/1 check and
    `host_view`'s torch.func check read data while Dynamo traced. Now: the eager result, forward and backward,
    once the check's op is registered (as `tokenpool.torch`'s import and any eager torch mask do)."""
    from tokenpool.core.masks import register_torch_mask_check

    register_torch_mask_check()
    torch._dynamo.reset()
    strategies = ["mean", "max", "lasttoken", "weightedmean"]

    def pooled(hidden, mask):
        return tokenpool.pool(hidden, mask, strategies)

    compiled = torch.compile(pooled, fullgraph=True, backend="aot_eager")
    hidden = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor(_MASK, dtype=dtype)
    out = compiled(hidden, mask)
    expected = np.concatenate([_reference(hidden.detach().numpy(), np.array(_MASK), s) for s in strategies], 1)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(out.sum(), hidden)
    eager_hidden = hidden.detach().clone().requires_grad_(True)
    (eager_grad,) = torch.autograd.grad(pooled(eager_hidden, mask).sum(), eager_hidden)
    torch.testing.assert_close(grad, eager_grad)


@pytest.mark.usefixtures("quiet_dynamo")
@pytest.mark.parametrize("fullgraph", [True, False])
def test_compiled_module_with_an_integer_mask_still_checks_its_values(fullgraph):
    """The `tokenpool.torch.Pool` module under fullgraph: the 0/1 check is one op of the graph (it runs on the
    real values), so a mask of 2s is still refused, with eager's message."""
    from tokenpool.torch import Pool

    torch._dynamo.reset()
    module = Pool(["mean", "max"], prompt_length=1)
    compiled = torch.compile(module, fullgraph=fullgraph, backend="aot_eager")
    hidden = torch.randn(4, 6, 3)
    mask = torch.tensor(_MASK)
    torch.testing.assert_close(compiled(hidden, mask), module(hidden, mask))
    with pytest.raises(ValueError, match=r"only 0 and 1 \(or True/False\), found \[2\]"):
        compiled(hidden, mask * 2)


_PLAIN_COMPILE = """
import warnings, torch, tokenpool
hidden, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 0, 1, 0], [0, 0, 1, 1, 1]])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = torch.compile(tokenpool.pool, backend="eager", fullgraph=True)(hidden, mask.bool(), "mean")
torch.testing.assert_close(out, tokenpool.pool(hidden, mask, "mean"))
print("WARNINGS", [str(w.message)[:120] for w in caught])
"""


def test_plain_compile_of_pool_gives_no_warning():
    """``torch.compile(tokenpool.pool)`` without `tokenpool.torch` printed 5 Dynamo warnings: the first
    `namespace` of a tensor asked array-api-compat's lru_cache'd type checks inside the trace."""
    try:
        done = subprocess.run([sys.executable, "-c", _PLAIN_COMPILE], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONWARNINGS": "default"})  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("torch.compile took over 300 s on this machine")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WARNINGS []" in done.stdout, done.stdout


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the reads of a tensor's value on the host (``bool(t)``, ``t.item()``): on CUDA each is a sync."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.__bool__, torch.Tensor.item):
            self.reads += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("strategy", ["mean", "weightedmean", "splade"])
def test_streamed_float16_blocks_read_nothing_on_the_host(strategy):
    """`RunningPool` checked its float32 running sums for NaN/inf after every float16 block (a device→host sync
    per block on CUDA), though float16 values cannot overflow a float32 sum (`pool` skips its check for them).
    Its rows still equal `pool`'s, an inf token included."""
    from tokenpool.core.streaming import RunningPool

    hidden = torch.randn(1, 12, 4).to(torch.float16)
    hidden[0, 5, 1] = float("inf")
    running = RunningPool(strategy, 1, 4)
    with _HostReads() as counter:
        for start in range(0, 12, 3):
            running.add(0, hidden[0, start : start + 3], start)
    assert counter.reads == 0
    torch.testing.assert_close(running.read().to(torch.float16), tokenpool.pool(hidden, None, strategy),
                               equal_nan=True)  # fmt: skip


def _negative_strides(x: np.ndarray) -> np.ndarray:
    """``x``'s values in a view whose every stride is negative."""
    flip = (slice(None, None, -1),) * x.ndim
    return x[flip].copy()[flip]


def _read_only(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x.flags.writeable = False
    return x


_LAYOUTS = {  # hidden states as a demanding user hands them over: same values, other memory
    "numpy": lambda x: x,
    "numpy-fortran": np.asfortranarray,
    "numpy-negative-strides": _negative_strides,
    "numpy-read-only": _read_only,
    "numpy-float32": lambda x: x.astype(np.float32),
    "torch": torch.from_numpy,
    "torch-transposed-view": lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2))).transpose(0, 1),
    "torch-tracked": lambda x: torch.tensor(x, requires_grad=True),
    "jax": lambda x: pytest.importorskip("jax.numpy").asarray(x.astype(np.float32)),
    "array-api-strict": lambda x: pytest.importorskip("array_api_strict").asarray(x),
}
_MASKS = {
    "same-library": lambda mask, like: mask,
    "bool": lambda mask, like: mask.astype(bool),
    "float": lambda mask, like: mask.astype(np.float32),
    "list": lambda mask, like: mask.tolist(),
    "torch-int32": lambda mask, like: torch.tensor(mask, dtype=torch.int32),
    "numpy-negative-strides": lambda mask, like: _negative_strides(mask),
}


def _as_library_of(mask: np.ndarray, hidden) -> object:
    """``mask`` in ``hidden``'s own library."""
    if isinstance(hidden, np.ndarray):
        return mask
    if isinstance(hidden, torch.Tensor):
        return torch.from_numpy(mask)
    return hidden.__array_namespace__().asarray(mask)


def _host(x) -> np.ndarray:
    """A float64 numpy copy of a result of any library."""
    if isinstance(x, torch.Tensor):
        return x.detach().double().numpy()
    return np.from_dlpack(x).astype(np.float64)


@settings(max_examples=60, deadline=None)
@given(pooling_inputs(), st.sampled_from(sorted(_LAYOUTS)), st.sampled_from(sorted(_MASKS)))
def test_every_layout_and_mask_kind_matches_a_float64_loop(drawn, layout, mask_kind):
    """Every strategy and option on every library, through the fast paths (strided, Fortran-order, read-only,
    transposed-view and tracked inputs) with int, bool, float, list and other-library masks: the float64 loop."""
    hidden, mask, options = drawn
    given_hidden = _LAYOUTS[layout](hidden)
    given_mask = _MASKS[mask_kind](mask, given_hidden)
    if mask_kind == "same-library":
        given_mask = _as_library_of(mask, given_hidden)
    out = tokenpool.pool(given_hidden, given_mask, **options)
    expected = reference_pool(hidden, mask, options.pop("strategy"), **options)
    tolerance = 1e-4 if layout in ("numpy-float32", "jax") else 1e-9
    np.testing.assert_allclose(_host(out), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("shape", [(0, 4, 3), (2, 0, 3), (2, 4, 0), (0, 0, 0)])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_zero_size_dimensions_give_zero_rows_of_the_right_shape(shape, layout):
    """B=0, L=0 and D=0 on every library and layout: B×(D·strategies) zeros (no token pools to zero)."""
    strategies = ["mean", "max", "cls", "lasttoken", "weightedmean", "mean_sqrt_len_tokens"]
    hidden = np.zeros(shape)
    mask = np.ones(shape[:2], dtype=np.int64)
    out = _host(tokenpool.pool(_LAYOUTS[layout](hidden), mask, strategies))
    np.testing.assert_array_equal(out, np.zeros((shape[0], shape[2] * len(strategies))))


@pytest.mark.parametrize(("library", "dtype", "largest"), [
    ("torch", "float16", 65504.0), ("torch", "bfloat16", 3.38e38), ("torch", "float32", 3.4e38),
    ("numpy", "float16", 65504.0), ("numpy", "float32", 3.4e38),
])  # fmt: skip
@pytest.mark.parametrize("strategy", ["mean", "max", "weightedmean", "mean_sqrt_len_tokens", "lasttoken"])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # (numpy's, for 146k in float16)
def test_half_and_single_precision_extremes_match_a_float64_loop(library, dtype, largest, strategy):
    """Tokens at their dtype's largest magnitude, both signs: the float64 loop's rows rounded to the dtype (a
    mean/√n past the range is inf, its true value there), never NaN from an overflowed sum."""
    values = np.full((2, 5, 3), largest)
    values[1, :, 1] = -largest
    values[0, 3:, 2] = -largest
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    hidden = torch.tensor(values).to(getattr(torch, dtype)) if library == "torch" else values.astype(dtype)
    exact = _host(hidden)  # (the values as the dtype holds them)
    out = tokenpool.pool(hidden, mask, strategy)
    expected = torch.tensor(reference_pool(exact, mask, strategy)).to(getattr(torch, dtype))
    assert not np.isnan(_host(out)).any()
    np.testing.assert_allclose(_host(out), _host(expected), rtol=1e-2)


@pytest.mark.usefixtures("quiet_dynamo")
def test_fullgraph_compile_with_a_prompt_length_per_row():
    """A tensor ``prompt_length`` (one count per row) under ``torch.compile(fullgraph=True)`` failed: its cap at
    L was ``xp.minimum(counts, L)``, whose Python scalar makes array-api-compat call torch.result_type, which
    Dynamo cannot trace. Now: the float64 loop's rows."""
    torch._dynamo.reset()
    compiled = torch.compile(lambda h, m, p: tokenpool.pool(h, m, ["weightedmean", "mean"], prompt_length=p),
                             fullgraph=True, backend="aot_eager")  # fmt: skip
    hidden = torch.randn(4, 6, 3, dtype=torch.float64)
    counts = [1, 2, 0, 9]
    out = compiled(hidden, torch.tensor(_MASK).bool(), torch.tensor(counts))
    expected = reference_pool(hidden.numpy(), np.array(_MASK), ["weightedmean", "mean"], prompt_length=counts)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("quiet_dynamo")
def test_export_with_an_integer_mask():
    """``torch.export`` of `Pool` with an integer mask failed ("Could not guard on data-dependent expression"):
    the mask's 0/1 check read its values. Exported, the values go unchecked (as under jax.jit): the program
    holds torch's own ops only. Its rows are the float64 loop's."""
    from tokenpool.torch import Pool

    hidden, mask = torch.randn(4, 6, 3, dtype=torch.float64), torch.tensor(_MASK)
    exported = torch.export.export(Pool(["mean", "max"]), (hidden, mask)).module()
    assert "tokenpool" not in str(exported.graph)
    expected = reference_pool(hidden.numpy(), np.array(_MASK), ["mean", "max"])
    np.testing.assert_allclose(exported(hidden, mask).numpy(), expected, rtol=1e-12, atol=1e-12)
