"""Stop 60, core defect hunt: each test failed on the code before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool import pool
from tokenpool.core.pooling import finish_vectors
from tokenpool.core.quantize import Calibration, dequantize, hamming_distance, quantize
from tokenpool.core.sparse import keep_largest, sparsify


def test_scipy_sparse_matrices_are_refused_naming_their_shape():
    """A SPLADE user's CSR rows (what ``encode_sparse`` returns) given to `sparsify` / `keep_largest` were refused
    as "sparsify needs a 2-D batch (rows × vocabulary), got shape ()" for a 3 × 4 matrix (numpy reads a scipy
    matrix as a 0-d object array); `quantize`, `Calibration.from_vectors`, `finish_vectors` and `pool` spoke of
    "dtype object". Now each names what was given, its shape, and ``.toarray()``."""
    sparse = pytest.importorskip("scipy.sparse")
    rows = sparse.csr_matrix(np.arange(12.0).reshape(3, 4))
    calls = [
        ("sparsify's rows", lambda: sparsify(rows)),
        ("sparsify's rows", lambda: keep_largest(sparse.csr_array(rows), 2)),
        ("vectors", lambda: quantize(rows, "ubinary")),
        ("calibration vectors", lambda: Calibration.from_vectors(rows)),
        ("vectors", lambda: finish_vectors(rows, normalize=True)),
        ("hidden states", lambda: pool(rows)),
        ("attention_mask", lambda: pool(np.ones((3, 4, 2)), rows)),
    ]
    for what, call in calls:
        with pytest.raises(ValueError, match=rf"^{what}: a scipy sparse \w+ of shape \(3, 4\).*\.toarray\(\)"):
            call()
    np.testing.assert_array_equal(sparsify(rows.toarray()).to_dense(), rows.toarray())  # what the message advises


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_dequantize_takes_codes_of_either_byte_order(precision):
    """float16/float32 codes in the other byte order (``np.load`` of a file written on a big-endian machine,
    ``np.frombuffer(data, ">f2")``) were refused: "float16 codes must have dtype float16, got >f2". Byte order
    is how the codes are stored, not what they mean (`pool` takes '>f8' states too): they now give the values
    numpy reads from them, in float32."""
    values = np.array([[0.5, -1.25, 65504.0], [3.0, 0.0, -2.0]], dtype=precision)
    swapped = values.astype(values.dtype.newbyteorder("S"))  # (the other byte order: same values)
    got = dequantize(swapped, precision)
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, values.astype(np.float32))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # (np.matrix itself)
def test_numpy_matrix_vectors_and_codes_are_read_as_plain_arrays():
    """An ``np.matrix`` (what scipy's ``.todense()`` returns) kept its matrix rules inside the vector functions:
    `sparsify` built 1 × nnz values (``to_scipy``: "data, indices, and indptr should be 1-D"),
    `hamming_distance` raised numpy's "shape too large to be a matrix", `Calibration.from_vectors` said
    "ranges must be two 1-D arrays ... got shapes (1, 4) and (1, 4)", and `quantize` / `dequantize` returned
    matrices. They now give what they give for the same values as a plain array."""
    values = np.arange(12.0).reshape(3, 4) - 5.5
    matrix = np.matrix(values)
    rows, expected = sparsify(matrix, top_k=2), sparsify(values, top_k=2)
    for part in ("indptr", "indices", "values"):
        assert type(getattr(rows, part)) is np.ndarray
        np.testing.assert_array_equal(getattr(rows, part), getattr(expected, part))
    np.testing.assert_array_equal(rows.to_scipy().toarray(), keep_largest(values, 2))
    bits = quantize(values, "ubinary")
    np.testing.assert_array_equal(hamming_distance(np.matrix(bits), bits), hamming_distance(bits, bits))
    assert Calibration.from_vectors(matrix) == Calibration.from_vectors(values)
    for got, want in [(quantize(matrix, "ubinary"), bits),
                      (dequantize(np.matrix(bits), "ubinary", dimension=4), dequantize(bits, "ubinary", dimension=4))]:
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, want)


def test_lists_of_tensors_that_autograd_tracks_are_read_as_their_values():
    """A list of per-text vectors from a model in training mode (torch tensors that require grad) raised torch's
    "Can't call numpy() on Tensor that requires grad" from `quantize`, `Calibration.from_vectors`,
    `finish_vectors` and `pool`, where one such tensor, or a list of untracked ones, is read as its values. Such a
    list now gives what the detached values give."""
    torch = pytest.importorskip("torch")
    values = np.array([[0.5, -1.0, 2.0], [-3.0, 0.25, 1.0]], dtype=np.float32)
    tracked = [torch.tensor(row, requires_grad=True) for row in values]
    np.testing.assert_array_equal(quantize(tracked, "ubinary"), quantize(values, "ubinary"))
    assert Calibration.from_vectors(tracked) == Calibration.from_vectors(values)
    np.testing.assert_array_equal(finish_vectors(tracked, normalize=True), finish_vectors(values, normalize=True))
    np.testing.assert_array_equal(pool([tracked], None, "max"), pool(values[None], None, "max"))


@pytest.mark.parametrize("what", ["vectors", "hidden states", "packed tokens"])
def test_a_ragged_list_of_tracked_tensors_is_named_as_a_ragged_list_is(what):
    """Review: a ragged list of tensors that autograd tracks gave numpy's bare ValueError ("setting an array
    element with a sequence ..."), naming no input, where the same list of untracked tensors gives the documented
    TypeError "<input> must be an array" (tests/test_core_s45.py)."""
    torch = pytest.importorskip("torch")
    from tokenpool import pool_packed

    call = {"vectors": lambda rows: finish_vectors(rows, normalize=True),
            "hidden states": lambda rows: pool([rows], None, "mean"),
            "packed tokens": lambda rows: pool_packed(rows, np.array([0, 2]), "mean")}[what]  # fmt: skip
    for grad in (False, True):
        rows = [torch.ones(3, requires_grad=grad), torch.ones(2, requires_grad=grad)]
        with pytest.raises(TypeError, match=f"^{what} must be an array, got list: "):
            call(rows)
