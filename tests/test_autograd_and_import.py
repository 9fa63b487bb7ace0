"""Gradients flow to the hidden states; `import tokenpool` stays light."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from reference import reference_pool

from tokenpool import pool

ALL = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "splade"]


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("normalize", [False, True])
def test_gradcheck_float64(strategy, normalize):
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 0, 1, 0, 1]])
    assert torch.autograd.gradcheck(
        lambda h: pool(h, mask, strategy, normalize=normalize, prompt_length=[0, 1, 0]), (hidden,)
    )


def test_gradient_is_zero_on_padding_and_finite_for_empty_rows():
    hidden = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    pool(hidden, mask, ["mean", "max", "weightedmean", "lasttoken"], normalize=True).sum().backward()
    assert torch.isfinite(hidden.grad).all()
    assert torch.all(hidden.grad[0, 2:] == 0) and torch.all(hidden.grad[1] == 0)


def test_mean_gradient_is_one_over_n_on_real_tokens():
    hidden = torch.zeros(1, 4, 2, dtype=torch.float64, requires_grad=True)
    pool(hidden, torch.tensor([[1, 1, 1, 0]]), "mean").sum().backward()
    expected = np.array(reference_pool(np.eye(4)[:, :, None].repeat(2, 2), [[1, 1, 1, 0]] * 4, "mean"))[:, 0]
    np.testing.assert_allclose(hidden.grad[0, :, 0].numpy(), expected)


def test_import_pulls_in_no_framework_only_array_api_compat():
    """`import tokenpool` after numpy adds tokenpool's own modules, array-api-compat's helpers and stdlib only.

    (Its time, ~12 ms on the dev machine, is reported by `python -X importtime`; tests assert no timings.)
    """
    code = (
        "import sys, numpy; before = set(sys.modules); import tokenpool; "
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    added = eval(out)  # a printed list of module names
    foreign = [m for m in added if not m.startswith(("tokenpool", "array_api_compat", "__future__"))]
    assert foreign == [], foreign
    for heavy in ("torch", "jax", "transformers", "sentence_transformers", "cupy", "dask", "tqdm"):
        assert heavy not in added


def test_lazy_public_names_resolve():
    import tokenpool

    assert "Encoder" in dir(tokenpool)
    with pytest.raises(AttributeError, match="no_such_name"):
        tokenpool.no_such_name  # noqa: B018
