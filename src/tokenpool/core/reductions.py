"""The generic pooling math, written once against the Array API standard: numpy, torch (with autograd), JAX
and array-api-strict share it, and the fast paths are tested against it. Functional (``xp.where``, no in-place
writes); padding is selected away, never multiplied by zero, so NaN or inf in padded positions cannot leak."""

from __future__ import annotations

from typing import Any

from ._backends import device
from .compiled import TOKEN_BLOCK
from .masks import token_ranks
from .strategies import Pooling


def token_sum(xp: Any, values: Any, dtype: Any = None) -> Any:
    """``values`` (…×T×D) summed over its tokens (axis −2) in ``dtype`` (default: theirs), `TOKEN_BLOCK` tokens
    at a time."""
    tokens = values.shape[-2]
    if not isinstance(tokens, int) or tokens <= TOKEN_BLOCK:  # (a symbolic length, as torch.export's dynamic
        return xp.sum(values, axis=-2, dtype=dtype)  # shapes trace it, would be fixed by a branch on it)
    total = xp.sum(values[..., :TOKEN_BLOCK, :], axis=-2, dtype=dtype)
    for first in range(TOKEN_BLOCK, tokens, TOKEN_BLOCK):  # (stops past the end are not in the Array API)
        total = total + xp.sum(values[..., first : min(first + TOKEN_BLOCK, tokens), :], axis=-2, dtype=dtype)
    return total


def reduce_rows(
    xp: Any, strategy: Pooling, hidden: Any, keep: Any, reduction: str = "max", real: Any = None
) -> Any:
    """Pool B×L×D ``hidden`` (in the accumulation dtype) over the tokens where the B×L boolean ``keep`` is
    True → B×D; rows with no kept token give zeros. ``real`` is the mask before prompt exclusion (default:
    ``keep``): weightedmean weights each kept token by its rank among the real tokens, so a left-out prompt
    shifts the weights the way sentence-transformers does."""
    zero = xp.zeros((), dtype=hidden.dtype, device=device(hidden))
    # no token positions at all: every row is empty (max over nothing is undefined); or no rows or no width
    # (Dask's max over a block of no rows or no columns computes to the wrong shape: (0, 0), (1, 0), 2 rows of 3)
    if hidden.shape[1] == 0 or hidden.shape[0] == 0 or hidden.shape[2] == 0:
        return xp.sum(hidden, axis=1)  # zeros, as a sum over no token: autograd keeps them in its graph
    keep3 = keep[..., None]
    counts = xp.sum(xp.astype(keep, hidden.dtype), axis=1)[:, None]  # B×1
    if strategy is Pooling.CLS or strategy is Pooling.LAST_TOKEN:
        ranks = token_ranks(xp, keep)
        target = 1 if strategy is Pooling.CLS else xp.astype(counts, ranks.dtype)
        chosen = xp.logical_and(keep, ranks == target)
        return xp.sum(xp.where(chosen[..., None], hidden, zero), axis=1)
    if strategy is Pooling.MEAN or strategy is Pooling.MEAN_SQRT_LEN:
        total = token_sum(xp, xp.where(keep3, hidden, zero))
        safe = xp.maximum(counts, xp.ones_like(counts))
        return total / (safe if strategy is Pooling.MEAN else xp.sqrt(safe))
    if strategy is Pooling.WEIGHTED_MEAN:
        ranks = token_ranks(xp, keep if real is None else real)  # 1..n over the real tokens
        weights = xp.astype(ranks, hidden.dtype)
        weights = xp.where(keep, weights, zero)
        total = token_sum(xp, xp.where(keep3, hidden, zero) * weights[..., None])
        real_counts = counts if real is None else xp.sum(xp.astype(real, hidden.dtype), axis=1)[:, None]
        norm = rank_total(real_counts - counts, counts)  # the kept tokens: the last k of the n real ones
        return total / xp.maximum(norm, xp.ones_like(norm))
    if strategy is Pooling.MAX:
        lowest = xp.full((), -float("inf"), dtype=hidden.dtype, device=device(hidden))
        best = xp.max(xp.where(keep3, hidden, lowest), axis=1)
        return xp.where(counts > 0, best, zero)
    if strategy is Pooling.SPLADE:
        # padding is selected away before the activation: log1p(relu(NaN)) at a padded position would make its
        # gradient 0·NaN = NaN (jax.grad, torch.compile); log1p(relu(0)) = 0 is a neutral fill for max and sum
        activated = splade_activation(xp, xp.where(keep3, hidden, zero))
        return xp.max(activated, axis=1) if reduction == "max" else token_sum(xp, activated)
    raise AssertionError(f"unhandled strategy {strategy!r}")  # pragma: no cover - the enum is closed


def splade_activation(xp: Any, values: Any) -> Any:
    """SPLADE's activation of token values, log(1 + relu(x)), in their dtype: the one place it is written (the
    fast paths' numpy and torch kernels apply it in place, and tests hold them to this)."""
    return xp.log1p(xp.maximum(values, xp.zeros((), dtype=values.dtype, device=device(values))))


def rank_total(base: Any, count: Any) -> Any:
    """Σ of the weightedmean weights base + 1 … base + count (``count`` tokens after ``base`` left out):
    count·(2·base + count + 1)/2, of ints or arrays of any library, rounded once (both factors exact integers
    below 2^24 tokens; a running float32 sum of the ranks rounds at every step past 5,792 tokens)."""
    return count * (2 * base + count + 1) / 2
