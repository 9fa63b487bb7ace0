"""Stop 58's bug hunt of the core: each test failed before its fix and compares with the float64 loop reference
(`reference.py`) or the documented text."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference import reference_pool
from strategies_hyp import ALL_STRATEGIES

import tokenpool
from tokenpool.core.pooling import finish_vectors
from tokenpool.core.quantize import PRECISIONS, bytes_per_vector, code_width, quantize
from tokenpool.errors import ModelOutputError

HIDDEN = np.random.default_rng(58).standard_normal((3, 5, 4)).astype(np.float32)
MASK = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=np.int32)  # right, left, empty


@pytest.mark.parametrize("device", ["no_x64", "device1"])
@pytest.mark.parametrize("prompt", [None, 1, [1, 0, 2], "array"])
def test_array_api_strict_devices_pool_as_the_reference(device, prompt):
    """array-api-strict's "no_x64" device (no 64-bit types, as some accelerators) refused cls, lasttoken,
    weightedmean and any prompt_length ("does not support dtype=int64": ranks, per-row counts and packed
    indexes were int64), and on any non-default device a per-row prompt_length array, `pack` and a bad mask's
    message raised "Can't convert array ... to a NumPy array". Now every strategy, packed or padded, gives the
    float64 reference's rows on that device."""
    xp = pytest.importorskip("array_api_strict")
    where, cpu = xp.Device(device), xp.Device("CPU_DEVICE")
    hidden, mask = xp.asarray(HIDDEN, device=where), xp.asarray(MASK, device=where)
    lengths = [1, 0, 2] if prompt == "array" else prompt
    given = xp.asarray(np.array(lengths, dtype=np.int32), device=where) if prompt == "array" else prompt
    tokens, offsets = tokenpool.pack(hidden, mask)
    for strategy in ALL_STRATEGIES:
        expected = reference_pool(HIDDEN, MASK, strategy, prompt_length=lengths)
        for pooled in (tokenpool.pool(hidden, mask, strategy, prompt_length=given),
                       tokenpool.pool_packed(tokens, offsets, strategy, prompt_length=given)):  # fmt: skip
            assert pooled.device == where
            np.testing.assert_allclose(np.asarray(pooled.to_device(cpu)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"found \[2\]"):
        tokenpool.pool(hidden, xp.asarray(MASK * 2, device=where))
    with pytest.raises(ModelOutputError, match="row 1"):  # (it names the row read on the host)
        finish_vectors(xp.asarray(np.array([[0, 1], [np.inf, 0]], np.float32), device=where), finite=True)


@pytest.mark.parametrize("given", ["list", "numpy", "float64", "bool", "one row"])
def test_a_list_or_numpy_mask_pools_on_a_device_without_int64(given):
    """The README: a mask may be "from any library or a plain list ... converted to the hidden states' library
    and device". On array-api-strict's "no_x64" device a list or a numpy int64 / float64 mask was moved there
    as it was ("does not support dtype=int64"); now its values are checked on the host and moved as booleans,
    and the rows are the float64 reference's."""
    xp = pytest.importorskip("array_api_strict")
    where, cpu = xp.Device("no_x64"), xp.Device("CPU_DEVICE")
    mask = {"list": MASK.tolist(), "numpy": MASK.astype(np.int64), "float64": MASK.astype(np.float64),
            "bool": MASK.astype(bool), "one row": MASK}[given]  # fmt: skip
    hidden = xp.asarray(HIDDEN, device=where)
    for strategy in ALL_STRATEGIES:
        expected = reference_pool(HIDDEN, MASK, strategy)
        if given == "one row":
            pooled, expected = tokenpool.pool(hidden[1, ...], mask[1].tolist(), strategy), expected[1]
        else:
            pooled = tokenpool.pool(hidden, mask, strategy)
        assert pooled.device == where
        np.testing.assert_allclose(np.asarray(pooled.to_device(cpu)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_bytes_per_vector_of_dimension_zero_is_what_quantize_gives(precision):
    """`quantize` takes N × 0 vectors (int8/uint8 need a calibration, which cannot have D = 0), but
    `bytes_per_vector` / `code_width` refused dimension 0 ("must be a positive int"). Now they give the size of
    the codes quantize makes: none; a negative dimension is still refused."""
    assert code_width(precision, 0) == 0 and bytes_per_vector(precision, 0) == 0
    if precision not in ("int8", "uint8"):
        assert quantize(np.zeros((3, 0), np.float32), precision).nbytes == 3 * bytes_per_vector(precision, 0)
    with pytest.raises(ValueError, match="-1"):
        bytes_per_vector(precision, -1)


@pytest.mark.parametrize("library", ["numpy", "array_api_strict", "dask"])
def test_normalising_a_row_with_inf_warns_nothing(library):
    """A row holding ±inf normalises to NaN (finish_vectors' docstring: "a row holding NaN or inf comes out
    non-finite"), but numpy emitted "RuntimeWarning: invalid value encountered in divide" (inf / inf) on the
    way, in `pool(..., normalize=True)` and `finish_vectors` alike (Dask at compute). Now no warning; the
    finite rows are still the reference's unit rows and a zero row stays zero."""
    rows = np.array([[np.inf, 1, 2], [1, 2, 3], [0, 0, 0], [-np.inf, np.inf, 0], [np.nan, 1, 1]], np.float32)
    module = pytest.importorskip({"numpy": "numpy", "dask": "dask.array"}.get(library, library))
    given = module.from_array(rows, chunks=2) if library == "dask" else module.asarray(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        finished = np.asarray(finish_vectors(given, normalize=True))
        pooled = np.asarray(tokenpool.pool(rows[:, None, :], None, "max", normalize=True))
    for out in (finished, pooled):
        assert np.isnan(out[[0, 3, 4]]).all() and (out[2] == 0).all()
        np.testing.assert_allclose(out[1], reference_pool(rows[1:2, None, :], [[1]], "mean", normalize=True)[0],
                                   rtol=1e-6)  # fmt: skip


def test_bench_refuses_numpy_alone_where_numpy_times_nothing(capsys):
    """``tokenpool bench --libraries numpy --dtype bfloat16`` (numpy has no bfloat16) printed the floor and the
    references, no tokenpool row, and exited 0: the library asked for was silently not timed. Now one line on
    stderr, exit 2; the default libraries with bfloat16 still time torch (tests/test_bench.py)."""
    from tokenpool.bench.pooling import main

    assert main(["--batch", "2", "--length", "8", "--dim", "4", "--libraries", "numpy", "--dtype", "bfloat16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenpool bench: error: --libraries numpy") and "bfloat16" in err[0]
