"""`fast.host_plan` reads a plain host mask in place: a loop's spans, the checked route's bits and errors."""

from __future__ import annotations

import numpy as np
import pytest
from backends import fast_kernels, mask_layout
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool import pool
from tokenpool.core import compiled, fast, pooling

numba_kernels = pytest.mark.skipif(compiled.kernels() is None, reason="numba is not installed")
STRATEGIES = ["mean", "max", "mean_sqrt_len_tokens", "weightedmean", "splade", "cls", "lasttoken"]


def _loop_spans(mask: np.ndarray) -> tuple[int, list[int], list[int]]:
    """(status, first real position, real count) by a plain loop: status -2 at a value other than 0/1, else -1
    when some row's real positions are not consecutive, else the real tokens of all rows."""
    values = mask.astype(np.int64).tolist()
    if any(v not in (0, 1) for row in values for v in row):
        return -2, [], []
    status, starts, counts = 0, [], []
    for row in values:
        real = [j for j, v in enumerate(row) if v]
        starts.append(real[0] if real else 0)
        counts.append(len(real))
        if real and real[-1] - real[0] + 1 != len(real):
            status = -1
    return status or sum(counts), starts, counts


@numba_kernels
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 9),
    length=st.integers(0, 40),
    layout=st.sampled_from(["right", "left", "holes"]),
    dtype=st.sampled_from([np.bool_, np.int32, np.int64]),
    bad=st.sampled_from([None, 2, -1, 7]),
)
@settings(max_examples=150, deadline=None)
def test_mask_spans_equal_a_loop(seed, rows, length, layout, dtype, bad):
    rng = np.random.default_rng(seed)
    mask = mask_layout(rng, rows, length, layout).astype(dtype)
    if bad is not None and dtype != np.bool_ and length:
        mask[rng.integers(rows), rng.integers(length)] = bad
    starts, counts = np.full(rows, -5, np.int64), np.full(rows, -5, np.int64)
    status = compiled.kernels().mask_spans(mask, starts, counts)
    want_status, want_starts, want_counts = _loop_spans(mask)
    assert status == want_status
    if status != -2:
        assert starts.tolist() == want_starts and counts.tolist() == want_counts


def _checked_route(monkeypatch, call):
    """``call()`` with `fast.host_plan` declined: the mask is checked and made boolean first, as before stop 37."""
    with monkeypatch.context() as patch:
        patch.setattr(fast, "host_plan", lambda *args: None)
        return call()


@numba_kernels
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 7),
    length=st.integers(1, 30),
    dim=st.sampled_from([1, 5, 64]),
    layout=st.sampled_from(["right", "left", "holes", "none"]),
    mask_dtype=st.sampled_from([np.bool_, np.int32, np.int64]),
    library=st.sampled_from(["numpy", "torch"]),
)
@settings(max_examples=80, deadline=None)
def test_host_route_gives_the_checked_routes_bits(seed, rows, length, dim, layout, mask_dtype, library):
    """Every strategy, numpy arrays and CPU tensors, boolean and integer masks (and None): the same bits as the
    route through `prepare_mask` and `make_plan`; padding holds NaN, which neither may read."""
    rng = np.random.default_rng(seed)
    mask = None if layout == "none" else mask_layout(rng, rows, length, layout).astype(mask_dtype)
    hidden = rng.standard_normal((rows, length, dim)).astype(np.float32)
    if mask is not None:
        hidden[mask == 0] = np.nan
    if library == "torch":
        torch = pytest.importorskip("torch")
        hidden, mask = torch.from_numpy(hidden), None if mask is None else torch.from_numpy(mask)
    patch = pytest.MonkeyPatch()
    try:
        with fast_kernels("torch-numpy"):  # compiled kernels (and so the host route) for inputs of any size
            for strategy in STRATEGIES:
                got = pool(hidden, mask, strategy)
                want = _checked_route(patch, lambda strategy=strategy: pool(hidden, mask, strategy))
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    finally:
        patch.undo()


@numba_kernels
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_host_route_skips_the_boolean_mask_and_declines_what_it_cannot_read(library, monkeypatch):
    """A plain integer mask is never made boolean (`prepare_mask` is not called); a mask with holes, a float
    mask, or a value other than 0/1 is (the last raising `prepare_mask`'s error, naming the value)."""
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((4, 6, 8)).astype(np.float32)
    plain = np.array([[1] * 6, [1] * 3 + [0] * 3, [0] * 6, [0, 0, 1, 1, 1, 1]], dtype=np.int64)
    holes, floats, bad = plain.copy(), plain.astype(np.float32), plain.copy()
    holes[0, 2] = 0
    bad[1, 4] = 3
    if library == "torch":
        torch = pytest.importorskip("torch")
        hidden = torch.from_numpy(hidden)
        plain, holes, floats, bad = (torch.from_numpy(m) for m in (plain, holes, floats, bad))
    calls = []
    original = pooling.prepare_mask
    monkeypatch.setattr(pooling, "prepare_mask", lambda *a: calls.append(1) or original(*a))
    with fast_kernels("torch-numpy"):
        pool(hidden, plain, "mean")
        assert calls == []
        for mask in (holes, floats):
            pool(hidden, mask, "mean")
        assert len(calls) == 2
        with pytest.raises(ValueError, match=r"must hold only 0 and 1 \(or True/False\), found \[3\]"):
            pool(hidden, bad, "mean")


@numba_kernels
def test_host_route_takes_untracked_tensors_only(monkeypatch):
    """A tensor that requires grad is read through numpy only while autograd records nothing (its values, no
    graph); while it records, torch's kernels keep the gradient."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    hidden = torch.from_numpy(rng.standard_normal((3, 5, 4)).astype(np.float32)).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    with fast_kernels("torch-numpy"):
        with torch.no_grad():
            quiet = pool(hidden, mask, "mean")
        tracked = pool(hidden, mask, "mean")
    assert not quiet.requires_grad and tracked.requires_grad
    np.testing.assert_allclose(quiet.numpy(), tracked.detach().numpy(), rtol=1e-6, atol=1e-7)
    tracked.sum().backward()
    assert hidden.grad is not None and float(hidden.grad[2].abs().sum()) == 0.0


def test_a_padded_batch_of_few_real_tokens_does_not_import_numba():
    """The host route only uses kernels that a call reading enough tokens has built: a large padded batch with
    few real tokens pools without importing numba (its import costs ~0.5 s per process)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from tokenpool import pool
        hidden = np.ones((64, 512, 64), np.float32)  # 2^21 elements: the compiled kernels' size
        mask = np.zeros((64, 512), np.int64)
        mask[:, :20] = 1  # 4% real tokens: far below it
        out = pool(hidden, mask, "mean")
        assert np.allclose(out, 1.0)
        print("numba" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
