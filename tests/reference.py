"""The plainest possible pooling: float64, a loop over rows and their real tokens. The tests' yardstick."""

from __future__ import annotations

import math

import numpy as np


def real_positions(mask_row, prompt_length: int = 0) -> list[int]:
    """Positions of the real tokens of one row, in order, without the first ``prompt_length`` of them."""
    positions = [t for t, flag in enumerate(mask_row) if flag]
    return positions[prompt_length:]


def reference_row(
    h_row: np.ndarray, positions: list[int], strategy: str, reduction: str = "max", skipped: int = 0
) -> np.ndarray:
    """One row's pooled vector (float64) from its L×D tokens and the positions to pool.

    ``skipped`` real tokens (a prompt) came before ``positions``: weightedmean's weights continue after them.
    """
    dim = h_row.shape[1]
    out = np.zeros(dim)
    n = len(positions)
    if n == 0:
        return out
    if strategy == "cls":
        return h_row[positions[0]].astype(np.float64)
    if strategy == "lasttoken":
        return h_row[positions[-1]].astype(np.float64)
    if strategy in ("mean", "mean_sqrt_len_tokens"):
        for t in positions:
            for d in range(dim):
                out[d] += float(h_row[t, d])
        return out / (n if strategy == "mean" else math.sqrt(n))
    if strategy == "weightedmean":
        total_weight = 0.0
        for i, t in enumerate(positions, start=1 + skipped):
            total_weight += i
            for d in range(dim):
                out[d] += i * float(h_row[t, d])
        return out / total_weight
    if strategy == "max":
        for d in range(dim):
            out[d] = max(float(h_row[t, d]) for t in positions)
        return out
    if strategy == "splade":
        for d in range(dim):
            values = [math.log1p(max(float(h_row[t, d]), 0.0)) for t in positions]
            out[d] = max(values) if reduction == "max" else sum(values)
        return out
    raise ValueError(strategy)


def reference_pool(
    hidden,
    mask,
    strategies,
    *,
    prompt_length=None,
    normalize: bool = False,
    truncate_dim: int | None = None,
    reduction: str = "max",
) -> np.ndarray:
    """B×L×D numpy hidden states and a B×L 0/1 mask → B×D' float64, composed the documented way."""
    hidden = np.asarray(hidden, dtype=np.float64)
    mask = np.asarray(mask)
    rows = hidden.shape[0]
    if prompt_length is None:
        prompts = [0] * rows
    elif np.ndim(prompt_length) == 0:
        prompts = [int(prompt_length)] * rows
    else:
        prompts = [int(p) for p in prompt_length]
    if isinstance(strategies, str):
        strategies = [strategies]
    out = []
    for b in range(rows):
        positions = real_positions(mask[b], prompts[b])
        skipped = len(real_positions(mask[b])) - len(positions)
        vector = np.concatenate([reference_row(hidden[b], positions, s, reduction, skipped) for s in strategies])
        out.append(reference_finish(vector, truncate_dim=truncate_dim, normalize=normalize))
    return np.stack(out)


def reference_finish(vector, *, truncate_dim: int | None = None, normalize: bool = False) -> np.ndarray:
    """One vector finished the documented way, in float64: the first ``truncate_dim`` values, then divided by
    their Euclidean norm (``math.hypot``: no overflow or underflow); a zero vector stays zero."""
    vector = np.asarray(vector, dtype=np.float64)
    if truncate_dim is not None:
        vector = vector[:truncate_dim]
    if normalize:
        norm = math.hypot(*vector.tolist())
        if norm > 0:
            vector = np.array([v / norm for v in vector.tolist()])
    return vector
