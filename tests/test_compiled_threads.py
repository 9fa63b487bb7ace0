"""`core/compiled.py`'s kernels on numba's threads: the serial kernels' bits, torch's threads and forks unharmed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from backends import counting_kernels
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool

from tokenpool import pool, pool_packed
from tokenpool.core import compiled, fast

numba_kernels = pytest.mark.skipif(compiled.kernels() is None, reason="numba is not installed")


@numba_kernels
@given(
    lengths=st.lists(st.integers(0, 60), min_size=1, max_size=12),
    parts=st.integers(1, 5),
    dim=st.sampled_from([1, 3, 17]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=80, deadline=None)
def test_parts_on_numba_threads_give_the_serial_kernels_bits(lengths, parts, dim, dtype, seed):
    """Rows cut into any number of parts (more parts than rows, empty rows, all in one) give the serial kernel's
    bits, write every listed row and no other."""
    kernels = compiled.kernels()
    rng = np.random.default_rng(seed)
    counts = np.array(lengths, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    table = rng.standard_normal((int(counts.sum()) + 1, dim)).astype(dtype)
    rows = np.flatnonzero(counts).astype(np.int64)
    ranks, base = np.arange(1, 80, dtype=dtype), np.zeros(len(counts), dtype=np.int64)
    scale = (1 / np.maximum(counts, 1)).astype(dtype)
    for name, extra in (("sum_rows", (scale,)), ("max_rows", ()), ("weighted_rows", (ranks, base, scale))):
        serial = np.full((len(counts), dim), 7, dtype=dtype)
        getattr(kernels, name)(table, starts, counts, rows, *extra, serial)
        parted = np.full((len(counts), dim), 7, dtype=dtype)
        kernels.run(name, parts, table, starts, counts, rows, *extra, parted)
        np.testing.assert_array_equal(parted, serial)
        assert (parted[counts == 0] == 7).all()  # rows not listed are never written
        if name == "sum_rows" and dim >= 2:  # the row scale applied in the kernel: numpy sum (D >= 2: same order) times it
            for r in rows:
                want = np.einsum("ij->j", table[starts[r] : starts[r] + counts[r]]) * scale[r]
                np.testing.assert_array_equal(serial[r], want)


@numba_kernels
@pytest.mark.parametrize("packed", [False, True])
def test_two_long_rows_on_two_threads_read_like_one(packed, monkeypatch):
    """Two rows, one per thread (the shape that shared a cache line between threads): same bits as one thread,
    the float64 loop's values, and the parts ran as one call on numba's threads."""
    kernels = compiled.kernels()
    if not kernels.parallel:
        pytest.skip("numba's threading layer is its workqueue here")
    monkeypatch.setattr(fast, "COMPILED_ELEMENTS", 1)
    monkeypatch.setattr(fast, "_PARALLEL_ELEMENTS", 1)
    calls = counting_kernels(monkeypatch)
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((2, 700, 48)).astype(np.float32)
    mask = np.ones((2, 700), dtype=bool)
    tokens, cu = hidden.reshape(-1, 48), np.array([0, 700, 1400])
    results = {}
    for threads in (1, 2):
        fast.set_num_threads(threads)
        try:
            results[threads] = [pool_packed(tokens, cu, s) if packed else pool(hidden, mask, s)
                                for s in ("mean", "max", "weightedmean")]  # fmt: skip
        finally:
            fast.set_num_threads(None)
    assert calls == ["sum_rows", "max_rows", "weighted_rows"] * 2
    for one, two, strategy in zip(results[1], results[2], ("mean", "max", "weightedmean"), strict=True):
        np.testing.assert_array_equal(one, two)
        np.testing.assert_allclose(two, reference_pool(hidden, mask, strategy), rtol=1e-5, atol=1e-5)


@numba_kernels
def test_torch_cpu_tensors_take_the_compiled_kernels_on_numba_threads(monkeypatch):
    """Large untracked float32 CPU tensors: no embedding_bag, no scatter, when the compiled kernels run on
    numba's threads (their pool's threads no longer wait for torch's); the numpy array's bits."""
    torch = pytest.importorskip("torch")
    if not compiled.kernels().parallel:
        pytest.skip("numba's threading layer is its workqueue here")
    monkeypatch.setattr(fast, "COMPILED_ELEMENTS", 1)
    monkeypatch.setattr(fast, "_PARALLEL_ELEMENTS", 1)
    bags, scatters = [], []
    bag, scatter = torch.nn.functional.embedding_bag, torch.Tensor.scatter_reduce_
    monkeypatch.setattr(torch.nn.functional, "embedding_bag", lambda *a, **k: bags.append(1) or bag(*a, **k))
    monkeypatch.setattr(torch.Tensor, "scatter_reduce_", lambda *a, **k: scatters.append(1) or scatter(*a, **k))
    rng = np.random.default_rng(5)
    lengths = np.array([40, 0, 300, 7])
    tokens = rng.standard_normal((int(lengths.sum()), 24)).astype(np.float32)
    cu = np.concatenate(([0], np.cumsum(lengths)))
    fast.set_num_threads(2)
    try:
        for strategy in ("mean", "mean_sqrt_len_tokens", "weightedmean", "max"):
            got = pool_packed(torch.from_numpy(tokens), torch.from_numpy(cu), strategy, prompt_length=[1, 0, 2, 3])
            want = pool_packed(tokens, cu, strategy, prompt_length=[1, 0, 2, 3])
            np.testing.assert_array_equal(got.numpy(), want)
    finally:
        fast.set_num_threads(None)
    assert bags == [] and scatters == []


def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env=None if env is None else {**os.environ, **env})  # fmt: skip


@numba_kernels
def test_starting_numba_threads_leaves_torch_thread_count_alone():
    """numba's first parallel launch, and (once torch has run an op, as a model's forward pass does before the
    first pooling call) the compiling of its parallel drivers, set the OpenMP thread count of the calling
    thread, which torch shares: torch.set_num_threads(1) read 2 after the first large pooling call."""
    pytest.importorskip("torch")
    for torch_op in ("", "torch.ones(1 << 22).add(1).sum()"):
        done = _run_python(f"""
            import numpy as np, torch
            torch.set_num_threads(1)
            {torch_op}
            from tokenpool.core import compiled, fast
            assert compiled.kernels().parallel
            print(torch.get_num_threads())
        """)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["1"], torch_op


@numba_kernels
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_pools_on_its_own_threads():
    """GNU OpenMP kills a forked child that enters it after the parent did ("fork() called from a process
    already using GNU OpenMP"): the child pools on the thread pool instead, with the parent's bits."""
    done = _run_python("""
        import os, numpy as np
        from tokenpool import pool_packed
        from tokenpool.core import compiled, fast
        fast.COMPILED_ELEMENTS = fast._PARALLEL_ELEMENTS = 1
        fast.set_num_threads(2)
        tokens = np.random.default_rng(1).standard_normal((900, 16)).astype(np.float32)
        cu = np.array([0, 300, 450, 900])
        parent = [pool_packed(tokens, cu, s) for s in ("mean", "max", "weightedmean")]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            child = [pool_packed(tokens, cu, s) for s in ("mean", "max", "weightedmean")]
            same = all(np.array_equal(a, b) for a, b in zip(parent, child))
            os.write(write, b"same" if same and not compiled.kernels().parallel else b"different")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.read(read, 20).decode(), os.waitstatus_to_exitcode(status), compiled.kernels().parallel)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["same", "0", "True"], (done.stdout, done.stderr)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_of_a_thread_pool_user_does_not_hang():
    """The child inherited the parent's thread pool without its threads: its first threaded pooling call queued
    work that nothing ran, and it waited for ever (a DataLoader worker, a multiprocessing fork)."""
    done = _run_python("""
        import os, numpy as np
        from tokenpool import pool_packed
        from tokenpool.core import compiled, fast
        compiled.ENABLED = False
        fast._PARALLEL_ELEMENTS = 1
        fast.set_num_threads(2)
        tokens = np.random.default_rng(1).standard_normal((900, 16)).astype(np.float32)
        cu = np.array([0, 300, 450, 900])
        parent = pool_packed(tokens, cu, "mean")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, b"same" if np.array_equal(pool_packed(tokens, cu, "mean"), parent) else b"different")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.read(read, 20).decode(), os.waitstatus_to_exitcode(status))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["same", "0"], (done.stdout, done.stderr)


@numba_kernels
@given(
    values=st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), -float("inf")]),
                    min_size=1, max_size=11),
    dtype=st.sampled_from([np.float32, np.float64]),
)  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_compiled_max_of_two_tokens_at_a_time_keeps_the_token_order_bits(values, dtype):
    """The max kernel folds two tokens per pass over its accumulator: bit for bit the token-by-token maximum
    that keeps the first of equal values (+0 / -0) and lets a NaN win, as the kernel did one token at a time;
    numpy's ``maximum.reduce`` gives the same values (its SIMD loops may pick the other zero)."""
    kernels = compiled.kernels()
    column = np.array(values, dtype=dtype)
    table = np.ascontiguousarray(np.stack([column, column[::-1], np.roll(column, 1)], axis=1))
    out = np.empty((1, 3), dtype=dtype)
    one = np.zeros(1, dtype=np.int64)
    kernels.max_rows(table, one, np.array([len(values)]), one, out)
    expected = table[0].copy()
    for token in table[1:]:
        for j, value in enumerate(token):
            if not (expected[j] >= value or expected[j] != expected[j]):
                expected[j] = value
    assert out[0].tobytes() == expected.tobytes()
    np.testing.assert_array_equal(out[0], np.maximum.reduce(table, axis=0))


@numba_kernels
@pytest.mark.parametrize("setting", ["NUMBA_THREADING_LAYER=workqueue", "NUMBA_THREADING_LAYER=tbb-missing",
                                     "NUMBA_NUM_THREADS=1"])  # fmt: skip
def test_without_a_usable_numba_threading_layer_the_thread_pool_runs_the_parts(setting):
    """numba's workqueue layer (it aborts when two threads enter it), a layer that does not load (no TBB here:
    its error stays inside), or one numba thread: the parts run on the thread pool, with the same results and
    nothing printed."""
    name, value = setting.split("=")
    if value == "tbb-missing":
        import importlib.util

        if importlib.util.find_spec("tbb") is not None:
            pytest.skip("TBB is installed here")
        value = "tbb"
    done = _run_python("""
        import numpy as np
        from tokenpool import pool_packed
        from tokenpool.core import compiled, fast
        fast.COMPILED_ELEMENTS = fast._PARALLEL_ELEMENTS = 1
        fast.set_num_threads(2)
        tokens = np.random.default_rng(1).standard_normal((900, 16)).astype(np.float32)
        got = pool_packed(tokens, np.array([0, 300, 900]), "mean")
        want = np.stack([tokens[:300].astype(np.float64).mean(0), tokens[300:].astype(np.float64).mean(0)])
        print(compiled.kernels().parallel, np.allclose(got, want, rtol=1e-5, atol=1e-6))
    """, env={name: value})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
    assert "Traceback" not in done.stderr, done.stderr


@numba_kernels
@given(sizes=st.lists(st.integers(0, 600), min_size=1, max_size=70), parts=st.integers(1, 9))
@settings(max_examples=200, deadline=None)
def test_compiled_token_bounds_cut_where_the_python_ones_do(sizes, parts):
    """`Kernels.token_bounds` (numba's threads) and `fast._token_bounds` (the thread pool) make the same parts."""
    sizes = np.array(sizes, dtype=np.int64)
    python = fast._token_bounds(sizes, parts)
    bounds = compiled.kernels().token_bounds(sizes, parts)
    assert list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)) == python
