"""Bad input gets the right exception with a message naming the offending value or shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenpool import Pooling, pool

HIDDEN = np.random.default_rng(0).standard_normal((2, 3, 4))
MASK = np.array([[1, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("shape", [(4,), (1, 2, 3, 4)])
def test_wrong_rank(shape):
    with pytest.raises(NotImplementedError, match=r"shape \(" + ", ".join(map(str, shape))):
        pool(np.zeros(shape), None)


@pytest.mark.parametrize("mask_shape", [(2, 4), (3, 3), (2,), (2, 3, 1)])
def test_mask_shape_mismatch_names_both_shapes(mask_shape):
    with pytest.raises(ValueError) as info:
        pool(HIDDEN, np.ones(mask_shape, dtype=int))
    assert str(mask_shape) in str(info.value) and "(2, 3, 4)" in str(info.value)


def test_single_sequence_mask_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        pool(HIDDEN[0], np.ones(4, dtype=int))


@pytest.mark.parametrize("bad", [2, -1, 0.5])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_mask_values_other_than_zero_one(bad, library):
    mask = MASK.astype(float)
    mask[0, 2] = bad
    if library == "torch":
        mask = torch.tensor(mask)
    with pytest.raises(ValueError, match=str(bad)):
        pool(torch.tensor(HIDDEN) if library == "torch" else HIDDEN, mask)


def test_ragged_mask_list():
    with pytest.raises(ValueError, match="attention_mask"):
        pool(HIDDEN, [[1, 1, 0], [1]])


@pytest.mark.parametrize("name", ["avg_pool", "", "mean,nope", 3])
def test_unknown_strategy_lists_the_valid_names(name):
    with pytest.raises(ValueError) as info:
        pool(HIDDEN, MASK, name)
    message = str(info.value)
    assert repr(name.split(",")[-1] if isinstance(name, str) and name else name) in message or "no pooling" in message
    for valid in ["cls", "mean", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens", "splade"]:
        assert valid in message


def test_empty_strategy_list():
    with pytest.raises(ValueError, match="no pooling strategy"):
        pool(HIDDEN, MASK, [])


@pytest.mark.parametrize("prompt_length", [-1, [0, -2]])
def test_negative_prompt_length(prompt_length):
    with pytest.raises(ValueError, match="-"):
        pool(HIDDEN, MASK, prompt_length=prompt_length)


@pytest.mark.parametrize("prompt_length", [[1], [1, 2, 3], np.zeros((2, 1), dtype=int)])
def test_prompt_length_of_the_wrong_length(prompt_length):
    with pytest.raises(ValueError, match="one value per row"):
        pool(HIDDEN, MASK, prompt_length=prompt_length)


@pytest.mark.parametrize("prompt_length", [1.5, True, "2", [0.5, 1.0], np.array(1.5)])
def test_prompt_length_of_the_wrong_type(prompt_length):
    with pytest.raises(TypeError, match="prompt_length"):
        pool(HIDDEN, MASK, prompt_length=prompt_length)


@pytest.mark.parametrize("truncate_dim", [0, -3, 5, 9])
def test_truncate_dim_out_of_range(truncate_dim):
    with pytest.raises(ValueError, match=rf"1\.\.4.*{truncate_dim}"):
        pool(HIDDEN, MASK, truncate_dim=truncate_dim)


def test_truncate_dim_counts_concatenated_dims():
    assert pool(HIDDEN, MASK, ["mean", "max"], truncate_dim=8).shape == (2, 8)
    with pytest.raises(ValueError, match="1..8"):
        pool(HIDDEN, MASK, ["mean", "max"], truncate_dim=9)


@pytest.mark.parametrize("truncate_dim", [2.0, True])
def test_truncate_dim_of_the_wrong_type(truncate_dim):
    with pytest.raises(TypeError, match="truncate_dim"):
        pool(HIDDEN, MASK, truncate_dim=truncate_dim)


def test_unknown_reduction():
    with pytest.raises(ValueError, match="'mean'"):
        pool(HIDDEN, MASK, "splade", reduction="mean")


@pytest.mark.parametrize("hidden", ["text", [["a", "b"]], {"a": 1}, [[1.0, 2.0], [3.0]]])
def test_non_numeric_hidden_states(hidden):
    with pytest.raises((TypeError, NotImplementedError)):
        pool(hidden)


def test_complex_hidden_states():
    with pytest.raises(TypeError, match="complex"):
        pool(HIDDEN.astype(complex), MASK)


def test_members_raise_the_same_errors():
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        Pooling.MAX(HIDDEN, np.ones((2, 4)))
