"""LlamaIndex's seed `Pooling` API keeps working exactly (see shared/seed/pooling-seed.txt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenpool import Pooling


def test_seed_usage_example_runs_unchanged():
    # The seed's usage example, verbatim except for the import line.
    from tokenpool import Pooling

    # Token-level embeddings for a single sequence: (seq_len, embed_dim)
    token_embeddings = np.random.rand(128, 768)
    # CLS pooling: extract first token
    cls_vector = Pooling.CLS(token_embeddings)  # shape: (768,)
    # MEAN pooling: average all tokens
    mean_vector = Pooling.MEAN(token_embeddings)  # shape: (768,)
    # Batch of token embeddings: (batch_size, seq_len, embed_dim)
    batch_embeddings = np.random.rand(4, 128, 768)
    batch_cls = Pooling.CLS(batch_embeddings)  # shape: (4, 768)
    batch_mean = Pooling.MEAN(batch_embeddings)  # shape: (4, 768)

    assert cls_vector.shape == (768,) and mean_vector.shape == (768,)
    assert batch_cls.shape == (4, 768) and batch_mean.shape == (4, 768)
    np.testing.assert_array_equal(cls_vector, token_embeddings[0])
    np.testing.assert_allclose(mean_vector, token_embeddings.mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(batch_cls, batch_embeddings[:, 0])
    np.testing.assert_allclose(batch_mean, batch_embeddings.mean(axis=1), rtol=1e-12)


def test_members_values_and_lookup():
    assert Pooling.CLS == "cls" and Pooling.MEAN == "mean"
    assert Pooling("cls") is Pooling.CLS and Pooling("mean") is Pooling.MEAN
    assert isinstance(Pooling.MEAN, str)
    assert {m.name: m.value for m in Pooling} == {
        "CLS": "cls",
        "MEAN": "mean",
        "MAX": "max",
        "MEAN_SQRT_LEN": "mean_sqrt_len_tokens",
        "WEIGHTED_MEAN": "weightedmean",
        "LAST_TOKEN": "lasttoken",
        "SPLADE": "splade",
    }
    with pytest.raises(ValueError):
        Pooling("no-such-pooling")


def test_classmethods_match_the_seed():
    array = np.random.rand(3, 7, 5)
    np.testing.assert_array_equal(Pooling.cls_pooling(array), array[:, 0])
    np.testing.assert_array_equal(Pooling.cls_pooling(array[0]), array[0, 0])
    np.testing.assert_allclose(Pooling.mean_pooling(array), array.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(Pooling.mean_pooling(array[0]), array[0].mean(axis=0), rtol=1e-12)


def test_torch_in_torch_out():
    tensor = torch.rand(3, 7, 5)
    cls = Pooling.CLS(tensor)
    mean = Pooling.MEAN(tensor)
    assert isinstance(cls, torch.Tensor) and isinstance(mean, torch.Tensor)
    assert torch.equal(cls, tensor[:, 0])
    torch.testing.assert_close(mean, tensor.mean(dim=1))
    torch.testing.assert_close(Pooling.cls_pooling(tensor[0]), tensor[0, 0])


def test_numpy_float32_stays_float32():
    array = np.random.rand(2, 4, 3).astype(np.float32)
    assert Pooling.MEAN(array).dtype == np.float32
    assert Pooling.CLS(array).dtype == np.float32


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5), ()])
def test_other_ranks_raise_not_implemented_naming_the_shape(shape):
    array = np.zeros(shape)
    for call in (Pooling.CLS, Pooling.MEAN, Pooling.cls_pooling, Pooling.mean_pooling):
        with pytest.raises(NotImplementedError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
            call(array)
