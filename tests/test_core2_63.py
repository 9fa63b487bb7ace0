"""Stop 63, core follow-ups: the seed's own MEAN call on torch, bench's argument errors, empty strategy and
library names refused by one rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clitools import assert_one_error_line

from tokenpool import Pooling, cli


def _seed_mean(array):
    """LlamaIndex's own ``Pooling.MEAN`` (a test dependency), else the seed's documented ``array.mean(axis=1)``
    / ``array.mean(axis=0)``."""
    try:
        from llama_index.core.embeddings.pooling import Pooling as Seed
    except ImportError:
        return array.mean(axis=1 if array.ndim == 3 else 0)
    return Seed.MEAN(array)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_mean_on_torch_is_llama_index_mean_bit_for_bit(dtype):
    """`Pooling.MEAN(t)` (no mask, no option) summed with tokenpool's kernels: 2.75e-7 off a float64 mean where
    LlamaIndex's ``t.mean(axis=1)`` is 0.89e-7 off; now the seed's own values, 3-D and 2-D, with autograd."""
    hidden = torch.randn(4, 128, 768, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for call in (Pooling.MEAN, Pooling.mean_pooling):
        for array in (hidden, hidden[1]):
            got, theirs = call(array), _seed_mean(array)
            assert got.dtype == theirs.dtype and torch.equal(got, theirs)
    tracked = hidden[:2, :5].clone().requires_grad_(True)
    Pooling.MEAN(tracked).sum().backward()
    assert torch.equal(tracked.grad, torch.full_like(tracked, 1 / 5))


def test_seed_mean_on_numpy_stays_the_seed_mean():
    hidden = np.random.default_rng(0).standard_normal((4, 128, 768)).astype(np.float32)
    for array in (hidden, hidden[0]):
        np.testing.assert_array_equal(Pooling.MEAN(array), _seed_mean(array))


def test_other_mean_calls_keep_pools_rules():
    """No token: zeros (the seed gives NaN); half precision accumulates in float32 and comes back in its dtype;
    integers promote; with a mask or an option MEAN is `pool`'s."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        empty = torch.zeros(2, 0, 3, dtype=dtype)
        got = Pooling.MEAN(empty)
        assert got.dtype == dtype and got.shape == (2, 3) and not got.any()
    big = torch.full((1, 40, 2), 3000.0, dtype=torch.float16)  # Σ = 120000 > float16's 65504
    assert Pooling.MEAN(big).dtype == torch.float16 and torch.equal(Pooling.MEAN(big), big[:, 0])
    assert Pooling.MEAN(torch.arange(6).reshape(1, 3, 2)).tolist() == [[2.0, 3.0]]
    hidden = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(Pooling.MEAN(hidden, mask)[0], hidden[0, :2].mean(0), rtol=0, atol=1e-15)
    unit = Pooling.MEAN(hidden, normalize=True)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(NotImplementedError, match="4-D"):
        Pooling.MEAN(torch.zeros(1, 2, 3, 4))
    with pytest.raises(TypeError, match="complex"):
        Pooling.MEAN(torch.zeros(2, 3, dtype=torch.complex64))


@pytest.mark.parametrize("spec", ["torch,", ",torch", "torch,,numpy", "torch, ,numpy"])
def test_bench_refuses_an_empty_library_name_as_it_refuses_an_empty_strategy_name(capsys, spec):
    """``--libraries torch,`` timed torch alone (the empty item dropped) where ``--strategies mean,`` is refused;
    now the same rule, one line, exit 2. Nothing given at all keeps its own message."""
    code = cli.main(["bench", "--batch", "2", "--length", "4", "--dim", "4", "--no-st", "--libraries", spec])
    assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error:",
                          f"an empty library name in {spec!r}; valid names: torch, numpy, torch-own")


@pytest.mark.parametrize(("spec", "empty"), [("mean,,cls", "mean,,cls"), ("mean,", "mean,"), ("mean+", "mean+"),
                                             ("cls,mean+max+", "mean+max+")])  # fmt: skip
def test_evaluate_pooling_refuses_an_empty_name_as_parse_strategies_does(spec, empty):
    """``--pooling mean,,cls`` dropped the empty row and ``--pooling mean+`` said "unknown pooling strategy ''";
    both are parse_strategies' refusal now, naming the list that holds the empty name."""
    from tokenpool.core.strategies import valid_names
    from tokenpool.evaluation.sts import strategy_labels

    with pytest.raises(ValueError) as caught:
        strategy_labels(spec)
    assert str(caught.value) == f"an empty strategy name in {empty!r}; valid names: {', '.join(valid_names())}"
    assert strategy_labels(" mean , cls+max ") == ["mean", "cls+max"]
    with pytest.raises(ValueError, match="no pooling strategy given; use --pooling all"):
        strategy_labels(" , ")


@pytest.mark.parametrize("argument", ["a\nb", "a\rb", "a\u2028b", "a\x1cb"])
def test_bench_prints_an_argument_with_a_line_end_on_one_line(capsys, argument):
    """``tokenpool bench $'a\\nb'`` printed "unrecognized arguments: a" and "b" on two lines (bench has its own
    parser); its error is one line now, as every command's, through `errors.one_line`."""
    code = cli.main(["bench", argument])
    assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error: unrecognized arguments: 'a")
