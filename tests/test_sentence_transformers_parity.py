"""Parity with sentence-transformers' own `Pooling` and `SpladePooling` modules (the anchors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies_hyp import masks

from tokenpool import pool

st_modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
sparse_modules = pytest.importorskip("sentence_transformers.sparse_encoder.modules")

MODES = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


def st_pool(hidden: torch.Tensor, mask: torch.Tensor, mode, prompt_length=None) -> torch.Tensor:
    module = st_modules.Pooling(hidden.shape[-1], pooling_mode=mode, include_prompt=prompt_length is None)
    features = {"token_embeddings": hidden.clone(), "attention_mask": mask.clone()}
    if prompt_length is not None:
        features["prompt_length"] = prompt_length
    return module(features)["sentence_embedding"]


def non_empty_mask(layout):
    return masks(4, 7, layout).filter(lambda m: bool(np.all(m.sum(axis=1) > 0)))


@pytest.mark.parametrize("mode", MODES)
@given(mask=non_empty_mask("right"), seed=st.integers(0, 2**31))
def test_right_padding_matches_sentence_transformers(mode, mask, seed):
    hidden = torch.from_numpy(np.random.default_rng(seed).standard_normal((4, 7, 6)))
    mask_t = torch.from_numpy(mask)
    torch.testing.assert_close(pool(hidden, mask_t, mode), st_pool(hidden, mask_t, mode), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@given(mask=non_empty_mask("left"), seed=st.integers(0, 2**31))
def test_left_padding_matches_sentence_transformers(mode, mask, seed):
    """ST 6.2 takes cls/lasttoken from the first/last real token and weights weightedmean by real-token rank
    (older releases read position 0 and weighted by padded position, REFERENCE.md); tokenpool always did."""
    hidden = torch.from_numpy(np.random.default_rng(seed).standard_normal((4, 7, 6)))
    mask_t = torch.from_numpy(mask)
    torch.testing.assert_close(pool(hidden, mask_t, mode), st_pool(hidden, mask_t, mode), rtol=1e-12, atol=1e-12)


@given(mask=non_empty_mask("right"), seed=st.integers(0, 2**31))
def test_multiple_modes_concatenate_in_the_users_order(mask, seed):
    hidden = torch.from_numpy(np.random.default_rng(seed).standard_normal((4, 7, 6)))
    mask_t = torch.from_numpy(mask)
    modes = ("max", "cls", "mean")
    torch.testing.assert_close(pool(hidden, mask_t, list(modes)), st_pool(hidden, mask_t, modes))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["right", "left"])
def test_prompt_exclusion_matches_sentence_transformers(mode, layout):
    rng = np.random.default_rng(11)
    hidden = torch.from_numpy(rng.standard_normal((3, 8, 5)))
    lengths = [8, 5, 4]
    mask = torch.zeros(3, 8, dtype=torch.long)
    for b, n in enumerate(lengths):
        if layout == "right":
            mask[b, :n] = 1
        else:
            mask[b, 8 - n :] = 1
    torch.testing.assert_close(
        pool(hidden, mask, mode, prompt_length=2), st_pool(hidden, mask, mode, prompt_length=2)
    )


def test_does_not_write_into_the_callers_tensor():
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    before_h, before_m = hidden.clone(), mask.clone()
    for mode in MODES + ["splade"]:
        pool(hidden, mask, mode, normalize=True)
    assert torch.equal(hidden, before_h) and torch.equal(mask, before_m)


def test_empty_rows_where_sentence_transformers_gives_nan_or_inf():
    hidden = torch.randn(2, 4, 3, dtype=torch.float16)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    theirs_mean = st_pool(hidden, mask, "mean")
    theirs_max = st_pool(hidden, mask, "max")
    assert not torch.isfinite(theirs_max[1]).all()  # -inf in ST
    for mode in MODES:
        ours = pool(hidden, mask, mode)
        assert torch.equal(ours[1], torch.zeros(3, dtype=torch.float16))
    torch.testing.assert_close(pool(hidden, mask, "mean")[0], theirs_mean[0])


@pytest.mark.parametrize("reduction", ["max", "sum"])
@pytest.mark.parametrize("layout", ["right", "left", "holes"])
@given(seed=st.integers(0, 2**31), data=st.data())
def test_splade_matches_sentence_transformers(reduction, layout, seed, data):
    mask = torch.from_numpy(data.draw(masks(3, 6, layout)))
    logits = torch.from_numpy(np.random.default_rng(seed).standard_normal((3, 6, 11)) * 3)
    module = sparse_modules.SpladePooling(pooling_strategy=reduction).eval()
    theirs = module({"token_embeddings": logits.clone(), "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(pool(logits, mask, "splade", reduction=reduction), theirs, rtol=1e-12, atol=1e-12)
