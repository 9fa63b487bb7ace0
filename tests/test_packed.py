"""`pool_packed`, `pack` and `unpack`: packed rows pool exactly like the same rows padded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from backends import (
    BACKENDS,
    DTYPES,
    KERNELS,
    TOLERANCE,
    dtype_name,
    fast_kernels,
    require,
    round_to,
    to_backend,
    to_numpy64,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_pool
from strategies_hyp import ALL_STRATEGIES, pooling_inputs

from tokenpool import pack, pool, pool_packed, unpack


def packed_by_hand(hidden: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The real tokens of each row in order, and their offsets: written out with a loop, independent of `pack`."""
    rows = [hidden[b][mask[b] == 1] for b in range(hidden.shape[0])]
    offsets = [0]
    for row in rows:
        offsets.append(offsets[-1] + len(row))
    tokens = np.concatenate(rows) if rows else np.zeros((0, hidden.shape[2]))
    return tokens.reshape(-1, hidden.shape[2]), np.array(offsets)


def check_packed(backend: str, data, choice, dtype: str | None = None):
    require(backend)
    hidden, mask, options = data
    dtype = dtype or choice.draw(st.sampled_from(DTYPES[backend]))
    seen = round_to(hidden, dtype)
    tokens, offsets = packed_by_hand(hidden, mask)
    packed = pool_packed(to_backend(tokens, backend, dtype), to_backend(offsets, backend), **options)
    padded = pool(to_backend(hidden, backend, dtype), to_backend(mask, backend), **options)
    expected = reference_pool(
        seen, mask, options["strategy"], **{k: v for k, v in options.items() if k != "strategy"}
    )
    assert dtype_name(packed) == dtype and tuple(packed.shape) == expected.shape
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_numpy64(packed), expected, rtol=rtol, atol=atol)
    # packed and padded run different code (spans of a table vs masks): they agree to accumulation order
    np.testing.assert_allclose(to_numpy64(packed), to_numpy64(padded), rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", KERNELS)
@given(data=pooling_inputs(), choice=st.data())
def test_pool_packed_equals_pool_for_every_strategy_and_option(backend, data, choice):
    """ "torch" uses torch's kernels, "torch-numpy" the numpy kernels on a view of the CPU tensor; "-plain"
    numpy's own reductions instead of the compiled ones."""
    with fast_kernels(backend):
        check_packed(backend.split("-")[0], data, choice)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("numpy", "torch")])
@settings(max_examples=5)  # the generic route (unpack, then pool): JAX compiles each new shape
@given(data=pooling_inputs(), choice=st.data())
def test_pool_packed_on_generic_backends(backend, data, choice):
    check_packed(backend, data, choice, dtype="float32")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@given(data=pooling_inputs(), side=st.sampled_from(["right", "left"]), pad=st.sampled_from([0.0, np.nan]))
def test_pack_unpack_round_trip(backend, data, side, pad):
    hidden, mask, _ = data
    tokens, offsets = pack(to_backend(hidden, backend), to_backend(mask, backend))
    expected_tokens, expected_offsets = packed_by_hand(hidden, mask)
    np.testing.assert_array_equal(to_numpy64(tokens), expected_tokens)
    np.testing.assert_array_equal(np.asarray(offsets.tolist()), expected_offsets)
    assert dtype_name(offsets) == "int32"
    padded, new_mask = unpack(tokens, offsets, padding_side=side, pad_value=pad)
    new_mask = np.asarray(new_mask.tolist())
    lengths = mask.sum(axis=1)
    longest = int(lengths.max(initial=0))
    assert tuple(padded.shape) == (hidden.shape[0], longest, hidden.shape[2])
    np.testing.assert_array_equal(new_mask.sum(axis=1), lengths)
    for b, n in enumerate(lengths):
        real = np.flatnonzero(new_mask[b])
        assert list(real) == (list(range(n)) if side == "right" else list(range(longest - n, longest)))
        np.testing.assert_array_equal(to_numpy64(padded)[b, real], hidden[b][mask[b] == 1])
        padding = to_numpy64(padded)[b][new_mask[b] == 0]
        assert np.all(np.isnan(padding)) if np.isnan(pad) else np.all(padding == pad)


def test_single_sequence_pack():
    hidden = np.arange(12.0).reshape(4, 3)
    tokens, offsets = pack(hidden, [0, 1, 1, 0])
    np.testing.assert_array_equal(tokens, hidden[1:3])
    assert offsets.tolist() == [0, 2]


@pytest.mark.parametrize(
    ("offsets", "words"),
    [
        ([1, 3, 6], ["start at 0", "[1, 3, 6]"]),
        ([0, 4, 2, 6], ["must not decrease", "4 is followed by 2", "[0, 4, 2, 6]"]),
        ([0, 3, 5], ["end at the number of tokens 6", "got 5"]),
        ([0, 3, 7], ["end at the number of tokens 6", "got 7"]),
        ([0.0, 6.0], ["integers", "float64"]),
        ([[0, 6]], ["1-D", "(1, 2)"]),
        ([], ["non-empty", "(0,)"]),
        ([True, False], ["integers", "bool"]),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bad_offsets_are_value_errors_naming_them(offsets, words, backend):
    tokens = to_backend(np.zeros((6, 2)), backend)
    cu = np.array(offsets) if backend == "numpy" else offsets
    for call in (lambda: pool_packed(tokens, cu), lambda: unpack(tokens, cu)):
        with pytest.raises(ValueError) as info:
            call()
        for word in words:
            assert word in str(info.value)


def test_tokens_must_be_two_dimensional():
    with pytest.raises(ValueError, match=r"T×D .*\(2, 3, 4\)"):
        pool_packed(np.zeros((2, 3, 4)), [0, 2])
    with pytest.raises(ValueError, match="reduction"):
        pool_packed(np.zeros((2, 3)), [0, 2], "splade", reduction="mean")
    with pytest.raises(ValueError, match="unknown pooling strategy"):
        pool_packed(np.zeros((2, 3)), [0, 2], "median")
    with pytest.raises(ValueError, match="padding_side"):
        unpack(np.zeros((2, 3)), [0, 2], padding_side="middle")


def test_prompt_longer_than_a_row_and_empty_rows_give_zeros():
    tokens = np.arange(1.0, 11.0).reshape(5, 2)
    offsets = [0, 0, 2, 5]
    for strategy in ALL_STRATEGIES:
        result = pool_packed(tokens, offsets, strategy, prompt_length=[0, 2, 1])
        assert np.all(result[0] == 0) and np.all(result[1] == 0)
        expected = reference_pool(tokens[None, 2:5], [[1, 1, 1]], strategy, prompt_length=1)[0]
        np.testing.assert_allclose(result[2], expected, rtol=1e-12)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_gradcheck_pool_packed_and_unpack(strategy):
    torch.manual_seed(2)
    tokens = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    offsets = torch.tensor([0, 4, 4, 9], dtype=torch.int32)
    for reduction in ("max", "sum") if strategy == "splade" else ("max",):
        assert torch.autograd.gradcheck(
            lambda t, r=reduction: pool_packed(
                t, offsets, strategy, prompt_length=[1, 0, 2], reduction=r, normalize=True
            ),
            (tokens,),
        )
    assert torch.autograd.gradcheck(lambda t: unpack(t, offsets, padding_side="left")[0], (tokens,))


def test_half_precision_sums_do_not_overflow():
    tokens = np.full((700, 3), 200.0)
    for backend in ("numpy", "torch"):
        result = pool_packed(
            to_backend(tokens, backend, "float16"), to_backend(np.array([0, 300, 700]), backend)
        )
        np.testing.assert_allclose(to_numpy64(result), np.full((2, 3), 200.0), rtol=1e-3)


def test_pack_refuses_dask_arrays_clearly_and_unpack_takes_them():
    """pack of a Dask array raised Dask's NotImplementedError about boolean indexers; a TypeError now says what to
    do. unpack (indexing by positions) takes Dask tokens and gives the padded rows of the computed ones."""
    da = pytest.importorskip("dask.array")
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    with pytest.raises(TypeError, match=r"pack does not take Dask arrays.*hidden\.compute\(\)"):
        pack(da.from_array(hidden), mask)
    tokens, offsets = pack(hidden, mask)
    padded, kept = unpack(da.from_array(tokens, chunks=2), offsets)
    expected, expected_kept = unpack(tokens, offsets)
    np.testing.assert_array_equal(np.asarray(padded.compute()), expected)
    np.testing.assert_array_equal(np.asarray(kept), np.asarray(expected_kept))


@pytest.mark.parametrize("pad_value", [0.5, 300, -129, float("nan"), float("inf")])
def test_unpack_refuses_a_pad_value_integer_tokens_cannot_hold(pad_value):
    """unpack(int8 tokens, pad_value=0.5) padded with 0 (300: 44) without a word; refused naming the value."""
    tokens, offsets = np.arange(6, dtype=np.int8).reshape(3, 2), np.array([0, 1, 3])
    for library_tokens in (tokens, torch.from_numpy(tokens)):
        with pytest.raises(ValueError, match=r"pad_value .* is not a value of the tokens' dtype"):
            unpack(library_tokens, offsets, pad_value=pad_value)
    padded, _ = unpack(tokens, offsets, pad_value=-128)  # one it can hold: as given
    assert padded.dtype == np.int8 and padded[0, 1].tolist() == [-128, -128]
