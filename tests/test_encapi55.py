"""Stop 55 hunt of the `Encoder` public API (docs/encoder.md): copies and pickles, per-call options."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
from tinymodels import bert_weights

TEXTS = ["A man is playing a guitar.", "", "naïve café — Ünïcode", "x " * 80, "Hi"]


@pytest.fixture(scope="module")
def head_folder(tmp_path_factory) -> Path:
    """A tiny sentence-transformers folder with Dense and LayerNorm modules after pooling (saved by
    sentence-transformers itself)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling, Transformer

    folder = bert_weights(tmp_path_factory.mktemp("encapi55") / "head")
    torch.manual_seed(5)
    modules = [Transformer(str(folder), max_seq_length=48), Pooling(32, "mean"), Dense(32, 20, use_residual=True),
               LayerNorm(20), Dense(20, 12, activation_function=torch.nn.GELU()), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_an_encoder_with_dense_and_layernorm_modules_pickles(head_folder, dtype):
    """docs/encoder.md: an Encoder can be pickled (multiprocessing, joblib, Ray workers); a folder with Dense /
    LayerNorm modules after pooling raised AttributeError ("Can't pickle local object '_dense.<locals>.step'")."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    encoder = Encoder(str(head_folder), dtype=dtype)
    vectors = encoder.encode(TEXTS)
    if dtype is None:  # the pipeline itself agrees with sentence-transformers
        reference = SentenceTransformer(str(head_folder), device="cpu").encode(TEXTS)
        np.testing.assert_allclose(vectors, reference, rtol=0, atol=2e-6)
    for copied in (pickle.loads(pickle.dumps(encoder)), copy.deepcopy(encoder)):
        assert copied.dtype == encoder.dtype and copied.dimension == 12
        np.testing.assert_array_equal(copied.encode(TEXTS), vectors)
        np.testing.assert_array_equal(copied.encode(TEXTS, truncate_dim=5, normalize=False),
                                      encoder.encode(TEXTS, truncate_dim=5, normalize=False))
