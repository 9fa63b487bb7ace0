"""What the evaluations share: one forward pass over texts, pooled several ways (STS pairs, retrieval queries,
truncated documents and naive chunks all go through `encode_every_way`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Label", "encode_every_way"]

Label = str | None  # a pooling strategy ("mean", "mean+max") or None: the encoder's own pooling


def encode_every_way(
    encoder: Any,
    texts: Sequence[str],
    labels: Sequence[Label],
    *,
    batch_size: int = 64,
    prompt: str | None = None,
    prompt_name: str | None = None,
    progress: bool = False,
    desc: str = "encoding",
    max_batch_tokens: int | None = None,
) -> dict[Label, np.ndarray]:
    """Run the model once over ``texts`` and pool every batch with each label → {label: float32 (N, D)}.
    The label None pools as the encoder itself does (its normalisation and ``truncate_dim`` included); ``a+b``
    concatenates. Batches as `Encoder.iter_token_batches` makes them (at most ``batch_size`` texts and, with
    ``max_batch_tokens``, at most that many padded tokens); an encoder with ``long_documents="windows"`` is an
    `OptionError` (its one-window token outputs would be silently truncated)."""
    mode = getattr(encoder, "long_documents", "truncate")
    if mode != "truncate":
        from ..errors import OptionError

        raise OptionError(
            f"evaluation pools one forward pass per text several ways, so it needs an encoder with "
            f"long_documents='truncate' (got {mode!r}); retrieval reads long documents through its modes "
            f"(windows, late-128, ...)"
        )
    vectors: dict[Label, np.ndarray] = {}
    budget = {} if max_batch_tokens is None else {"max_batch_tokens": max_batch_tokens}
    bar = _bar(len(texts), desc) if progress else None
    try:
        for batch in encoder.iter_token_batches(
            texts, batch_size=batch_size, prompt=prompt, prompt_name=prompt_name, **budget
        ):
            rows = np.asarray(batch.indices)
            for label in labels:
                strategy = None if label is None else label.split("+") if "+" in label else label
                pooled = np.asarray(encoder.pool_batch(batch, strategy))
                if label not in vectors:
                    vectors[label] = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
                vectors[label][rows] = pooled
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    return vectors


def _bar(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=" texts", desc=desc, file=sys.stderr, dynamic_ncols=True)
