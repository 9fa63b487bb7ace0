"""Stop 57, core math: a batch of no rows (Dask) and vectors of no width under ``normalize``, against a plain
float64 loop written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies_hyp import masks, strategy_lists

from tokenpool import pool
from tokenpool.core.pooling import finish_vectors


def loop_unit_rows(rows: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm, one value at a time in float64; a zero row stays zero."""
    out = np.zeros(rows.shape)
    for i, row in enumerate(rows.tolist()):
        norm = math.sqrt(sum(value * value for value in row))
        out[i] = [value / norm if norm else 0.0 for value in row]
    return out


@pytest.mark.parametrize("strategy", ["mean", "max", "splade"])
@pytest.mark.parametrize("shape", [(0, 3, 2), (0, 0, 1)])
def test_dask_batch_of_no_rows_normalises(strategy, shape):
    """``pool(dask_zeros((0, 3, 2)), normalize=True).compute()`` raised numpy's 'zero-size array to reduction
    operation maximum' (Dask's max over a block of no rows); it is an empty (0, D) result, as without
    ``normalize`` and as numpy's."""
    da = pytest.importorskip("dask.array")
    hidden = da.from_array(np.zeros(shape), chunks=(2, -1, -1))
    out = pool(hidden, None, strategy, normalize=True)
    assert isinstance(out, da.Array)
    assert out.compute().shape == (0, shape[2])
    vectors = finish_vectors(da.from_array(np.zeros((0, 4)), chunks=(2, -1)), normalize=True)
    assert vectors.compute().shape == (0, 4)


@pytest.mark.parametrize("shape", [(2, 0), (0, 0), (0, 3), (3, 2)])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_finish_vectors_normalize_returns_a_new_array_of_any_shape(shape, library):
    """``finish_vectors(np.zeros((2, 0)), normalize=True)`` returned the input itself, where the docstring
    promises "always a new array, never ``vectors``"; every shape now gives a new array with the loop's rows."""
    rows = np.arange(math.prod(shape), dtype=np.float32).reshape(shape) - 2
    vectors = rows
    if library == "torch":
        torch = pytest.importorskip("torch")
        vectors = torch.from_numpy(rows.copy())
    out = finish_vectors(vectors, normalize=True)
    assert out is not vectors and out.dtype == vectors.dtype and tuple(out.shape) == shape
    np.testing.assert_allclose(np.asarray(out, dtype=np.float64), loop_unit_rows(rows), rtol=1e-6)
    out[...] = 7  # (writing into the result leaves the input as it was)
    np.testing.assert_array_equal(np.asarray(vectors), rows)


def _complex_inputs():
    torch = pytest.importorskip("torch")
    from tokenpool import pool_packed
    from tokenpool.core.streaming import RunningPool

    yield "vectors", lambda: finish_vectors(np.ones((2, 3), dtype=np.complex64))
    yield "vectors", lambda: finish_vectors(torch.ones(2, 3, dtype=torch.complex64), normalize=True)
    yield "packed tokens", lambda: pool_packed(np.ones((4, 3), dtype=complex), [0, 1, 4])
    yield "tokens", lambda: RunningPool("mean", 1, 3).add(0, np.ones((2, 3), dtype=complex), 0)
    yield "hidden states", lambda: pool(torch.ones(1, 2, 3, dtype=torch.complex128))


@pytest.mark.parametrize(("what", "call"), list(_complex_inputs()))
def test_complex_input_is_refused_naming_the_input_given(what, call):
    """``finish_vectors(complex_rows)`` said "hidden states must be real" (``pool_packed``'s and
    ``RunningPool.add``'s refusals too): each names its own input now."""
    with pytest.raises(TypeError, match=rf"^{what} must be real, got dtype .*complex"):
        call()


def test_dequantize_bound_is_half_a_step_plus_half_an_ulp_of_the_result():
    """docs/precision.md bounded the int8 round trip by range/510 + |v|·2⁻²⁴ ("half a float32 ulp of the value"),
    but the float32 rounding is of the dequantized value, which can sit in the binade above v: v = 7.5/255 in
    a [0, 1] range comes back as float32(8/255), 1e-10 past that bound. The page now states the result's ulp,
    (|v| + range/510)·2⁻²⁴, which every value of a fine grid over the range keeps (checked in a float64 loop)."""
    from pathlib import Path

    from tokenpool.core.quantize import Calibration, dequantize, quantize

    page = (Path(__file__).resolve().parents[1] / "docs" / "precision.md").read_text(encoding="utf-8")
    assert "ulp of the value" not in page and "(|v| + range/510)·2⁻²⁴" in page
    calibration = Calibration(np.array([0.0, -3.0]), np.array([1.0, 50.0]))
    grid = np.stack([np.linspace(0.0, 1.0, 5101), np.linspace(-3.0, 50.0, 5101)], axis=1)
    grid[0, 0] = 7.5 / 255  # a tie: its code is 8
    back = dequantize(quantize(grid, "int8", calibration), "int8", calibration)
    span = [1.0, 53.0]
    for row, vector in zip(back.tolist(), grid.tolist(), strict=True):
        for d, (value, original) in enumerate(zip(row, vector, strict=True)):
            assert abs(value - original) <= span[d] / 510 + (abs(original) + span[d] / 510) * 2**-24
    tie = abs(float(back[0, 0]) - 7.5 / 255)
    assert tie > 1 / 510 + 7.5 / 255 * 2**-24  # (the old sentence's bound does not hold)


@pytest.mark.parametrize("reduction", ["max", "sum"])
def test_dask_splade_over_no_vocabulary_keeps_every_row(reduction):
    """``pool(dask (3, 4, 0) logits, None, "splade")`` computed 2 rows, not 3 (Dask's max over blocks of no
    columns drops a block): a batch of B rows of no width pools to B×0, as numpy's."""
    da = pytest.importorskip("dask.array")
    logits = np.zeros((3, 4, 0), dtype=np.float32)
    out = pool(da.from_array(logits, chunks=(2, -1, -1)), None, "splade", reduction=reduction)
    assert out.compute().shape == (3, 0) == pool(logits, None, "splade", reduction=reduction).shape


def loop_value(values: list[float], name: str, reduction: str) -> float:
    """One dimension of one row's pooled vector from its real tokens' values, in float64."""
    if not values:
        return 0.0
    if name in ("cls", "lasttoken"):
        return values[0] if name == "cls" else values[-1]
    if name == "max":
        return max(values)
    if name == "splade":
        activated = [math.log1p(max(value, 0.0)) for value in values]
        return max(activated) if reduction == "max" else sum(activated)
    if name == "weightedmean":
        return sum(rank * value for rank, value in enumerate(values, 1)) / (len(values) * (len(values) + 1) / 2)
    return sum(values) / (len(values) if name == "mean" else math.sqrt(len(values)))


def loop_pool(hidden: np.ndarray, mask: np.ndarray, strategies: list[str], reduction: str) -> np.ndarray:
    """B×L×D → B×(k·D) in float64, one row, strategy and dimension at a time (empty rows give zeros)."""
    rows, length, dim = hidden.shape
    out = np.zeros((rows, dim * len(strategies)))
    for b in range(rows):
        for k, name in enumerate(strategies):
            for d in range(dim):
                values = [float(hidden[b, t, d]) for t in range(length) if mask[b, t]]
                out[b, k * dim + d] = loop_value(values, name, reduction)
    return out


@st.composite
def _chunked_inputs(draw):
    shape = tuple(draw(st.integers(0, n)) for n in (4, 5, 3))
    hidden = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    chunks = tuple(draw(st.integers(1, max(n, 1))) for n in shape)
    strategies = draw(strategy_lists(2))
    reduction = draw(st.sampled_from(["max", "sum"])) if strategies == ["splade"] else "max"
    return hidden, draw(masks(shape[0], shape[1])), chunks, strategies, reduction, draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(_chunked_inputs())
def test_dask_any_chunking_and_empty_axis_matches_the_loop(case):
    """Dask hidden states of any chunking, with no rows, no tokens or no width, against the float64 loop."""
    da = pytest.importorskip("dask.array")
    hidden, mask, chunks, strategies, reduction, normalize = case
    out = pool(da.from_array(hidden, chunks=chunks), mask, strategies, reduction=reduction, normalize=normalize)
    expected = loop_pool(hidden, mask, strategies, reduction)
    np.testing.assert_allclose(out.compute(), loop_unit_rows(expected) if normalize else expected, atol=1e-12)


def test_dequantize_reads_codes_of_any_library_as_quantize_reads_vectors():
    """``dequantize(codes_tensor)`` read its codes with ``np.asarray``: a float32/float16 tensor tracked by
    autograd (or one on a GPU) raised torch's RuntimeError, where `quantize` reads the same tensor; the codes
    now come through the one host conversion `quantize` uses, and give the loop's values."""
    torch = pytest.importorskip("torch")
    from tokenpool.core.quantize import dequantize, hamming_distance, quantize, unpack_signs

    vectors = np.array([[0.5, -1.25, 3.0], [-0.0, 2.0, -7.5]], dtype=np.float32)
    for precision in ("float32", "float16"):
        codes = torch.from_numpy(quantize(vectors, precision)).requires_grad_()
        assert dequantize(codes, precision).tolist() == vectors.tolist()
    bits = quantize(vectors, "ubinary")
    signs = [[1.0 if value > 0 else -1.0 for value in row] for row in vectors.tolist()]
    assert unpack_signs(torch.from_numpy(bits), dimension=3).tolist() == signs
    assert hamming_distance(torch.from_numpy(bits), bits).tolist() == [[0, 3], [3, 0]]
