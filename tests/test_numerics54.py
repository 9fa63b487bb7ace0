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
