"""Hostile inputs to the core API (`tokenpool.pool`, `pool_packed`): each row names the input and the expected
exception (type and a fragment of its message); the NaN rows name what must come out. Nothing touches disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenpool import pool
from tokenpool.core.packed import pack, pool_packed

RNG = np.random.default_rng(0)
H = RNG.standard_normal((2, 4, 3))
M = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
TOKENS = RNG.standard_normal((5, 3))
CU = np.array([0, 3, 5])


def _h(dtype):
    return np.zeros((1, 2, 2), dtype=dtype)


# (case, call, exception, message fragment)
BAD_CALLS = [
    ("normalize='no'", lambda: pool(H, M, normalize="no"), TypeError, "normalize"),
    ("normalize='yes'", lambda: pool(H, M, normalize="yes"), TypeError, "normalize"),
    ("normalize=1", lambda: pool(H, M, normalize=1), TypeError, "normalize"),
    ("normalize=None", lambda: pool(H, M, normalize=None), TypeError, "normalize"),
    ("strategies-set", lambda: pool(H, M, {"mean", "max"}), TypeError, "order"),
    ("strategies-frozenset", lambda: pool(H, M, frozenset({"cls"})), TypeError, "order"),
    ("strategies-empty-list", lambda: pool(H, M, []), ValueError, "no pooling strategy"),
    ("strategy-unknown", lambda: pool(H, M, "avg_but_not"), ValueError, "avg_but_not"),
    ("strategy-int", lambda: pool(H, M, 3), (TypeError, ValueError), "3"),
    ("hidden-<U1", lambda: pool(_h("<U1")), TypeError, "numeric"),
    ("hidden-object", lambda: pool(_h(object)), TypeError, "numeric"),
    ("hidden-datetime64", lambda: pool(_h("datetime64[s]")), TypeError, "numeric"),
    ("hidden-timedelta64", lambda: pool(_h("timedelta64[s]")), TypeError, "numeric"),
    ("hidden-bytes", lambda: pool(_h("S3")), TypeError, "numeric"),
    ("hidden-structured", lambda: pool(_h([("a", "f4")])), TypeError, "numeric"),
    ("hidden-complex", lambda: pool(_h(np.complex64)), TypeError, "real"),
    ("hidden-list-of-str", lambda: pool([[["a", "b"]]]), TypeError, "numeric"),
    ("hidden-ragged-list", lambda: pool([[[1.0, 2.0]], [[1.0]]]), TypeError, "array"),
    ("hidden-4d", lambda: pool(np.zeros((1, 1, 1, 1))), NotImplementedError, "4-D"),
    ("hidden-1d", lambda: pool(np.zeros(3)), NotImplementedError, "1-D"),
    ("hidden-meta-tensor", lambda: pool(torch.zeros(1, 2, 2, device="meta")), ValueError, "meta"),
    # a meta tensor anywhere else raised torch's NotImplementedError "Cannot copy out of meta tensor" ("failed")
    ("mask-meta-tensor", lambda: pool(torch.zeros(2, 4, 3), torch.ones(2, 4, device="meta")), ValueError,
     "attention_mask.*meta"),
    ("mask-meta-tensor-numpy-hidden", lambda: pool(H, torch.ones(2, 4, device="meta")), ValueError,
     "attention_mask.*meta"),
    ("mask-meta-one-sequence", lambda: pool(torch.zeros(4, 3), torch.ones(4, device="meta")), ValueError,
     "attention_mask.*meta"),
    ("prompt_length-meta", lambda: pool(H, M, prompt_length=torch.ones(2, dtype=torch.int64, device="meta")),
     ValueError, "prompt_length.*meta"),
    ("packed-cu-meta", lambda: pool_packed(TOKENS, torch.tensor(CU, device="meta")), ValueError,
     "cu_seqlens.*meta"),
    ("mask-wrong-shape", lambda: pool(H, M[:, :3]), ValueError, "shape"),
    ("mask-value-2", lambda: pool(H, M * 2), ValueError, "only 0 and 1"),
    ("mask-strings", lambda: pool(H, np.array([["1"] * 4] * 2)), ValueError, "attention_mask"),
    ("mask-object-ragged", lambda: pool(H, [[1, 1], [1]]), ValueError, "attention_mask"),
    ("prompt_length=-1", lambda: pool(H, M, prompt_length=-1), ValueError, ">= 0"),
    ("prompt_length=1.5", lambda: pool(H, M, prompt_length=1.5), TypeError, "prompt_length"),
    ("prompt_length=True", lambda: pool(H, M, prompt_length=True), TypeError, "prompt_length"),
    ("prompt_length-float-array", lambda: pool(H, M, prompt_length=np.array([1.0, 0.0])), TypeError, "integers"),
    ("prompt_length-wrong-shape", lambda: pool(H, M, prompt_length=[1, 2, 3]), ValueError, "one value per row"),
    ("prompt_length-negative-row", lambda: pool(H, M, prompt_length=[0, -2]), ValueError, ">= 0"),
    ("prompt_length-str", lambda: pool(H, M, prompt_length="2"), TypeError, "prompt_length"),
    ("truncate_dim=0", lambda: pool(H, M, truncate_dim=0), ValueError, "truncate_dim"),
    ("truncate_dim-too-big", lambda: pool(H, M, truncate_dim=4), ValueError, "truncate_dim"),
    ("truncate_dim=1.5", lambda: pool(H, M, truncate_dim=1.5), TypeError, "truncate_dim"),
    ("truncate_dim=True", lambda: pool(H, M, truncate_dim=True), TypeError, "truncate_dim"),
    ("reduction-avg", lambda: pool(H, M, "splade", reduction="avg"), ValueError, "reduction"),
    ("reduction-None", lambda: pool(H, M, reduction=None), ValueError, "reduction"),
    ("packed-normalize='no'", lambda: pool_packed(TOKENS, CU, normalize="no"), TypeError, "normalize"),
    ("packed-strategies-set", lambda: pool_packed(TOKENS, CU, {"mean", "cls"}), TypeError, "order"),
    ("packed-object-tokens", lambda: pool_packed(np.zeros((5, 3), object), CU), TypeError, "numeric"),
    ("packed-meta-tokens", lambda: pool_packed(torch.zeros(5, 3, device="meta"), CU), ValueError, "meta"),
    ("pack-meta-hidden", lambda: pack(torch.zeros(2, 3, 4, device="meta")), ValueError, "hidden states.*meta"),
    ("packed-cu-decreasing", lambda: pool_packed(TOKENS, [0, 3, 2, 5]), ValueError, "decrease"),
    ("packed-cu-not-from-0", lambda: pool_packed(TOKENS, [1, 3, 5]), ValueError, "start at 0"),
    ("packed-cu-short-end", lambda: pool_packed(TOKENS, [0, 3, 4]), ValueError, "end at"),
    ("packed-cu-float", lambda: pool_packed(TOKENS, [0.0, 3.0, 5.0]), ValueError, "integers"),
    ("packed-cu-2d", lambda: pool_packed(TOKENS, [[0, 5]]), ValueError, "1-D"),
    ("packed-tokens-3d", lambda: pool_packed(H, CU), ValueError, "2-D"),
]


@pytest.mark.parametrize(("case", "call", "error", "fragment"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_call_raises(case, call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --------------------------------------------------------------------------------- silent corruption: NaN


def _nan_in_real_token() -> tuple[np.ndarray, np.ndarray]:
    """Row 0 has NaN in a real token (position 1, dim 0); row 1 has NaN only in padding (position 3)."""
    hidden = H.copy()
    hidden[0, 1, 0] = np.nan
    hidden[1, 3, :] = np.nan
    return hidden, M


# (case, pooling call on (hidden, mask)) → row 0 must hold NaN, row 1 must be finite
NAN_CASES = [
    ("mean+normalize", lambda h, m: pool(h, m, "mean", normalize=True)),
    ("max+normalize", lambda h, m: pool(h, m, "max", normalize=True)),
    ("weightedmean+normalize", lambda h, m: pool(h, m, "weightedmean", normalize=True)),
    ("mean+truncate_dim+normalize", lambda h, m: pool(h, m, "mean", truncate_dim=2, normalize=True)),
    ("mean,max+normalize", lambda h, m: pool(h, m, ["mean", "max"], normalize=True)),
    ("torch-mean+normalize", lambda h, m: pool(torch.tensor(h), torch.tensor(m), "mean", normalize=True).numpy()),
    ("torch-float16-mean+normalize",
     lambda h, m: pool(torch.tensor(h, dtype=torch.float16), torch.tensor(m), normalize=True).float().numpy()),
    ("packed-mean+normalize",
     lambda h, m: pool_packed(np.concatenate([h[0, :3], h[1, :2]]), CU, "mean", normalize=True)),
    ("packed-max+truncate_dim+normalize",
     lambda h, m: pool_packed(np.concatenate([h[0, :3], h[1, :2]]), CU, "max", truncate_dim=1, normalize=True)),
]


@pytest.mark.parametrize(("case", "call"), NAN_CASES, ids=[c[0] for c in NAN_CASES])
def test_nan_in_a_real_token_propagates_padding_is_ignored(case, call):
    hidden, mask = _nan_in_real_token()
    out = np.asarray(call(hidden, mask), dtype=np.float64)
    assert np.isnan(out[0]).all(), out[0]  # never hidden as a zero row
    assert np.isfinite(out[1]).all(), out[1]


def test_zero_row_still_normalises_to_zero():
    """The NaN fix keeps the other edge: a row with no real token is a zero vector (not NaN)."""
    out = pool(H, np.array([[0, 0, 0, 0], [1, 1, 0, 0]]), "mean", normalize=True)
    assert (out[0] == 0).all() and np.isclose(np.linalg.norm(out[1]), 1)


# ------------------------------------------------------------------------- prompt lengths that would wrap


def _loop_mean(hidden: np.ndarray, mask: np.ndarray, skip: list[int]) -> np.ndarray:
    """float64 reference: mean of each row's real tokens after its first ``skip[i]``; zeros if none left."""
    out = np.zeros((hidden.shape[0], hidden.shape[2]))
    for i in range(hidden.shape[0]):
        real = [t for t in range(hidden.shape[1]) if mask[i, t]][skip[i]:]
        if real:
            out[i] = hidden[i, real].mean(axis=0)
    return out


@pytest.mark.parametrize(
    ("case", "prompt_length", "skip"),
    [
        ("uint64-max-wraps-to-minus-1", np.array([2**64 - 1, 0], dtype=np.uint64), [4, 0]),
        ("uint64-2**63", np.array([2**63, 1], dtype=np.uint64), [4, 1]),
        ("int-10**30", 10**30, [4, 4]),
        ("int64-max", np.iinfo(np.int64).max, [4, 4]),
        ("list-with-10**30", [10**30, 1], [4, 1]),
        ("torch-int64-max", torch.tensor([2**63 - 1, 0]), [4, 0]),
    ],
)
def test_huge_prompt_lengths_leave_out_whole_rows(case, prompt_length, skip):
    # (a listed 10**30, which numpy cannot hold as int64, is capped as a single one is: never wrapped; stop 54)
    np.testing.assert_allclose(pool(H, M, prompt_length=prompt_length), _loop_mean(H, M, skip), atol=1e-12)
