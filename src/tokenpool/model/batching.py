"""Batching rules shared by the runners: a token budget per forward pass, splitting a batch that ran out
of memory (a GPU's, or the host's) into halves instead of failing the job, running passes two at a time on a
runner that can, and the check that a batch's pooled outputs are finite."""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import ModelOutputError, check_int

__all__ = [
    "budget_groups", "longest_first_batches", "check_max_batch_tokens",
    "is_out_of_memory", "forward_splitting", "run_passes", "check_finite",
]  # fmt: skip

logger = logging.getLogger(__name__)

# padded tokens (rows × width) of a pass small enough to run beside another one (`run_passes`)
SMALL_PASS_TOKENS = 2048
_OOM_MESSAGES = ("out of memory", "failed to allocate memory", "bad_alloc", "bad allocation", "outofmemory")


def check_max_batch_tokens(max_batch_tokens: Any) -> int | None:
    return check_int(max_batch_tokens, "max_batch_tokens", optional=True)


def budget_groups(lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None) -> Iterator[slice]:
    """Consecutive groups of rows sorted longest first: at most ``batch_size`` rows and ``max_batch_tokens``
    padded tokens (rows × the first, longest, row); a row longer than the budget forms a group alone."""
    start, count = 0, len(lengths)
    while start < count:
        size = batch_size
        if max_batch_tokens is not None:
            size = min(size, max(1, max_batch_tokens // max(1, int(lengths[start]))))
        yield slice(start, min(count, start + size))
        start += size


def longest_first_batches(lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None) -> Iterator[np.ndarray]:
    """Row numbers of each batch of rows with these token ``lengths``: sorted longest first (stable), then
    grouped by `budget_groups`; texts and long-document windows are batched by this one rule."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    for group in budget_groups(lengths[order], batch_size, max_batch_tokens):
        yield order[group]


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, a RuntimeError "... out of memory", onnxruntime's allocation failures,
    MemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    message = str(exc).lower()
    return any(text in message for text in _OOM_MESSAGES)


def _trim(input_ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the trailing columns no row uses (right padding). Leading ones stay: a token's column is its
    position id in BERT-like models, so dropping a left-padded batch's leading pads would move its tokens and
    change their vectors."""
    used = np.flatnonzero(mask.any(axis=0))
    if not used.size or used[-1] == mask.shape[1] - 1:
        return input_ids, mask
    return input_ids[:, : used[-1] + 1], mask[:, : used[-1] + 1]


def forward_splitting(
    forward: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]], indices: np.ndarray, input_ids: np.ndarray,
    mask: np.ndarray,
) -> Iterator[tuple[np.ndarray, Any, Any]]:  # fmt: skip
    """(indices, token outputs, mask) for the batch, from one forward pass, or — when that runs out of memory —
    from its two halves (recursively, down to single rows; a single row that does not fit re-raises)."""
    try:
        hidden, out_mask = forward(input_ids, mask)
    except Exception as exc:
        if not is_out_of_memory(exc) or len(indices) < 2:
            raise
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():  # release cached memory (untested here: no GPU)
            torch.cuda.empty_cache()
        half = len(indices) // 2
        logger.warning("out of memory on a batch of %d×%d tokens; splitting it into %d + %d rows",
                       *input_ids.shape, half, len(indices) - half)  # fmt: skip
        for part in (slice(0, half), slice(half, None)):
            ids, sub_mask = _trim(input_ids[part], mask[part])
            yield from forward_splitting(forward, indices[part], ids, sub_mask)
        return
    yield indices, hidden, out_mask


def run_passes(runner: Any, batches: Iterable[Any]) -> Iterator[tuple[np.ndarray, Any, Any]]:
    """`forward_splitting` over each padded batch, in order. On a runner with ``parallel_passes`` > 1, small
    passes (at most `SMALL_PASS_TOKENS` padded tokens) run that many at a time through ``pass_forward``
    (one-thread passes side by side leave no thread idle: 1.10-1.24x); larger passes and a lone batch run
    alone."""

    def alone(batch: Any, forward: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]) -> Iterator[Any]:
        return forward_splitting(forward, batch.indices, batch.input_ids, batch.attention_mask)

    passes = int(getattr(runner, "parallel_passes", 1))
    batches = iter(batches)
    first = [batch for _, batch in zip(range(2), batches, strict=False)]
    if passes < 2 or len(first) < 2:
        for batch in itertools.chain(first, batches):
            yield from alone(batch, runner.forward)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(passes, thread_name_prefix="tokenpool-pass") as pool:
        running: deque[Any] = deque()
        for batch in itertools.chain(first, batches):
            if batch.input_ids.size > SMALL_PASS_TOKENS:
                while running:
                    yield from running.popleft().result()
                yield from alone(batch, runner.forward)
                continue
            if len(running) == passes:
                yield from running.popleft().result()
            # (in the caller's context: its `unpadded.grouped_attention`, say)
            task = functools.partial(list, alone(batch, runner.pass_forward))
            running.append(pool.submit(contextvars.copy_context().run, task))
        while running:
            yield from running.popleft().result()


def check_finite(vectors: np.ndarray, indices: Any, dtype: Any = None) -> np.ndarray:
    """``vectors`` when every value is finite; else `ModelOutputError` naming the first text (by its position in
    the caller's input, ``indices[row]``) whose vector has NaN or inf."""
    if np.isfinite(vectors).all():
        return vectors
    row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=tuple(range(1, vectors.ndim))))[0])
    name = str(dtype).removeprefix("torch.")
    hint = " (a float16 overflow? try dtype='bfloat16' or 'float32')" if name == "float16" else ""
    index = int(np.asarray(indices)[row])
    raise ModelOutputError(f"text {index}", index=index, hint=hint)
