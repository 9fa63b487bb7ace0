"""Stop 61, core defect hunt: each test failed on the code before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool import pool, pool_packed
from tokenpool.core.quantize import Calibration, quantize
from tokenpool.core.sparse import sparsify

torch = pytest.importorskip("torch")

STRATEGIES = ["mean", "max", "cls", "lasttoken", "mean_sqrt_len_tokens", "weightedmean", "splade"]


@pytest.mark.parametrize("shape", [(3, 4, 5), (16, 256, 512)])  # (the second reaches the compiled kernels)
def test_a_lazily_negated_tensor_is_pooled_as_its_values(shape):
    """``z.conj().imag`` is a real float tensor carrying torch's lazy negation bit; `pool` and `pool_packed` raised
    torch's "Can't call numpy() on Tensor that has negative bit set" from the fast path's numpy view. Now the
    rows are those of the same values without the bit (``resolve_neg()``), also for such a mask."""
    z = torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    hidden = z.conj().imag
    assert hidden.is_neg()
    mask = torch.ones(shape[:2], dtype=torch.long)
    mask[0, 2:], mask[1, :1] = 0, 0
    negated_mask = torch.complex(torch.zeros(shape[:2]), -mask.float()).conj().imag
    assert negated_mask.is_neg()
    plain = hidden.resolve_neg()
    for strategy in STRATEGIES if shape[0] < 16 else ["mean", "max"]:
        for states, given in ((hidden, mask), (hidden, negated_mask), (hidden, None), (plain, negated_mask)):
            expected = pool(plain, None if given is None else mask, strategy, prompt_length=1)
            torch.testing.assert_close(pool(states, given, strategy, prompt_length=1), expected)
            expected = pool(plain, None if given is None else mask, strategy)
            torch.testing.assert_close(pool(states, given, strategy), expected)
        offsets = [0, 2, shape[1]]
        torch.testing.assert_close(pool_packed(hidden[0], offsets, strategy), pool_packed(plain[0], offsets, strategy))


def test_a_numpy_mask_of_ml_dtypes_is_read_as_its_values():
    """``np.asarray`` of a JAX bfloat16 (or float8) mask is a numpy array of ml_dtypes' bfloat16: with numpy hidden
    states it was refused ("attention_mask must hold 0/1 or booleans, got dtype bfloat16") although the same mask
    was accepted from JAX itself, from torch, and with JAX or torch hidden states. Now it is read as its 0/1 values;
    its other values are named as in any float mask."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    for name in ("bfloat16", "float8_e4m3fn"):
        odd = mask.astype(getattr(ml_dtypes, name))
        for strategy in STRATEGIES[:-1]:
            np.testing.assert_array_equal(pool(hidden, odd, strategy), pool(hidden, mask, strategy))
        np.testing.assert_array_equal(pool(hidden[0], odd[0]), pool(hidden[0], mask[0]))
        with pytest.raises(ValueError, match=r"only 0 and 1 \(or True/False\), found \[2.0\]"):
            pool(hidden, (mask * 2).astype(getattr(ml_dtypes, name)))


def test_torch_float8_vectors_are_read_as_their_values():
    """torch's float8 tensors (FP8 inference) pooled fine, but `quantize`, `Calibration.from_vectors` and
    `sparsify` raised torch's bare "TypeError: Got unsupported ScalarType Float8_e4m3fn" from ``.numpy()``, and a
    float8 ``prompt_length`` / ``cu_seqlens`` was named that way instead of "must hold integers". Now float8 reads as
    its (float32-exact) values, as bfloat16 does."""
    dtype = getattr(torch, "float8_e4m3fn", None)
    if dtype is None:
        pytest.skip("this torch has no float8")
    vectors = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -3.0, 1.0]]).to(dtype)
    exact = vectors.float().numpy()
    np.testing.assert_array_equal(quantize(vectors, "ubinary"), quantize(exact, "ubinary"))
    np.testing.assert_array_equal(quantize(vectors, "float16"), quantize(exact, "float16"))
    assert Calibration.from_vectors(vectors) == Calibration.from_vectors(exact)
    np.testing.assert_array_equal(sparsify(vectors, top_k=2).to_dense(), sparsify(exact, top_k=2).to_dense())
    hidden = torch.ones(2, 3, 4)
    with pytest.raises(TypeError, match="prompt_length must hold integers"):
        pool(hidden, None, prompt_length=torch.tensor([1, 0]).to(dtype))
    with pytest.raises(ValueError, match="cu_seqlens must hold integers"):
        pool_packed(hidden[0], torch.tensor([0, 1, 3]).to(dtype))


def test_a_list_of_half_precision_tensors_is_read_as_their_values():
    """A list of torch tensors was read item by item only when autograd tracked them: a list of bfloat16 (or float8)
    tensors, what a bf16 model gives row by row, was refused ("vectors must be an array, got list: Got unsupported
    ScalarType BFloat16"; "attention_mask could not be read as an array: ..."). Now each item is read as a lone
    tensor of its dtype."""
    rows = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]])
    exact = rows.numpy()
    listed = [row.bfloat16() for row in rows]
    np.testing.assert_array_equal(quantize(listed, "ubinary"), quantize(exact, "ubinary"))
    np.testing.assert_array_equal(sparsify(listed, top_k=2).to_dense(), sparsify(exact, top_k=2).to_dense())
    hidden = torch.arange(24.0).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    torch.testing.assert_close(pool(hidden, [row.bfloat16() for row in mask]), pool(hidden, mask))
    np.testing.assert_array_equal(pool([h.bfloat16() for h in hidden[0]]), pool(hidden[0].bfloat16().float().numpy()))
