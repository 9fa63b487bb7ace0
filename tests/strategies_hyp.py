"""Hypothesis strategies for pooling inputs: shapes, masks with any layout, prompt lengths."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

ALL_STRATEGIES = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "splade"]
COMBINABLE = [name for name in ALL_STRATEGIES if name != "splade"]  # splade pools alone (it reads MLM logits)


def strategy_lists(max_size: int = 3) -> st.SearchStrategy[list[str]]:
    """Strategies one pooled vector may concatenate: 1..max_size combinable ones, or splade alone."""
    return st.one_of(st.just(["splade"]), st.lists(st.sampled_from(COMBINABLE), min_size=1, max_size=max_size))


@st.composite
def masks(draw, rows: int, length: int, layout: str | None = None) -> np.ndarray:
    """A B×L 0/1 mask: right padding, left padding, or arbitrary holes; empty rows allowed."""
    layout = layout or draw(st.sampled_from(["right", "left", "holes"]))
    mask = np.zeros((rows, length), dtype=np.int64)
    for b in range(rows):
        if layout == "holes":
            mask[b] = draw(st.lists(st.integers(0, 1), min_size=length, max_size=length))
        else:
            n = draw(st.integers(0, length))
            if layout == "right":
                mask[b, :n] = 1
            else:
                mask[b, length - n :] = 1
    return mask


@st.composite
def pooling_inputs(draw, max_rows: int = 4, max_length: int = 9, max_dim: int = 5):
    """(hidden float64 B×L×D, mask B×L, options dict) with every option drawn."""
    rows = draw(st.integers(1, max_rows))
    length = draw(st.integers(1, max_length))
    dim = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1.0, 3.0]))
    hidden = np.random.default_rng(seed).standard_normal((rows, length, dim)) * scale
    mask = draw(masks(rows, length))
    chosen = draw(strategy_lists())
    prompt = draw(
        st.one_of(
            st.none(),
            st.integers(0, 3),
            st.lists(st.integers(0, 3), min_size=rows, max_size=rows),
        )
    )
    width = dim * len(chosen)
    splade = chosen == ["splade"]  # (splade alone takes a reduction and no Matryoshka cut: ValueError)
    options = {
        "strategy": chosen if len(chosen) > 1 or draw(st.booleans()) else chosen[0],
        "prompt_length": prompt,
        "normalize": draw(st.booleans()),
        "truncate_dim": None if splade else draw(st.one_of(st.none(), st.integers(1, width))),
        "reduction": draw(st.sampled_from(["max", "sum"])) if splade else "max",
    }
    return hidden, mask, options
