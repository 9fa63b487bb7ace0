"""Stop 47's bug hunt of the pooling core: each test failed before its fix and compares with the float64 loop
reference (`reference.py`) or names the refused value."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import reference_pool
from strategies_hyp import ALL_STRATEGIES, masks

from tokenpool import pack, pool, pool_packed


@st.composite
def batches(draw):
    """(hidden B×L×D float64, its 0/1 mask of any layout, per-row prompt lengths, a strategy)."""
    rows, length, dim = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    hidden = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal((rows, length, dim))
    prompts = draw(st.lists(st.integers(0, 3), min_size=rows, max_size=rows))
    return hidden, draw(masks(rows, length)), prompts, draw(st.sampled_from(ALL_STRATEGIES))


@given(case=batches(), packed=st.booleans())
def test_torch_func_grad_reads_torch_offsets_and_prompt_lengths(case, packed):
    """Inside ``torch.func.grad`` even a plain tensor made outside it has no storage to view, so torch
    ``cu_seqlens`` (what `pack` and flash-attention hand over) and torch per-row ``prompt_length`` raised
    "Cannot access data pointer of Tensor that doesn't have storage"; now they are read, and the pooled rows
    are the reference's."""
    torch = pytest.importorskip("torch")
    hidden, mask, prompts, strategy = case
    tokens, offsets = pack(torch.tensor(hidden), torch.tensor(mask))
    lengths = torch.tensor(prompts)
    seen = []

    def loss(x):
        if packed:
            pooled = pool_packed(x, offsets, strategy, prompt_length=lengths)
        else:
            pooled = pool(x, torch.tensor(mask), strategy, prompt_length=lengths)
        seen.append(np.array(pooled.tolist()))  # (.numpy() has no storage here either)
        return pooled.sum()

    torch.func.grad(loss)(tokens if packed else torch.tensor(hidden))
    np.testing.assert_allclose(seen[0], reference_pool(hidden, mask, strategy, prompt_length=prompts), atol=1e-12)


def test_torch_func_grad_names_a_bad_mask_value():
    """A mask value other than 0/1 inside ``torch.func.grad`` raised torch's RuntimeError ("Cannot access data
    pointer") instead of the ValueError naming the value."""
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"found \[2\]"):
        torch.func.grad(lambda x: pool(x, torch.tensor([[1, 2, 0]]), "mean").sum())(torch.ones(1, 3, 2))


NUMPY_MASK_LAYOUTS = {
    "reversed view": lambda m: np.ascontiguousarray(m[:, ::-1])[:, ::-1],  # negative strides (``m[:, ::-1]``)
    "big-endian": lambda m: m.astype(">i8"),  # (``np.load`` of a file written on a big-endian machine)
    "big-endian float": lambda m: m.astype(">f4"),
    "read-only": lambda m: np.frombuffer(m.astype(np.int64).tobytes(), np.int64).reshape(m.shape),
}


@given(case=batches(), layout=st.sampled_from(sorted(NUMPY_MASK_LAYOUTS)), single=st.booleans())
def test_numpy_masks_of_any_memory_layout_pool_torch_states(case, layout, single):
    """A numpy mask of torch hidden states is converted to torch: one seen through a reversed view (negative
    strides) or stored big-endian raised torch's ValueError ("At least one stride in the given numpy array is
    negative", "byte order different from the native byte order"), and a read-only one warned ("The given
    NumPy array is not writable"); now each pools as the reference does, without a warning."""
    torch = pytest.importorskip("torch")
    hidden, mask, _, strategy = case
    if single:
        hidden, mask = hidden[:1], mask[:1]
    given_mask = NUMPY_MASK_LAYOUTS[layout](mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if single:
            pooled = pool(torch.tensor(hidden[0]), given_mask[0], strategy)[None]
        else:
            pooled = pool(torch.tensor(hidden), given_mask, strategy)
    np.testing.assert_allclose(pooled.numpy(), reference_pool(hidden, mask, strategy), atol=1e-12)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_running_pool_names_a_dtype_of_another_library(library):
    """``RunningPool(dtype=np.float64)`` fed torch blocks raised AttributeError ("type object 'numpy.float64' has
    no attribute 'is_floating_point'"), and ``dtype=torch.float64`` fed numpy blocks numpy's TypeError; now a
    ValueError names the dtype and the blocks' library."""
    torch = pytest.importorskip("torch")
    from tokenpool.core.streaming import RunningPool

    dtype, block = (torch.float64, np.ones((2, 3))) if library == "numpy" else (np.float64, torch.ones(2, 3))
    with pytest.raises(ValueError, match=rf"real floating dtype of {type(block).__name__}'s library .*{dtype!r}"):
        RunningPool("mean", 1, 3, dtype=dtype).add(0, block)



@pytest.mark.filterwarnings("ignore::UserWarning")  # (torch: nested tensors are a prototype)
def test_sparse_and_nested_torch_tensors_are_refused_naming_their_layout():
    """A sparse or nested torch tensor as hidden states, mask, packed tokens, vectors or a streamed block raised
    torch's internals ("SymIntArrayRef expected to contain only concrete integers", "NestedTensorImpl doesn't
    support sizes", "Could not run 'aten::where.self' with arguments from the 'SparseCPU' backend"); now a
    ValueError names what was given, its layout, and the way to pool it."""
    torch = pytest.importorskip("torch")
    from tokenpool.core.pooling import finish_vectors
    from tokenpool.core.streaming import RunningPool

    dense, rows = torch.arange(12.0).reshape(2, 3, 2), [torch.ones(2, 3), torch.zeros(4, 3)]
    calls = [
        ("hidden states", "nested", lambda: pool(torch.nested.nested_tensor(rows, layout=torch.jagged))),
        ("hidden states", "nested", lambda: pool(torch.nested.nested_tensor(rows))),
        ("hidden states", "sparse", lambda: pool(dense.to_sparse(), None, "max")),
        ("attention_mask", "sparse", lambda: pool(dense, torch.ones(2, 3).to_sparse())),
        ("attention_mask", "sparse", lambda: pool(dense[0], torch.ones(3).to_sparse())),
        ("packed tokens", "sparse", lambda: pool_packed(dense.reshape(6, 2).to_sparse(), [0, 3, 6])),
        ("vectors", "sparse", lambda: finish_vectors(dense[0].to_sparse_csr(), normalize=True)),
        ("tokens", "sparse", lambda: RunningPool("mean", 1, 2).add(0, dense[0].to_sparse())),
    ]
    for what, kind, call in calls:
        with pytest.raises(ValueError, match=rf"^{what}: a {kind} torch tensor \(layout torch\.\w+\)"):
            call()
    tokens = torch.nested.nested_tensor(rows, layout=torch.jagged)  # what the message advises pools it
    np.testing.assert_array_equal(pool_packed(tokens.values(), tokens.offsets()).numpy(), [[1, 1, 1], [0, 0, 0]])


@given(seed=st.integers(0, 2**32 - 1), length=st.integers(120, 260), layout=st.sampled_from(["right", "left", "holes"]),
       prompt=st.integers(0, 3), tracked=st.booleans(), data=st.data())
def test_weightedmean_under_torch_autocast_is_accumulated_in_float32(seed, length, layout, prompt, tracked, data):
    """Under ``torch.autocast`` (mixed-precision inference or training) the rank-weighted sum of weightedmean ran as
    a matmul, which autocast runs in float16: Σ rank·h overflowed (inf rows from ~115 tokens of magnitude 10) for
    float16 states, and `RunningPool` returned float16 infs for float32 blocks; now it is a product and a sum,
    accumulated in float32 as outside autocast."""
    torch = pytest.importorskip("torch")
    from tokenpool.core.streaming import RunningPool

    rows = data.draw(st.integers(1, 3))
    hidden = np.random.default_rng(seed).standard_normal((rows, length, 3)) + 10
    mask = data.draw(masks(rows, length, layout))
    half = torch.tensor(hidden, dtype=torch.float16, requires_grad=tracked)
    with torch.autocast("cpu", dtype=torch.float16):
        pooled = pool(half, torch.tensor(mask), "weightedmean", prompt_length=prompt)
        running = RunningPool("weightedmean", 1, 3)
        running.add(0, torch.tensor(hidden[0], dtype=torch.float32))
        streamed = running.read()
    seen = half.detach().double().numpy()
    np.testing.assert_allclose(pooled.detach().double().numpy(),
                               reference_pool(seen, mask, "weightedmean", prompt_length=prompt), rtol=2e-3, atol=2e-3)
    assert streamed.dtype == torch.float32
    np.testing.assert_allclose(streamed.numpy(), reference_pool(hidden[:1], np.ones((1, length)), "weightedmean"),
                               rtol=1e-5)
