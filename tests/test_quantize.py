"""`tokenpool.core.quantize` and `tokenpool.core.sparse` against float64 loops, numpy.packbits, scipy and
sentence-transformers' own `quantize_embeddings`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool.core.quantize import (
    PRECISIONS,
    Calibration,
    CalibrationMismatch,
    bytes_per_vector,
    code_width,
    dequantize,
    hamming_distance,
    quantize,
    unpack_signs,
)
from tokenpool.core.sparse import CSRBuilder, sparsify


@st.composite
def vector_sets(draw, max_rows: int = 12, max_dim: int = 40):
    """(calibration vectors, vectors to quantize): float32, the second set partly outside the first's range."""
    dim = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    calib = (rng.standard_normal((draw(st.integers(2, max_rows)), dim)) * scale).astype(np.float32)
    while not (calib.max(axis=0) > calib.min(axis=0)).all():  # pragma: no cover - measure-zero
        calib = (rng.standard_normal(calib.shape) * scale).astype(np.float32)
    vectors = (rng.standard_normal((draw(st.integers(1, max_rows)), dim)) * scale * 1.3).astype(np.float32)
    return calib, vectors


def _reference_codes(vectors: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """uint8 codes by a float64 loop: round((v - lo) / ((hi - lo) / 255)) clipped to 0..255, half to even."""
    out = np.zeros(vectors.shape, dtype=np.int64)
    for i in range(vectors.shape[0]):
        for d in range(vectors.shape[1]):
            t = (float(vectors[i, d]) - float(lo[d])) / ((float(hi[d]) - float(lo[d])) / 255.0)
            out[i, d] = round(min(255.0, max(0.0, t)))  # Python's round: half to even, as numpy.rint
    return out


# ------------------------------------------------------------------------------------------ int8 / uint8


@given(vector_sets())
def test_int8_uint8_codes_equal_the_float64_loop(data):
    calib_vectors, vectors = data
    calibration = Calibration.from_vectors(calib_vectors)
    expected = _reference_codes(vectors, calib_vectors.min(axis=0), calib_vectors.max(axis=0))
    uint8 = quantize(vectors, "uint8", calibration)
    int8 = quantize(vectors, "int8", calibration)
    assert uint8.dtype == np.uint8 and int8.dtype == np.int8 and uint8.shape == vectors.shape
    np.testing.assert_array_equal(uint8.astype(np.int64), expected)
    np.testing.assert_array_equal(int8.astype(np.int64), expected - 128)


@given(vector_sets())
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(data):
    """Two error sources, each bounded on its own: the code's step centre (a float64 loop here) lies within
    half a step of the value, and dequantize's float32 result is that centre rounded to nearest (half an
    ulp; at |x| ≈ 50 that is 1.9e-6, more than the float64 slack, so one bound on the sum would be wrong)."""
    calib_vectors, vectors = data
    calibration = Calibration.from_vectors(calib_vectors)
    lo, hi = calib_vectors.min(axis=0).astype(np.float64), calib_vectors.max(axis=0).astype(np.float64)
    inside = np.clip(vectors.astype(np.float64), lo, hi)
    span = hi - lo
    for precision, offset in (("int8", 128), ("uint8", 0)):
        codes = quantize(inside, precision, calibration)
        back = dequantize(codes, precision, calibration).astype(np.float64)
        centre = np.array(
            [[lo[d] + (int(code) + offset) * (span[d] / 255.0) for d, code in enumerate(row)] for row in codes]
        )
        # the code: half a step (range/510); the bound range/255 holds with room to spare
        assert (np.abs(centre - inside) <= span / 510 * (1 + 1e-6) + 1e-12 * np.abs(hi)).all()
        assert (np.abs(centre - inside) <= span / 255).all()
        # the float32 result: the centre rounded to nearest
        half_ulp = np.spacing(np.abs(centre).astype(np.float32)).astype(np.float64) / 2
        assert (np.abs(back - centre) <= half_ulp * (1 + 1e-6)).all()


@given(vector_sets())
def test_values_outside_the_range_clip_instead_of_wrapping(data):
    calib_vectors, vectors = data
    calibration = Calibration.from_vectors(calib_vectors)
    lo, hi = calib_vectors.min(axis=0), calib_vectors.max(axis=0)
    far = np.concatenate([vectors, lo[None] - 10 * (hi - lo), hi[None] + 10 * (hi - lo)]).astype(np.float32)
    codes = quantize(far, "int8", calibration)
    assert (codes[-2] == -128).all() and (codes[-1] == 127).all()
    below = far < lo
    above = far > hi
    assert (codes[below] == -128).all() and (codes[above] == 127).all()
    assert (quantize(far, "uint8", calibration)[above] == 255).all()


@given(vector_sets(), st.data())
def test_a_vector_quantizes_the_same_alone_and_in_any_batch(data, draw):
    calib_vectors, vectors = data
    calibration = Calibration.from_vectors(calib_vectors)
    for precision in PRECISIONS:
        together = quantize(vectors, precision, calibration)
        split = draw.draw(st.integers(0, len(vectors)))
        parts = [
            quantize(vectors[:split], precision, calibration),
            quantize(vectors[split:], precision, calibration),
        ]
        np.testing.assert_array_equal(np.concatenate(parts), together)
        for i in range(len(vectors)):
            np.testing.assert_array_equal(quantize(vectors[i], precision, calibration), together[i])


def test_one_text_alone_does_not_collapse_to_zeros():
    """sentence-transformers #2837: ranges from the batch itself make a lone vector all one code; ours do not."""
    rng = np.random.default_rng(1)
    calibration = Calibration.from_vectors(rng.standard_normal((100, 16)).astype(np.float32))
    alone = quantize(rng.standard_normal(16).astype(np.float32), "int8", calibration)
    assert len(set(alone.tolist())) > 4


def test_int8_agrees_with_sentence_transformers_within_one_code():
    """sentence-transformers truncates ((v - min) / step) toward zero where we round, with the same ranges."""
    from sentence_transformers.util.quantization import quantize_embeddings

    rng = np.random.default_rng(2)
    calib_vectors = rng.standard_normal((50, 24)).astype(np.float32)
    vectors = rng.uniform(calib_vectors.min(axis=0), calib_vectors.max(axis=0), (30, 24)).astype(np.float32)
    calibration = Calibration.from_vectors(calib_vectors)
    theirs = quantize_embeddings(vectors, "int8", calibration_embeddings=calib_vectors).astype(np.int64)
    ours = quantize(vectors, "int8", calibration).astype(np.int64)
    assert set(np.unique(ours - theirs).tolist()) <= {0, 1}


# ------------------------------------------------------------------------------------------ binary


@given(vector_sets(max_dim=70))
def test_ubinary_is_numpy_packbits_of_positive_values(data):
    _, vectors = data
    vectors[0, 0] = 0.0  # zero is not positive: bit 0
    ubinary = quantize(vectors, "ubinary")
    np.testing.assert_array_equal(ubinary, np.packbits(vectors > 0, axis=-1))
    assert ubinary.dtype == np.uint8 and ubinary.shape == (len(vectors), -(-vectors.shape[1] // 8))
    binary = quantize(vectors, "binary")
    np.testing.assert_array_equal(binary.astype(np.int64), ubinary.astype(np.int64) - 128)
    signs = unpack_signs(ubinary, dimension=vectors.shape[1])
    np.testing.assert_array_equal(signs, np.where(vectors > 0, 1.0, -1.0))
    np.testing.assert_array_equal(dequantize(binary, "binary", dimension=vectors.shape[1]), signs)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_matches_sentence_transformers(precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    vectors = np.random.default_rng(3).standard_normal((9, 64)).astype(np.float32)
    theirs = quantize_embeddings(vectors, precision)
    ours = quantize(vectors, precision)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


@given(vector_sets(max_dim=70))
def test_hamming_distance_equals_counting_differing_signs(data):
    calib, vectors = data
    a, b = quantize(calib, "ubinary"), quantize(vectors, "binary")
    expected = np.array([[int(((x > 0) != (y > 0)).sum()) for y in vectors] for x in calib])
    np.testing.assert_array_equal(hamming_distance(a, b), expected)
    np.testing.assert_array_equal(hamming_distance(a[0], b), expected[0])
    assert hamming_distance(a[0], b[0]) == expected[0, 0]


# ------------------------------------------------------------------------------------------ float16, sizes


def test_float16_clips_to_the_largest_half():
    codes = quantize(np.array([[1e6, -1e6, 0.5]], dtype=np.float32), "float16")
    assert codes.dtype == np.float16 and codes.tolist() == [[65504.0, -65504.0, 0.5]]


@pytest.mark.parametrize(
    "precision, width, size",
    [("float32", 384, 1536), ("float16", 384, 768), ("int8", 384, 384), ("uint8", 384, 384),
     ("binary", 48, 48), ("ubinary", 48, 48)],
)  # fmt: skip
def test_widths_and_bytes(precision, width, size):
    assert code_width(precision, 384) == width and bytes_per_vector(precision, 384) == size
    vectors = np.random.default_rng(0).standard_normal((2, 384)).astype(np.float32)
    codes = quantize(vectors, precision, Calibration.from_vectors(vectors))
    assert codes.shape == (2, width) and codes[0].nbytes == size
    assert code_width("ubinary", 385) == 49


# ------------------------------------------------------------------------------------------ Calibration


@given(vector_sets())
def test_calibration_json_round_trip_is_exact(data):
    calib_vectors, vectors = data
    calibration = Calibration.from_vectors(
        calib_vectors, model="m", model_id="sha256:x", pooling=["mean"], normalize=True
    )
    back = Calibration.from_json(calibration.to_json())
    assert back == calibration and back.pooling == ("mean",) and back.texts == len(calib_vectors)
    np.testing.assert_array_equal(back.minimum, calib_vectors.min(axis=0))
    np.testing.assert_array_equal(quantize(vectors, "int8", back), quantize(vectors, "int8", calibration))


def test_calibration_save_and_load(tmp_path):
    vectors = np.random.default_rng(4).standard_normal((5, 7)).astype(np.float32)
    calibration = Calibration.from_vectors(vectors, model="mini", pooling=("cls",), normalize=False)
    path = calibration.save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    assert data["format"] == "tokenpool.calibration" and data["dimension"] == 7 and data["texts"] == 5
    assert Calibration.load(path) == calibration


def test_calibration_save_touches_no_other_file(tmp_path, monkeypatch):
    """save wrote through ``<name>.tmp``, replacing a user's file of that name; its temporary name is now one no
    file has, and a failed write leaves nothing behind."""
    calibration = Calibration.from_vectors(np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32))
    (tmp_path / "cal.json.tmp").write_text("a user's notes")
    calibration.save(tmp_path / "cal.json")
    assert (tmp_path / "cal.json.tmp").read_text() == "a user's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "cal.json.tmp"]

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Calibration, "file_text", fail)
    with pytest.raises(OSError, match="disk full"):
        calibration.save(tmp_path / "other.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json", "cal.json.tmp"]


@pytest.mark.parametrize(
    "vectors, match",
    [
        (np.ones((1, 4)), "at least 2 texts, got 1"),
        (np.zeros((0, 4)), "at least 2 texts, got 0"),
        (
            np.array([[1.0, 2.0, 3.0], [1.0, 5.0, 3.0]]),
            r"2 dimension\(s\) have no spread over the 2 .*dimension 0, 2",
        ),
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "vector 0 holds NaN"),
        (np.ones(4), "must be 2-D"),
    ],
)
def test_bad_calibration_vectors(vectors, match):
    with pytest.raises(ValueError, match=match):
        Calibration.from_vectors(vectors)


def test_calibration_check_names_the_mismatch():
    calibration = Calibration.from_vectors(
        np.random.default_rng(5).standard_normal((3, 4)), model="A", model_id="sha256:a", pooling=["mean"],
        normalize=True,
    )  # fmt: skip
    calibration.check(dimension=4, model_id="sha256:a", pooling=["mean"], normalize=True)
    for options, match in [
        ({"dimension": 5}, "dimension 4 .* have 5"),
        ({"dimension": 4, "model_id": "sha256:b", "model": "B"}, "another model .*sha256:a.* B has sha256:b"),
        ({"dimension": 4, "pooling": ["cls"]}, r"pooling \['mean'\].* \['cls'\]"),
        ({"dimension": 4, "normalize": False}, "normalize=True.*normalize=False"),
    ]:
        with pytest.raises(CalibrationMismatch, match=match):
            calibration.check(**options)
    with pytest.raises(CalibrationMismatch, match="dimension 4"):
        quantize(np.zeros((1, 5)), "int8", calibration)


def test_bad_calibration_files(tmp_path):
    bad = tmp_path / "bad.json"
    for text, match in [
        ("{", "not valid JSON"),
        ("[" * 100_000, r"not valid JSON \(nested too deeply\)"),  # was json's RecursionError
        ('{"a": ' * 100_000, r"not valid JSON \(nested too deeply\)"),
        ('{"format": "other"}', "not a tokenpool calibration"),
        ('{"format": "tokenpool.calibration", "version": 9}', "version 9"),
        ('{"format": "tokenpool.calibration", "version": 1, "minimum": [0]}', "no 'maximum'"),
        ('{"format": "tokenpool.calibration", "version": 1, "minimum": [0, 1], "maximum": [1, 1]}',
         "no spread"),
        ('{"format": "tokenpool.calibration", "version": 1, "minimum": [0], "maximum": [1], "dimension": 3}',
         "'dimension' is 3"),
    ]:  # fmt: skip
        bad.write_text(text)
        with pytest.raises(ValueError, match=match) as info:
            Calibration.load(bad)
        assert str(bad) in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such calibration file"):
        Calibration.load(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="'': no such calibration file"):  # not ".", a folder
        Calibration.load("")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: quantize(np.ones((2, 3)), "int4"),
            ValueError,
            "unknown precision 'int4'; choose one of float32",
        ),
        (lambda: quantize(np.ones((2, 3)), "int8"), ValueError, "'int8' needs a calibration"),
        (lambda: quantize(np.ones((2, 2, 3)), "ubinary"), ValueError, r"shape \(2, 2, 3\)"),
        (lambda: quantize(np.array([[1.0, np.inf]]), "ubinary"), ValueError, "row 0, dimension 1"),
        (lambda: quantize(np.array(["a"]), "ubinary"), TypeError, "real numbers"),
        (lambda: quantize(np.ones((2, 3)), "int8", calibration={"minimum": [0]}), TypeError, "Calibration"),
        (lambda: dequantize(np.zeros((1, 3), np.int8), "uint8"), TypeError, "dtype uint8"),
        (
            lambda: hamming_distance(np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8)),
            ValueError,
            "2 and 3",
        ),
    ],
)
def test_bad_quantize_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------------ sparse


def _reference_sparse(dense: np.ndarray, top_k, threshold) -> list[list[tuple[int, float]]]:
    rows = []
    for row in dense:
        entries = [(j, float(v)) for j, v in enumerate(row) if abs(float(v)) > threshold]
        if top_k is not None:
            entries = sorted(entries, key=lambda e: (-abs(e[1]), e[0]))[:top_k]
        rows.append(sorted(entries))
    return rows


@st.composite
def sparse_batches(draw):
    rows, cols = draw(st.integers(0, 8)), draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dense = np.maximum(rng.standard_normal((rows, cols)), 0).astype(np.float32)
    dense[rng.random(dense.shape) < 0.3] = np.float32(0.5)  # ties
    if draw(st.booleans()):
        dense = -dense  # magnitudes rank, not signs
    top_k = draw(st.one_of(st.none(), st.integers(1, 35)))
    threshold = draw(st.sampled_from([0.0, 0.4, 0.5, 1.0]))
    return dense, top_k, threshold


@given(sparse_batches())
def test_sparsify_equals_the_reference_loop(data):
    dense, top_k, threshold = data
    rows = sparsify(dense, top_k=top_k, threshold=threshold)
    assert (
        rows.indptr.dtype == np.int64 and rows.indices.dtype == np.int32 and rows.values.dtype == np.float32
    )
    expected = _reference_sparse(dense, top_k, threshold)
    assert rows.n_rows == len(dense)
    for i, entries in enumerate(expected):
        indices, values = rows.row(i)
        assert indices.tolist() == [j for j, _ in entries]
        assert values.tolist() == [v for _, v in entries]
    if top_k is None and threshold == 0:
        np.testing.assert_array_equal(rows.to_dense(), dense)
        np.testing.assert_array_equal(rows.to_scipy().toarray(), dense)


@given(sparse_batches(), st.integers(0, 2**16), st.integers(1, 4))
def test_csr_builder_puts_batches_back_in_row_order(data, seed, batch):
    dense, top_k, threshold = data
    order = np.random.default_rng(seed).permutation(len(dense))
    builder = CSRBuilder(len(dense), dense.shape[1])
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        builder.add(rows, sparsify(dense[rows], top_k=top_k, threshold=threshold))
    built = builder.build()
    whole = sparsify(dense, top_k=top_k, threshold=threshold)
    np.testing.assert_array_equal(built.indptr, whole.indptr)
    np.testing.assert_array_equal(built.indices, whole.indices)
    np.testing.assert_array_equal(built.values, whole.values)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"top_k": 0}, ValueError, "top_k must be a positive int .* got 0"),
        ({"top_k": -3}, ValueError, "got -3"),
        ({"top_k": 2.5}, ValueError, "got 2.5"),
        ({"threshold": -0.1}, ValueError, "threshold must be a finite number ≥ 0, got -0.1"),
        ({"threshold": float("nan")}, ValueError, "got nan"),
        ({"threshold": "0"}, TypeError, "threshold must be a number"),
    ],
)
def test_bad_sparse_options(options, error, match):
    with pytest.raises(error, match=match):
        sparsify(np.ones((2, 3)), **options)


def test_csr_builder_refuses_missing_rows():
    builder = CSRBuilder(3, 4)
    builder.add([0, 2], sparsify(np.ones((2, 4))))
    with pytest.raises(ValueError, match="not each of 0..2 once"):
        builder.build()


def loop_sparsify(row: list[float], top_k: int | None, threshold: float) -> list[tuple[int, float]]:
    """(column, value) pairs one row keeps: |value| > threshold with NaN always kept and ranked above ±inf,
    the top_k largest (ties to the lower column), in column order."""
    def size(v: float) -> tuple[bool, float]:
        return (True, 0.0) if math.isnan(v) else (False, abs(v))

    kept = [(c, v) for c, v in enumerate(row) if size(v) > (False, threshold)]
    if top_k is not None:
        kept = sorted(kept, key=lambda cv: (not size(cv[1])[0], -size(cv[1])[1], cv[0]))[:top_k]
    return sorted(kept)


values = st.sampled_from([0.0, -0.5, 0.5, 1.0, -2.0, 2.0, math.inf, -math.inf, math.nan])


@given(
    st.lists(st.lists(values, min_size=4, max_size=4), min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(1, 5)),
    st.sampled_from([0.0, 0.5, 1.5]),
)
@settings(max_examples=200, deadline=None)
def test_sparsify_keeps_nan_as_the_largest_entry(rows, top_k, threshold):
    """sparsify([[nan, 1.0, 0.0]]) gave the row {1: 1.0}: NaN fails ``|v| > threshold``, so a NaN pooled row
    came out as a clean-looking sparse row (pool and finish_vectors show NaN, never hide it)."""
    got = sparsify(np.array(rows, dtype=np.float32), top_k=top_k, threshold=threshold)
    for r, row in enumerate(rows):
        columns, vals = got.row(r)
        expected = loop_sparsify(row, top_k, threshold)
        assert columns.tolist() == [c for c, _ in expected]
        np.testing.assert_array_equal(vals, np.array([v for _, v in expected], dtype=np.float32))
