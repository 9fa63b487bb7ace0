"""Stop 54's numerics hunt of the pooling core: each test failed before its fix and compares with the float64
loop reference (`reference.py`) or names the refused value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import reference_pool

from tokenpool import pack, pool, pool_packed

STRATEGIES = ["cls", "lasttoken", "mean", "mean_sqrt_len_tokens", "weightedmean", "max"]


def _batch() -> tuple[np.ndarray, np.ndarray]:
    hidden = np.random.default_rng(54).standard_normal((3, 5, 2))
    mask = np.array([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    return hidden, mask


def _entry_points(hidden: np.ndarray, mask: np.ndarray, strategy: str, prompts: list) -> dict[str, np.ndarray]:
    tokens, offsets = pack(hidden, mask)
    return {
        "pool numpy": pool(hidden, mask, strategy, prompt_length=prompts),
        "pool torch": pool(torch.from_numpy(hidden), torch.from_numpy(mask), strategy, prompt_length=prompts).numpy(),
        "pool_packed": pool_packed(tokens, offsets, strategy, prompt_length=prompts),
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_list_of_prompt_lengths_takes_python_ints_past_int64_as_a_single_one_does(strategy):
    """``prompt_length=2**70`` leaves out every token of every row, but the same count in a per-row list raised
    "prompt_length must hold integers, got dtype object" (numpy keeps such ints as objects): a list of ints is
    read as ints, any count capped as a single one is."""
    hidden, mask = _batch()
    prompts = [1, 2**70, 2**64]
    expected = reference_pool(hidden, mask, strategy, prompt_length=[1, 10, 10])
    for where, got in _entry_points(hidden, mask, strategy, prompts).items():
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=where)


@pytest.mark.parametrize("count", [-(2**70), -1])
def test_a_negative_prompt_length_in_a_list_is_a_value_error_naming_it(count):
    """A negative count past int64 in a list was a TypeError saying it holds no integers (dtype object)."""
    hidden, mask = _batch()
    with pytest.raises(ValueError, match=rf"prompt_length must be >= 0, got \[?{count}"):
        pool(hidden, mask, "mean", prompt_length=[0, count, 1])
    tokens, offsets = pack(hidden, mask)
    with pytest.raises(ValueError, match=rf"prompt_length must be >= 0, got \[?{count}"):
        pool_packed(tokens, offsets, "mean", prompt_length=[0, count, 1])


@pytest.mark.parametrize("prompts", [[True, 2, 0], (0, 1, False), [1, np.True_, 0]])
def test_a_bool_in_a_list_of_prompt_lengths_is_refused_as_a_single_bool_is(prompts):
    """``prompt_length=True`` is a TypeError (a bool is no count), but ``[True, 2, 0]`` became int64 [1, 2, 0]
    and was pooled as a prompt of one token, silently."""
    hidden, mask = _batch()
    with pytest.raises(TypeError, match=r"prompt_length must hold integers, got (np\.)?(True|False)"):
        pool(hidden, mask, "mean", prompt_length=prompts)
    tokens, offsets = pack(hidden, mask)
    with pytest.raises(TypeError, match=r"prompt_length must hold integers, got (np\.)?(True|False)"):
        pool_packed(tokens, offsets, "mean", prompt_length=prompts)


def _calibration():
    from tokenpool import Calibration

    return Calibration.from_vectors(np.array([[-1.0, -1.0], [1.0, 1.0]]))


def _vector_readers():
    from tokenpool import Calibration, quantize
    from tokenpool.core.sparse import collect_rows, keep_largest, sparsify

    return {
        "quantize float16": lambda v: quantize(v, "float16"),
        "quantize int8": lambda v: quantize(v, "int8", _calibration()),
        "quantize binary": lambda v: quantize(v, "binary"),
        "Calibration.from_vectors": lambda v: Calibration.from_vectors(v),
        "sparsify": lambda v: sparsify(v),
        "keep_largest": lambda v: keep_largest(v, 1),
        "collect_rows": lambda v: collect_rows([([0, 1], v)], 2, 2),
    }


@pytest.mark.parametrize("reader", sorted(_vector_readers()))
def test_quantize_and_sparsify_refuse_a_masked_array_with_masked_values_as_pool_does(reader):
    """`pool` and `finish_vectors` refuse a numpy masked array with masked values (tokenpool does not read its
    mask), but `quantize` returned a masked array of codes (the masked code hidden), `Calibration.from_vectors`
    computed its ranges without the masked values, and `sparsify` dropped a masked entry from its row, silently:
    each is now the ValueError `pool` gives. A masked array with nothing masked is read as its values."""
    vectors = np.array([[0.5, -0.25], [-0.75, 1.0]])
    masked = np.ma.masked_array(vectors, mask=[[1, 0], [0, 0]])
    read = _vector_readers()[reader]
    with pytest.raises(ValueError, match="masked array with masked values"):
        read(masked)
    got, want = read(np.ma.masked_array(vectors)), read(vectors)
    if hasattr(want, "to_dense"):  # (SparseRows)
        got, want = got.to_dense(), want.to_dense()
    elif hasattr(want, "minimum"):  # (a Calibration)
        got, want = np.stack([got.minimum, got.maximum]), np.stack([want.minimum, want.maximum])
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("reader", sorted(_vector_readers()))
def test_quantize_and_sparsify_name_a_meta_tensor_as_pool_does(reader):
    """A torch tensor on the 'meta' device (a shape, no values) raised torch's NotImplementedError "Cannot copy
    out of meta tensor; no data!" from `quantize`, `Calibration.from_vectors` and `sparsify`; it is the
    ValueError naming the meta device that `pool` and `finish_vectors` give."""
    with pytest.raises(ValueError, match="'meta' device"):
        _vector_readers()[reader](torch.zeros(2, 2, device="meta"))


def _code_readers():
    from tokenpool.core.quantize import dequantize, hamming_distance, unpack_signs

    return {
        "dequantize int8": lambda c: dequantize(c, "int8", _calibration()),
        "dequantize binary": lambda c: dequantize(c, "binary"),
        "unpack_signs": lambda c: unpack_signs(c, precision="binary"),
        "hamming_distance": lambda c: hamming_distance(c, np.zeros((1, 2), np.int8)),
    }


@pytest.mark.parametrize("reader", sorted(_code_readers()))
def test_code_readers_refuse_masked_codes_and_name_a_meta_tensor(reader):
    """The codes' side of the same policy: `dequantize`, `unpack_signs` and `hamming_distance` read a masked
    array's masked codes as if they were there (its mask dropped), and a meta tensor raised torch's TypeError
    telling to call ``.cpu()`` (which a meta tensor cannot); both are the ValueError `pool` gives."""
    codes = np.array([[1, -2], [3, 4]], dtype=np.int8)
    read = _code_readers()[reader]
    with pytest.raises(ValueError, match="masked array with masked values"):
        read(np.ma.masked_array(codes, mask=[[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match="'meta' device"):
        read(torch.zeros(2, 2, dtype=torch.int8, device="meta"))
    np.testing.assert_array_equal(read(np.ma.masked_array(codes)), read(codes))
