"""The numpy/torch fast paths against the generic Array API reduction and the float64 loop reference."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from backends import TOLERANCE, fast_kernels, round_to, to_backend, to_numpy64
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import real_positions, reference_row
from strategies_hyp import ALL_STRATEGIES, masks

from tokenpool import pool
from tokenpool.core import fast
from tokenpool.core._backends import is_array, namespace, to_numpy
from tokenpool.core.masks import exclude_prompt, prepare_mask
from tokenpool.core.reductions import reduce_rows
from tokenpool.core.strategies import Pooling

FAST_DTYPES = {
    "numpy": ["float64", "float32", "float16"],
    "numpy-plain": ["float64", "float32"],
    "torch": ["float64", "float32", "float16", "bfloat16"],
    "torch-numpy": ["float64", "float32"],  # float16 torch tensors keep torch's kernels
    "torch-numpy-plain": ["float64", "float32"],
}
POISON = [np.nan, np.inf, -np.inf, 6.5e4]


@st.composite
def fast_inputs(draw, max_rows: int = 5, max_length: int = 12, max_dim: int = 6):
    """(backend, dtype, hidden float64 B×L×D, mask B×L, prompt lengths, poison for the padding).

    "torch" runs torch's own kernels; "torch-numpy" the numpy kernels on a zero-copy view (CPU, no autograd);
    "-plain": numpy's own reductions, without `core/compiled.py`'s kernels (which run where numba is installed).
    """
    backend = draw(st.sampled_from(list(FAST_DTYPES)))
    dtype = draw(st.sampled_from(FAST_DTYPES[backend]))
    rows, length, dim = (
        draw(st.integers(1, max_rows)),
        draw(st.integers(1, max_length)),
        draw(st.integers(1, max_dim)),
    )
    seed = draw(st.integers(0, 2**32 - 1))
    hidden = round_to(np.random.default_rng(seed).standard_normal((rows, length, dim)) * 2.0, dtype)
    mask = draw(masks(rows, length))
    prompts = draw(st.one_of(st.just([0] * rows), st.lists(st.integers(0, 3), min_size=rows, max_size=rows)))
    return backend, dtype, hidden, mask, prompts, draw(st.sampled_from(POISON))


def loop_reference(hidden, mask, prompts, strategy: str, reduction: str) -> np.ndarray:
    rows = []
    for b in range(hidden.shape[0]):
        positions = real_positions(mask[b], prompts[b])
        skipped = len(real_positions(mask[b])) - len(positions)
        rows.append(reference_row(hidden[b], positions, strategy, reduction, skipped))
    return np.stack(rows)


def plan_and_inputs(backend, dtype, hidden, mask, prompts, poison):
    """The fast plan for poisoned input, plus what the generic reduction needs to run on the same data."""
    backend = backend.split("-")[0]
    poisoned = np.where(mask[..., None] == 1, hidden, poison)
    x = to_backend(poisoned, backend, dtype)
    xp = namespace(x)
    real = prepare_mask(xp, x, to_backend(mask, backend))
    keep = exclude_prompt(xp, real, prompts)
    work_dtype = xp.float64 if dtype == "float64" else xp.float32
    plan = fast.make_plan(x, keep, work_dtype, real=real)
    return plan, xp, xp.astype(x, work_dtype), keep, real


def check_strategy(plan, xp, work, keep, real, hidden, mask, prompts, strategy, reduction, dtype):
    member = Pooling(strategy)
    got = plan.pool(member, reduction)
    assert got is not None, f"no fast path for {strategy}"
    assert got.dtype == work.dtype and tuple(got.shape) == (hidden.shape[0], hidden.shape[2])
    generic = to_numpy64(reduce_rows(xp, member, work, keep, reduction, real=real))
    expected = loop_reference(hidden, mask, prompts, strategy, reduction)
    rtol, atol = TOLERANCE["float64" if dtype == "float64" else "float32"]
    np.testing.assert_allclose(to_numpy64(got), expected, rtol=rtol, atol=atol)
    np.testing.assert_allclose(to_numpy64(got), generic, rtol=rtol, atol=atol)


@given(data=fast_inputs())
def test_every_fast_path_matches_generic_and_loop_reference(data):
    """Holes, empty rows, left/right padding, prompts, all dtypes; padding poisoned with NaN/inf/huge."""
    backend, dtype, hidden, mask, prompts, poison = data
    with fast_kernels(backend):
        plan, *rest = plan_and_inputs(*data)
        assert plan is not None
        for strategy in ALL_STRATEGIES:
            for reduction in ("max", "sum") if strategy == "splade" else ("max",):
                check_strategy(plan, *rest, hidden, mask, prompts, strategy, reduction, dtype)


@settings(max_examples=30)
@given(data=fast_inputs(max_rows=3, max_length=40, max_dim=3))
def test_chunked_paths_match_when_chunks_are_tiny(data):
    """Rows with holes and half precision go through bounded chunks: force many small ones."""
    backend, dtype, hidden, mask, prompts, poison = data
    saved, fast._CHUNK_BYTES = fast._CHUNK_BYTES, 1
    try:
        with fast_kernels(backend):
            plan, *rest = plan_and_inputs(*data)
            assert plan._chunk_tokens() <= max(1, hidden.shape[0] // 2)
            for strategy in ALL_STRATEGIES:
                for reduction in ("max", "sum") if strategy == "splade" else ("max",):
                    check_strategy(plan, *rest, hidden, mask, prompts, strategy, reduction, dtype)
    finally:
        fast._CHUNK_BYTES = saved


@pytest.mark.parametrize(
    "make",
    [
        lambda t: t.transpose(0, 1).contiguous().transpose(0, 1),  # B and L strides swapped
        lambda t: torch.stack([t, -t], dim=-1).flatten(-2)[..., ::2],  # D not unit-stride
        lambda t: torch.cat([t, t], dim=-1)[..., : t.shape[-1]],  # rows padded in memory
    ],
    ids=["swapped", "strided-D", "wide-rows"],
)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("kernels", ["torch", "torch-numpy"])
def test_torch_non_contiguous_layouts_take_the_per_row_path(make, strategy, kernels):
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((4, 7, 5))
    mask = np.array([[1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1, 0], [0] * 7])
    tensor = make(torch.from_numpy(hidden.copy()))
    assert torch.equal(tensor, torch.from_numpy(hidden))
    with fast_kernels(kernels):
        result = pool(tensor, torch.from_numpy(mask), strategy, prompt_length=[0, 1, 1, 0])
    expected = loop_reference(hidden, mask, [0, 1, 1, 0], strategy, "max")
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_numpy_non_contiguous_layout():
    hidden = np.random.default_rng(4).standard_normal((3, 6, 8))
    view = np.concatenate([hidden, hidden], axis=-1)[..., ::2]
    view[...] = hidden
    mask = np.array([[1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1], [0, 0, 0, 1, 1, 1]])
    for strategy in ALL_STRATEGIES:
        expected = loop_reference(hidden, mask, [0, 0, 0], strategy, "max")
        np.testing.assert_allclose(pool(view, mask, strategy), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["right", "left", "holes"])
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_gradcheck_through_torch_fast_paths(layout, strategy):
    """float64 gradcheck, with NaN in the padding: it reaches neither the values nor the gradients."""
    torch.manual_seed(1)
    masks_by_layout = {
        "right": [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]],
        "left": [[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]],
        "holes": [[1, 0, 1, 0, 1, 1], [0, 1, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0]],
    }
    mask = torch.tensor(masks_by_layout[layout])
    base = torch.randn(3, 6, 4, dtype=torch.float64)
    base[mask == 0] = float("nan")
    hidden = base.requires_grad_(True)
    keep = exclude_prompt(namespace(hidden), mask == 1, [1, 0, 0])
    plan = fast.make_plan(hidden, keep, torch.float64)
    assert (
        plan is not None and plan.pool(Pooling(strategy), "sum") is not None
    )  # the fast path is the one tested
    for reduction in ("max", "sum") if strategy == "splade" else ("max",):
        assert torch.autograd.gradcheck(
            lambda h, r=reduction: pool(h, mask, strategy, prompt_length=[1, 0, 0], reduction=r), (hidden,)
        )
    out = pool(hidden, mask, strategy, prompt_length=[1, 0, 0])
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(hidden.grad).all() and torch.all(hidden.grad[mask == 0] == 0)


def test_generic_backends_and_integer_input_get_no_plan():
    import array_api_strict as strict

    x = strict.asarray(np.ones((2, 3, 4)))
    keep = strict.ones((2, 3), dtype=strict.bool)
    assert fast.make_plan(x, keep, strict.float64) is None
    ints = np.ones((2, 3, 4), dtype=np.int64)
    assert fast.make_plan(ints, np.ones((2, 3), bool), np.float64) is None


def test_remembered_namespaces_match_array_api_compat_and_subclasses_are_asked_anew():
    """`namespace` remembers the namespace of plain numpy arrays and torch tensors (a per-call cost in every
    pooling call); subclasses, other libraries and non-arrays still go to array-api-compat each time."""
    import array_api_compat
    import array_api_strict as strict

    class Marked(np.ndarray):
        pass

    cases = [np.ones(2), torch.ones(2), torch.nn.Parameter(torch.ones(2)), np.ones(2).view(Marked), strict.ones(2)]
    for _ in range(2):  # the second round answers from what the first one remembered
        for x in cases:
            assert namespace(x) is array_api_compat.array_namespace(x) and is_array(x)
    assert not is_array([1.0, 2.0]) and not is_array(np.float64(1.0).item())


def test_to_numpy_views_cpu_tensors_and_detaches_tracked_ones():
    plain = torch.arange(4.0)
    view = to_numpy(plain)
    plain[0] = 7.0
    assert view[0] == 7.0  # a view of the same memory, no copy
    tracked = torch.arange(4.0, requires_grad=True) * 2
    np.testing.assert_array_equal(to_numpy(tracked), [0.0, 2.0, 4.0, 6.0])


def test_max_propagates_nan_and_inf_of_real_tokens():
    """A NaN in a *real* token is the input's NaN: it shows, as in the generic path (not silently dropped)."""
    hidden = np.zeros((2, 4, 2))
    hidden[0, 1, 0] = np.nan
    hidden[1, 0, 1] = -np.inf
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    for backend in ("numpy", "torch"):
        result = to_numpy64(pool(to_backend(hidden, backend), to_backend(mask, backend), "max"))
        assert np.isnan(result[0, 0]) and result[0, 1] == 0
        assert result[1, 1] == 0 and result[1, 0] == 0


def _output_bytes(rows, dim, itemsize):
    return rows * dim * itemsize


@pytest.mark.parametrize("layout", ["right", "left"])
def test_numpy_peak_memory_is_bounded_by_the_output(layout):
    """tracemalloc: no B×L×D temporary, only ~the output plus O(B×L) (the generic path needs > 4× B×L×D)."""
    rows, length, dim = 16, 256, 384
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((rows, length, dim), dtype=np.float32)
    lengths = rng.integers(1, length + 1, rows)
    cols = np.arange(length)[None, :]
    mask = cols < lengths[:, None] if layout == "right" else cols >= (length - lengths)[:, None]
    budget = 2 * _output_bytes(rows, dim, 4) + 32 * rows * length + 64 * 1024
    for strategy in ALL_STRATEGIES:
        pool(hidden, mask, strategy)
        tracemalloc.start()
        result = pool(hidden, mask, strategy)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del result
        assert peak <= budget, (strategy, peak, budget)
        assert peak < hidden.nbytes / 8


@pytest.mark.parametrize("kernels", ["torch", "torch-numpy"])
def test_torch_peak_memory_is_bounded_by_the_output(kernels):
    """torch CPU allocations (profiler events) plus host numpy ones (tracemalloc), for padded input."""
    from tokenpool.bench.harness import peak_extra_bytes

    rows, length, dim = 16, 256, 384
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(rows, length, dim, generator=generator)
    lengths = torch.randint(1, length + 1, (rows,), generator=generator)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    budget = 2 * _output_bytes(rows, dim, 4) + 32 * rows * length + 64 * 1024
    for strategy in ALL_STRATEGIES:
        with fast_kernels(kernels):
            pool(hidden, mask, strategy)  # first calls import modules: not the pooling's memory
            peak, _ = peak_extra_bytes(lambda s=strategy: pool(hidden, mask, s), "cpu")
        assert 0 < peak <= budget, (strategy, peak, budget)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_torch_cpu_sums_take_embedding_bag_with_the_numpy_kernels_bits(monkeypatch, layout):
    """Untracked float32 CPU tensors below the compiled kernels' size (or without numba's threads: stop 36):
    mean, mean/√n and weightedmean by one ``embedding_bag`` (on torch's threads), packed max by one
    ``scatter_reduce_``, padded max by the numpy kernels. Plain sums keep the numpy kernels' bits (each column summed token after
    token within blocks of TOKEN_BLOCK tokens, then the blocks' sums); the weighted sum may round differently (a fused multiply-add), so it is compared within float32
    tolerance. ``TORCH_CPU_ON_TORCH_THREADS = False`` gives the numpy kernels back."""
    from tokenpool import pool_packed

    calls, scatters = [], []
    original = torch.nn.functional.embedding_bag
    monkeypatch.setattr(torch.nn.functional, "embedding_bag", lambda *a, **k: calls.append(1) or original(*a, **k))
    scatter = torch.Tensor.scatter_reduce_
    monkeypatch.setattr(torch.Tensor, "scatter_reduce_", lambda *a, **k: scatters.append(1) or scatter(*a, **k))
    rng = np.random.default_rng(11)
    lengths = np.array([5, 0, 600, 1, 77])
    hidden = rng.standard_normal((5, 600, 48)).astype(np.float32)
    mask = np.arange(600)[None, :] < lengths[:, None]
    tokens, cu = hidden[mask], np.concatenate(([0], np.cumsum(lengths)))

    def run(array, strategy):
        if layout == "packed":
            return pool_packed(array(tokens), array(cu), strategy, prompt_length=[1, 0, 2, 0, 3])
        return pool(array(hidden), array(mask), strategy, prompt_length=[1, 0, 2, 0, 3])

    for strategy in ("mean", "mean_sqrt_len_tokens", "weightedmean", "max"):
        calls.clear(), scatters.clear()
        got = run(torch.from_numpy, strategy)
        # one bag over the tokens, and one over the blocks' sums: the 600-token row is longer than TOKEN_BLOCK
        assert len(calls) == (0 if strategy == "max" else 2), strategy
        assert len(scatters) == (strategy == "max" and layout == "packed"), strategy  # padded max: numpy kernels
        numpy_kernels = run(np.asarray, strategy)
        if strategy == "weightedmean":
            np.testing.assert_allclose(got.numpy(), numpy_kernels, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(got.numpy(), numpy_kernels)
        positions = [real_positions(m, p) for m, p in zip(mask, [1, 0, 2, 0, 3], strict=True)]
        expected = np.stack([reference_row(h.astype(np.float64), q, strategy, "max", len(real_positions(m)) - len(q))
                             for h, q, m in zip(hidden, positions, mask, strict=True)])  # fmt: skip
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(fast, "TORCH_CPU_ON_TORCH_THREADS", False)
    calls.clear()
    np.testing.assert_array_equal(run(torch.from_numpy, "mean").numpy(), run(np.asarray, "mean"))
    assert calls == []
