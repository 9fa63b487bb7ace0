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


@pytest.fixture(scope="module")
def minilm():
    from tokenpool import Encoder

    return Encoder(device="cpu")


@pytest.mark.parametrize("mode", ["bogus", "", "Windows", 3])
def test_iter_token_batches_refuses_an_unknown_long_documents_mode_as_encode_does(minilm, mode):
    """An unknown mode was taken for "windows" (advice to use iter_vector_batches or encode, which then refuse the
    same value), and "" silently ran the encoder's mode; now the refusal of `encode` and `iter_vector_batches`."""
    from tokenpool.errors import OptionError

    expected = rf"long_documents must be one of \('truncate', 'windows'\), got {mode!r}"
    for method in (minilm.encode, minilm.iter_vector_batches, minilm.iter_token_batches):
        with pytest.raises(OptionError, match=expected):
            list(method(["a text"], long_documents=mode))


def test_iter_token_batches_still_refuses_windows_and_runs_truncate(minilm):
    from tokenpool.errors import OptionError

    with pytest.raises(OptionError, match="use iter_vector_batches or encode"):
        minilm.iter_token_batches(["a text"], long_documents="windows")
    out = np.zeros((len(TEXTS), minilm.dimension), dtype=np.float32)
    for batch in minilm.iter_token_batches(TEXTS, batch_size=2, long_documents="truncate"):
        out[batch.indices] = minilm.pool_batch(batch)
    np.testing.assert_allclose(out, minilm.encode(TEXTS), rtol=0, atol=2e-6)


@pytest.mark.parametrize("given", [{"truncate_dim": 5}, None, "all-MiniLM-L6-v2"])
def test_from_options_refuses_what_is_no_encoder_options_by_its_type(given):
    """`Encoder.from_options` with a dict (or None, a model name) raised AttributeError "'dict' object has no
    attribute 'check'"; now a TypeError naming what it takes and what it got, before any folder is read."""
    from tokenpool import Encoder

    with pytest.raises(TypeError, match=rf"EncoderOptions.*got {type(given).__name__}"):
        Encoder.from_options(given)


def test_from_options_refuses_an_unknown_caller():
    """``caller`` spells the options in refusals ("python", "cli", "http"); an unknown one was taken silently (and
    spelled --dim as the CLI does); now refused as `EncodeRequest` refuses it, naming the value."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError
    from tokenpool.model.options import EncoderOptions

    with pytest.raises(OptionError, match=r"caller must be one of \('python', 'cli', 'http'\), got 'bogus'"):
        Encoder.from_options(EncoderOptions(truncate_dim=5), caller="bogus")
    assert Encoder.from_options(EncoderOptions(truncate_dim=5), caller="cli").dimension == 5
