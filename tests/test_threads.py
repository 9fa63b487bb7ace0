"""Thread-count invariance of the pooling fast paths.

Tolerance: none for the numpy kernels (also used for float32/float64 torch CPU tensors) — each row is
reduced by the same calls whichever thread runs it, so results are bit-identical for 1…4 threads. torch's own
kernels (float16 here) may change their reduction order with torch's intra-op thread count: they are compared
to a float64 reference at float16 resolution instead (|d| ≤ 2e-3·max|x|), as in tests/test_fast.py. Packed
float32 torch max takes torch's scatter kernel at 1 thread and the numpy kernels at more: a max is exact, so
these agree bit for bit too. The compiled kernels (`core/compiled.py`, where numba is installed) reduce each
row with one call too, so they are bit-identical across thread counts as well.
"""

from __future__ import annotations

import numpy as np
import pytest
from backends import fast_kernels
from hypothesis import given
from hypothesis import strategies as st

from tokenpool import pool
from tokenpool.core import compiled, fast

HIDDEN_STRATEGIES = ["mean", "max", "mean_sqrt_len_tokens", "weightedmean", "cls", "lasttoken"]


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    fast.set_num_threads(None)


def _batch(rng, rows, length, dim, left=False, dtype=np.float32):
    lengths = rng.integers(0, length + 1, size=rows)
    columns = np.arange(length)[None, :]
    mask = (columns >= (length - lengths)[:, None]) if left else (columns < lengths[:, None])
    hidden = rng.standard_normal((rows, length, dim)).astype(dtype)
    hidden[~mask] = np.nan  # padding is never read, on any thread
    return hidden, mask.astype(np.int64)


@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 24),
    length=st.integers(1, 64),
    dim=st.sampled_from([8, 384, 1000]),
    left=st.booleans(),
    strategy=st.sampled_from(HIDDEN_STRATEGIES),
    prompt=st.sampled_from([None, 0, 3]),
    kernels=st.sampled_from(["numpy", "numpy-plain"]),
)
def test_numpy_results_are_bit_identical_for_any_thread_count(
    seed, rows, length, dim, left, strategy, prompt, kernels
):
    rng = np.random.default_rng(seed)
    hidden, mask = _batch(rng, rows, length, dim, left)
    old = fast._PARALLEL_ELEMENTS
    fast._PARALLEL_ELEMENTS = 1  # let even small batches take the threaded path
    try:
        results = []
        with fast_kernels(kernels):
            for threads in (1, 2, 3, 4):
                fast.set_num_threads(threads)
                results.append(pool(hidden, mask, strategy, prompt_length=prompt))
    finally:
        fast._PARALLEL_ELEMENTS = old
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    assert np.isfinite(results[0]).all()


def test_large_batch_threads_match_and_match_a_float64_loop(monkeypatch):
    rng = np.random.default_rng(7)
    hidden, mask = _batch(rng, 32, 300, 384)
    fast.set_num_threads(1)
    one = pool(hidden, mask, ["mean", "max"])
    fast.set_num_threads(2)
    used = []
    original = fast._pool_executor
    monkeypatch.setattr(fast, "_pool_executor", lambda n: used.append(n) or original(n))
    two = pool(hidden, mask, ["mean", "max"])
    assert used == [2, 2]  # the second thread took part, once per strategy
    np.testing.assert_array_equal(one, two)
    ref = np.zeros((32, 768))
    for i in range(32):
        real = hidden[i, mask[i].astype(bool)].astype(np.float64)
        if len(real):
            ref[i, :384], ref[i, 384:] = real.mean(0), real.max(0)
    np.testing.assert_allclose(two, ref, rtol=1e-5, atol=1e-5)


def test_torch_paths_follow_torch_threads():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    hidden, mask = _batch(rng, 16, 128, 256)
    hidden = np.nan_to_num(hidden, nan=0.0)
    before = torch.get_num_threads()
    try:
        results = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert fast.get_num_threads() == threads  # the numpy kernels follow torch's setting
            for dtype in (torch.float32, torch.float16):
                t = torch.from_numpy(hidden).to(dtype)
                results[threads, dtype] = pool(t, torch.from_numpy(mask), "mean").double().numpy()
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(results[1, torch.float32], results[2, torch.float32])
    scale = np.abs(hidden).max()
    np.testing.assert_allclose(results[1, torch.float16], results[2, torch.float16], rtol=0, atol=2e-3 * scale)


def test_bad_thread_counts_are_rejected():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive int or None"):
            fast.set_num_threads(bad)


@given(
    seed=st.integers(0, 2**32 - 1),
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    dim=st.sampled_from([8, 384]),
    prompt=st.sampled_from([None, 0, 2]),
    strategy=st.sampled_from(["max", "splade"]),
)
def test_packed_torch_max_is_the_same_with_the_scatter_kernel_and_the_numpy_threads(
    seed, lengths, dim, prompt, strategy
):
    """Packed float32 torch max runs torch's scatter_reduce at 1 thread and the numpy row groups at more (or the
    scatter at any count, on torch's threads, by default): a max is exact, so all give the same bits (and the float64 loop's values); empty rows are zeros."""
    torch = pytest.importorskip("torch")
    from tokenpool import pool_packed

    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.standard_normal((sum(lengths), dim)).astype(np.float32))
    cu = torch.tensor(np.concatenate(([0], np.cumsum(lengths))))
    calls = []
    original = fast._TorchSegments.max
    old = fast._PARALLEL_ELEMENTS
    fast._PARALLEL_ELEMENTS = 1
    try:
        fast._TorchSegments.max = lambda self, *a: calls.append(1) or original(self, *a)
        results = []
        with fast_kernels("torch-numpy-plain"):  # (the compiled kernels, where numba is installed, take every count)
            for threads in (1, 2, 3):
                fast.set_num_threads(threads)
                results.append(pool_packed(tokens, cu, strategy, prompt_length=prompt).numpy())
        with fast_kernels("torch-numpy"):
            results.append(pool_packed(tokens, cu, strategy, prompt_length=prompt).numpy())
    finally:
        fast._TorchSegments.max = original
        fast._PARALLEL_ELEMENTS = old
    # the scatter kernel: without torch's threads at 1 thread only; with them (TORCH_CPU_ON_TORCH_THREADS) unless the
    # compiled kernels run on numba's threads (stop 36)
    kernels = compiled.kernels()
    assert len(calls) == (1 if kernels is not None and kernels.parallel else 2)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    skip = prompt or 0
    for i, (start, n) in enumerate(zip(np.cumsum([0, *lengths[:-1]]), lengths, strict=True)):
        rows = tokens.numpy()[start + min(skip, n) : start + n].astype(np.float64)
        want = rows.max(0) if len(rows) else np.zeros(dim)
        want = np.log1p(np.maximum(want, 0)) if strategy == "splade" and len(rows) else want
        np.testing.assert_allclose(results[0][i], want, rtol=1e-6)
