"""`tokenpool.torch.Pool`: matches a float64 loop reference, gradients flow (gradcheck, training), compiles."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tokenpool.torch import Pool  # noqa: E402

DENSE = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


def reference_row(tokens: np.ndarray, strategy: str, skipped: int = 0) -> np.ndarray:
    """One row's pooled vector from its pooled tokens (n×D, float64), by plain loops; ``skipped`` prompt
    tokens came before them (weightedmean ranks count real tokens from the first, prompt included)."""
    n, dim = tokens.shape
    if n == 0:
        return np.zeros(dim)
    if strategy == "cls":
        return tokens[0].copy()
    if strategy == "lasttoken":
        return tokens[n - 1].copy()
    if strategy == "max":
        return np.array([max(tokens[i, d] for i in range(n)) for d in range(dim)])
    total = np.zeros(dim)
    weights = 0.0
    for i in range(n):
        w = float(skipped + i + 1) if strategy == "weightedmean" else 1.0
        total += w * tokens[i]
        weights += w
    if strategy == "mean":
        return total / n
    if strategy == "mean_sqrt_len_tokens":
        return total / np.sqrt(n)
    return total / weights


def reference(hidden, mask, strategies, prompt_length=0, normalize=False):
    rows = []
    for b in range(hidden.shape[0]):
        real = [i for i in range(hidden.shape[1]) if mask[b, i]]
        tokens = hidden[b, real[prompt_length:]]
        skipped = min(prompt_length, len(real))
        row = np.concatenate([reference_row(tokens, s, skipped) for s in strategies])
        if normalize and np.linalg.norm(row) > 0:
            row = row / np.linalg.norm(row)
        rows.append(row)
    return np.stack(rows)


@st.composite
def batches(draw):
    rows, length, dim = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((rows, length, dim))
    mask = rng.random((rows, length)) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    return hidden, mask


@given(
    batch=batches(),
    strategies=st.lists(st.sampled_from(DENSE), min_size=1, max_size=2),
    prompt_length=st.integers(0, 3),
    normalize=st.booleans(),
    bool_mask=st.booleans(),
)
def test_forward_matches_loop_reference(batch, strategies, prompt_length, normalize, bool_mask):
    hidden, mask = batch
    module = Pool(strategies, prompt_length=prompt_length, normalize=normalize)
    torch_mask = torch.from_numpy(mask) if bool_mask else torch.from_numpy(mask.astype(np.int64))
    out = module(torch.from_numpy(hidden), torch_mask)
    assert out.dtype == torch.float64
    expected = reference(hidden, mask, strategies, prompt_length, normalize)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_per_call_prompt_length_overrides_module_value():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 6, 4))
    mask = np.ones((3, 6), dtype=bool)
    module = Pool("mean", prompt_length=1)
    out = module(torch.from_numpy(hidden), torch.from_numpy(mask), prompt_length=[0, 2, 5])
    expected = np.stack(
        [reference(hidden[i : i + 1], mask[i : i + 1], ["mean"], p)[0] for i, p in enumerate([0, 2, 5])]
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    default = module(torch.from_numpy(hidden), torch.from_numpy(mask))
    np.testing.assert_allclose(default.numpy(), reference(hidden, mask, ["mean"], 1), rtol=1e-12)


@pytest.mark.parametrize("strategy", [*DENSE, "splade"])
def test_gradcheck_float64(strategy):
    torch.manual_seed(1)
    hidden = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    module = Pool(strategy, normalize=True, prompt_length=1)
    assert torch.autograd.gradcheck(lambda x: module(x, mask), (hidden,))


def test_padding_and_prompt_tokens_get_no_gradient():
    hidden = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]])
    Pool(["mean", "max"], prompt_length=1)(hidden, mask).square().sum().backward()
    kept = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.all(hidden.grad[~kept] == 0)
    assert torch.all(hidden.grad[kept].abs().sum(-1) > 0)


def test_training_step_reduces_a_contrastive_loss():
    torch.manual_seed(0)
    vocab, dim, rows, length = 50, 16, 8, 7
    embed = torch.nn.Embedding(vocab, dim)
    proj = torch.nn.Linear(dim, dim)
    pool = Pool("mean", normalize=True)
    ids = torch.randint(1, vocab, (2 * rows, length))
    lengths = torch.randint(2, length + 1, (2 * rows,))
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    optimiser = torch.optim.SGD([*embed.parameters(), *proj.parameters()], lr=0.5)

    def loss_fn():
        vectors = pool(proj(embed(ids)), mask)
        scores = vectors[:rows] @ vectors[rows:].T / 0.05
        return torch.nn.functional.cross_entropy(scores, torch.arange(rows))

    first = loss_fn()
    for _ in range(20):
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        assert embed.weight.grad is not None and embed.weight.grad.abs().sum() > 0
        optimiser.step()
    assert loss_fn().item() < 0.5 * first.item()


def _compile(module, **options):
    torch._dynamo.reset()
    # aot_eager traces forward and backward through AOTAutograd like inductor does, without inductor's
    # code generation (tens of seconds per graph on a 2-core CPU).
    return torch.compile(module, backend="aot_eager", **options)


def _compiled_matches_eager(module, compiled, lengths=(5, 9)):
    for length in lengths:  # a second length exercises recompilation with a new shape
        torch.manual_seed(length)
        hidden = torch.randn(3, length, 4, requires_grad=True)
        mask = torch.arange(length)[None, :] < torch.tensor([2, length, 1])[:, None]
        out = compiled(hidden, mask)
        (grad,) = torch.autograd.grad(out.sum(), hidden)
        eager_hidden = hidden.detach().clone().requires_grad_(True)
        eager = module(eager_hidden, mask)
        (eager_grad,) = torch.autograd.grad(eager.sum(), eager_hidden)
        torch.testing.assert_close(out, eager)
        torch.testing.assert_close(grad, eager_grad)
        assert torch.all(out[2] == 0)  # one real token, excluded as prompt: an empty row


@pytest.mark.usefixtures("quiet_dynamo")
@pytest.mark.parametrize("strategy", [["mean", "max", "lasttoken"], "weightedmean"])
def test_compile_matches_eager_forward_and_backward(strategy):
    module = Pool(strategy, prompt_length=1, normalize=True)
    _compiled_matches_eager(module, _compile(module))


@pytest.mark.usefixtures("quiet_dynamo")
@pytest.mark.parametrize("strategy", [["mean", "max", "lasttoken"], "weightedmean"])
def test_compile_fullgraph_with_boolean_mask(strategy):
    """Under compile the fast path steps aside (its mask analysis is host-side); the generic path traces whole."""
    module = Pool(strategy, prompt_length=1, normalize=True)
    _compiled_matches_eager(module, _compile(module, fullgraph=True))


@pytest.mark.usefixtures("quiet_dynamo")
def test_compile_default_mode_with_integer_mask_matches_eager_and_still_validates():
    module = Pool("weightedmean")
    compiled = _compile(module)  # the 0/1 check on an integer mask is a graph break, not an error
    hidden = torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]])
    torch.testing.assert_close(compiled(hidden, mask), module(hidden, mask))
    with pytest.raises(ValueError, match="only 0 and 1"):
        compiled(hidden, mask * 2)


@pytest.mark.usefixtures("quiet_dynamo")
@pytest.mark.parametrize("prompt_length", [None, 2, 2**40])
def test_export_with_a_dynamic_batch_and_length_matches_eager(prompt_length):
    """torch.export with dynamic B and L (a boolean mask: an integer one's 0/1 check reads data): an int
    prompt_length was clamped to L read as a Python int, which fixed L to the example's ("Constraints violated
    (L)"); the clamp is now int32's maximum, which no rank reaches."""
    module = Pool(["mean", "max", "lasttoken"], prompt_length=prompt_length)
    hidden, mask = torch.randn(3, 9, 4), torch.ones(3, 9, dtype=torch.bool)
    dims = {0: torch.export.Dim("B", min=2, max=64), 1: torch.export.Dim("L", min=3, max=512)}
    exported = torch.export.export(module, (hidden, mask), dynamic_shapes=(dims, dims)).module()
    hidden, mask = torch.randn(2, 17, 4), torch.arange(17).expand(2, 17) < torch.tensor([[11], [17]])
    torch.testing.assert_close(exported(hidden, mask), module(hidden, mask))


def test_bad_arguments_raise_named_errors():
    with pytest.raises(ValueError, match="'avg_pool'"):
        Pool("avg_pool")
    with pytest.raises(ValueError, match="prompt_length"):
        Pool(prompt_length=-1)
    with pytest.raises(TypeError, match="prompt_length"):
        Pool(prompt_length=1.5)
    with pytest.raises(ValueError, match="truncate_dim"):
        Pool(truncate_dim=0)
    with pytest.raises(ValueError, match="reduction"):
        Pool("splade", reduction="mean")
    with pytest.raises(TypeError, match="ndarray"):
        Pool()(np.zeros((1, 2, 3)))
    hidden = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        Pool(prompt_length=1)(hidden, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="truncate_dim"):
        Pool(truncate_dim=7)(hidden)


def test_numpy_integer_prompt_length_is_an_int():
    """Pool(prompt_length=np.int64(2)) raised "must be an int or None, got np.int64(2)", though `pool`, the
    per-call prompt_length and truncate_dim all take numpy integers."""
    hidden, mask = torch.randn(2, 4, 3), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    module = Pool("mean", prompt_length=np.int64(2))
    assert module.prompt_length == 2 and type(module.prompt_length) is int
    torch.testing.assert_close(module(hidden, mask), Pool("mean", prompt_length=2)(hidden, mask))


def test_module_is_parameter_free_and_describes_itself():
    module = Pool(["mean", "max"], normalize=True, truncate_dim=5)
    assert list(module.parameters()) == [] and module.state_dict() == {}
    assert repr(module) == "Pool(strategy=[mean, max], normalize=True, truncate_dim=5)"
    assert module.output_dim(4) == 5
    assert Pool("cls").output_dim(4) == 4
    out = module(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.norm(dim=-1).numpy(), 1.0, rtol=1e-6)
