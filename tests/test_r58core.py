"""Review of stop 58's core changes: each test failed on the merged code before its fix."""

from __future__ import annotations

import numpy as np
import pytest

import tokenpool


def _failing_dask_array(message: str):
    """A Dask array of 2 int64 values whose computation raises RuntimeError(message), as a failed chunk read."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")

    def read(_: int) -> np.ndarray:
        raise RuntimeError(message)

    return da.from_delayed(dask.delayed(read)(0), shape=(2,), dtype=np.int64)


def test_a_dask_input_whose_computation_fails_raises_its_own_error():
    """`to_numpy` retried every RuntimeError of ``np.asarray`` through DLPack (meant for array-api-strict's other
    devices), so a Dask prompt_length or cu_seqlens whose computation failed raised "AttributeError: 'Array'
    object has no attribute '__dlpack__'" in place of the computation's own error. Now that error comes out."""
    hidden = np.ones((2, 3, 4), np.float32)
    with pytest.raises(RuntimeError, match="chunk read failed"):
        tokenpool.pool(hidden, None, "mean", prompt_length=_failing_dask_array("chunk read failed"))
    with pytest.raises(RuntimeError, match="chunk read failed"):
        tokenpool.pool_packed(hidden[0], _failing_dask_array("chunk read failed"), "mean")


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # (np.matrix itself)
def test_a_numpy_matrix_mask_pools_numpy_states_as_the_reference():
    """A mask from any library is converted to the hidden states' (README). Since `as_array_like` hands a
    foreign mask back as host numpy, an ``np.matrix`` mask (not an Array API array) stayed a matrix, and numpy
    states failed in the pooling math ("matrix.sum() got an unexpected keyword argument 'keepdims'"). Now it is
    read as a plain array and the rows are the float64 reference's."""
    from reference import reference_pool

    hidden = np.random.default_rng(58).standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    for given in (np.asmatrix(mask), np.asmatrix(mask.astype(bool))):
        for strategy in ("mean", "weightedmean", "max", "cls", "lasttoken"):
            np.testing.assert_allclose(tokenpool.pool(hidden, given, strategy), reference_pool(hidden, mask, strategy),
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
