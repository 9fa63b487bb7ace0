"""Padding-free forward passes: a padded batch runs as one sequence of its real tokens (a padded STS-B
batch is ~1.3-2x its real tokens). Linear layers, norms and activations see only real tokens, each with its
own position id; attention alone re-pads (SDPA under the key mask, real positions read out again). Real
tokens' states equal the padded pass's (bit for bit on one thread, 1-2 ulp on two); pads come back as zeros.
Within `grouped_attention` (the server's passes, which mix lengths) attention runs per group of rows of
similar lengths, each padded to its own longest row only: ~1 ulp from the padded pass, 4-7% less time a pass.
The model's ``_attn_implementation`` becomes `ATTENTION` (plain SDPA for a pass without a plan), for
`UNPADDED_MODEL_TYPES` already on SDPA.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "ATTENTION", "COLUMN_POSITION_TYPES", "PAD_OFFSET_POSITION_TYPES", "SDPA_CALL_COST", "UNPADDED_MODEL_TYPES",
    "attention_groups", "batch_positions", "column_positions", "counted_positions", "enable", "forward",
    "forward_parameters", "grouped_attention", "left_padded", "pad_offset_positions",
]  # fmt: skip

ATTENTION = "tokenpool_unpadded"


# model types whose position ids default to the column number (``arange``) in a learned or sinusoidal table:
# encoders, and decoders with absolute positions (GPT-2 and kin). A left-padded batch would shift a short
# row's positions, so the runner passes `counted_positions` there. Not here: OPT (counts from the mask),
# rotary and ALiBi models (relative positions, which a shift does not change)
COLUMN_POSITION_TYPES = frozenset({
    "bert", "electra", "distilbert", "albert", "megatron-bert", "convbert", "mobilebert", "ernie", "rembert",
    "deberta", "deberta-v2",
    "gpt2", "openai-gpt", "gpt_neo", "gpt_bigcode", "biogpt", "xglm", "ctrl",
})  # fmt: skip

# model types that number a row's tokens from ``pad_token_id`` + 1 over its non-pad ids (fairseq's convention,
# transformers' ``create_position_ids_from_input_ids``): `pad_offset_positions`
PAD_OFFSET_POSITION_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text", "xmod",
    "mpnet", "longformer", "luke", "ibert", "esm", "markuplm", "layoutlmv3", "lilt",
})  # fmt: skip


def column_positions(model: Any) -> bool:
    """Whether ``model`` takes ``position_ids`` and, without them, numbers a row's tokens by column (a model of
    `COLUMN_POSITION_TYPES`; a causal one too: its real tokens never see the pads before them, only positions)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type in COLUMN_POSITION_TYPES and "position_ids" in forward_parameters(model)


def left_padded(attention_mask: np.ndarray) -> bool:
    """Whether some row has a real token but not at column 0: its columns are not its tokens' positions."""
    keep = attention_mask.astype(bool)
    return bool(keep.size) and bool((keep.any(axis=1) & ~keep[:, 0]).any())


def counted_positions(attention_mask: np.ndarray) -> np.ndarray:
    """Position ids (b×L int64) counted from each row's first real token (the pads before it get 0): a text's
    positions whatever padding its batch needs — those of the text run alone."""
    return np.maximum(np.cumsum(attention_mask, axis=1, dtype=np.int64) - 1, 0)


def batch_positions(attention_mask: np.ndarray) -> np.ndarray:
    """Position ids (b×L int64) of a model numbering from 0: the columns (what its own ``arange`` gives), or
    `counted_positions` in a `left_padded` batch — what the torch runner's padded pass runs on."""
    if left_padded(attention_mask):
        return counted_positions(attention_mask)
    return np.broadcast_to(np.arange(attention_mask.shape[1], dtype=np.int64), attention_mask.shape).copy()


def pad_offset_positions(input_ids: np.ndarray, pad_token_id: int) -> np.ndarray:
    """Position ids (b×L int64) of `PAD_OFFSET_POSITION_TYPES`: ``pad_token_id`` + the token's rank among its
    row's non-pad ids (from 1); a token whose id is the pad id gets ``pad_token_id`` itself, even a real one (a
    text's literal ``<pad>``) — transformers' numbering, which no padding side changes."""
    real = input_ids != pad_token_id
    return np.cumsum(real, axis=1, dtype=np.int64) * real + pad_token_id


# model types whose attention goes through transformers' interface
UNPADDED_MODEL_TYPES = frozenset({"bert", "electra", "distilbert", "roberta", "xlm-roberta", "camembert"})
PLAN = "tokenpool_plan"  # the keyword that carries a pass's layout to `_attention`


@functools.cache
def _register() -> None:
    """`ATTENTION` in transformers' attention and mask registries (once per process)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # padded passes get SDPA's masks, as before


def enable(model: Any) -> bool:
    """Switch ``model`` to `ATTENTION` when it can run unpadded passes; True when it did. A model already on it
    (one unpickled in another process: transformers' registries are per process) gets it registered here."""
    config = getattr(model, "config", None)
    if (
        config is None
        or getattr(config, "model_type", None) not in UNPADDED_MODEL_TYPES
        or getattr(config, "_attn_implementation", None) not in ("sdpa", ATTENTION)
        or getattr(config, "is_decoder", False)
        or "position_ids" not in forward_parameters(model)
        or transformers_major() < 5  # 4.x: BERT's attention is its own code, the switch would do nothing
    ):
        return False
    _register()
    config._attn_implementation = ATTENTION
    return True


def transformers_major() -> int:
    """The leading digits of ``transformers.__version__``, 0 without any ("dev", "v5.1": an old release, never
    a ValueError). (Here rather than in runners.py, which imports this module.)"""
    import transformers

    leading = re.match(r"\d+", transformers.__version__)
    return int(leading.group()) if leading else 0


def forward_parameters(model: Any) -> set[str]:
    """The names ``model.forward`` takes."""
    return set(inspect.signature(model.forward).parameters)


def worth_it(attention_mask: np.ndarray) -> bool:
    """An unpadded pass pays where the batch has pads (a pass without any is run as it is). A lone real token
    runs padded too: as one row its matrix products would go to BLAS's matrix-vector kernels, whose sums
    round differently from the padded pass's matrix-matrix ones."""
    return attention_mask.size > 0 and not attention_mask.all() and np.count_nonzero(attention_mask) > 1


def forward(model: Any, input_ids: np.ndarray, attention_mask: np.ndarray, options: dict[str, Any], *, logits: bool) -> Any:
    """The model's token outputs (logits for an MLM head, else hidden states) for a padded batch, computed on its
    real tokens only: b×L×W on the model's device, zeros at the pad positions."""
    import torch

    device = model.device
    keep = attention_mask.astype(bool)
    rows, length = keep.shape
    flat = np.flatnonzero(keep.reshape(-1))  # the real tokens' places in the b·L grid, in row order
    if _GROUPED.get():
        groups, gather = attention_groups(keep.sum(axis=1), flat.size)
    else:  # one group: the batch's own layout
        index = np.full(rows * length, flat.size, dtype=np.int64)  # each place's token, or the zero row after them
        index[flat] = np.arange(flat.size)
        groups, gather = [(index, keep[:, None, None, :])], flat
    plan = {
        "groups": [(torch.from_numpy(index).to(device), torch.from_numpy(keys).to(device)) for index, keys in groups],
        "gather": torch.from_numpy(gather).to(device),
        "flat": torch.from_numpy(flat).to(device),
    }
    ids = torch.from_numpy(input_ids.reshape(-1)[flat][None]).to(device)
    positions = _positions(input_ids, keep, model.config)
    positions = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.int64)[None]).to(device)
    output = model(input_ids=ids, position_ids=positions, **{PLAN: plan}, **options)
    tokens = (output.logits if logits else output[0])[0]
    out = tokens.new_zeros((rows * length, tokens.shape[-1]))
    return out.index_copy_(0, plan["flat"], tokens).view(rows, length, -1)


def _positions(input_ids: np.ndarray, keep: np.ndarray, config: Any) -> np.ndarray:
    """The real tokens' position ids as the padded pass gives them: `pad_offset_positions` (RoBERTa's kin),
    else `batch_positions` (the columns, or `counted_positions` in a `left_padded` batch)."""
    if config.model_type in PAD_OFFSET_POSITION_TYPES:
        return pad_offset_positions(input_ids, config.pad_token_id)[keep]
    return batch_positions(keep)[keep]


def _attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
    scaling: float | None = None, **kwargs: Any,
) -> tuple[Any, None]:  # fmt: skip
    """SDPA attention; for a pass with a plan, per group of padded rows: query/key/value (1×H×T×d) are put in
    their padded places (b×H×L×d, by `index_select`: 2.7× faster than indexing with the index tensor), attend
    under the key mask, and the real tokens come back in order (1×T×H×d)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = kwargs.pop(PLAN, None)
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    heads, width = query.shape[1], query.shape[-1]
    tokens = []  # (T+1)×H×d each: the real tokens, then a zero row (what a pad place reads)
    for states in (query, key, value):
        flat = states[0].transpose(0, 1)
        tokens.append(torch.cat([flat, flat.new_zeros((1, *flat.shape[1:]))]))
    outputs = []
    for index, keys in plan["groups"]:
        rows, length = keys.shape[0], keys.shape[-1]
        padded = (t.index_select(0, index).view(rows, length, heads, width).permute(0, 2, 1, 3) for t in tokens)
        output, _ = sdpa_attention_forward(module, *padded, keys, dropout, scaling, is_causal=False, **kwargs)
        outputs.append(output.reshape(rows * length, heads, width))
    joined = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return joined.index_select(0, plan["gather"])[None], None


_GROUPED: contextvars.ContextVar[bool] = contextvars.ContextVar("tokenpool_grouped_attention", default=False)
SDPA_CALL_COST = 400.0  # one attention call's fixed cost in (row × column²) units (~40 µs against ~80 ns a unit)


@contextlib.contextmanager
def grouped_attention() -> Iterator[None]:
    """Unpadded passes started in this block (this thread) attend per group of rows (`attention_groups`): for
    passes whose rows' lengths differ (the server mixes requests), not for length-sorted ones (``encode``), whose
    results stay bit for bit those of the padded pass."""
    token = _GROUPED.set(True)
    try:
        yield
    finally:
        _GROUPED.reset(token)


def attention_groups(lengths: np.ndarray, tokens: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Rows cut into groups of similar lengths for attention, the cheapest cut of the rows sorted longest first
    for rows × longest² per group plus `SDPA_CALL_COST` a group → ``(groups, gather)``: per group its index
    into the tokens (rows × its longest, flattened; ``tokens`` at a pad: the zero row) and its key mask
    (rows×1×1×longest); ``gather``: each token's place in the groups' joined outputs."""
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]  # a row without a token has nothing to attend (nor a place in the groups)
    # groups start where the length changes: a cut inside a run of equal lengths never costs less than one at the
    # run's start, so the work is (distinct lengths)², not rows² (a pass of 8,192 short inputs took 146 ms)
    sorted_lengths = lengths[order]
    runs = np.append(np.flatnonzero(np.diff(sorted_lengths, prepend=-1)), len(order))  # run starts, then the end
    squares = sorted_lengths[runs[:-1]].astype(np.float64) ** 2
    best, cut = np.zeros(len(runs)), np.zeros(len(runs), dtype=np.int64)
    for m in range(1, len(runs)):  # best[m]: the rows before run m; their last group starts at run cut[m]
        costs = best[:m] + SDPA_CALL_COST + (runs[m] - runs[:m]) * squares[:m]
        cut[m] = int(np.argmin(costs))
        best[m] = costs[cut[m]]
    bounds, m = [], len(runs) - 1
    while m > 0:
        bounds.append((int(runs[cut[m]]), int(runs[m])))
        m = int(cut[m])
    starts = np.cumsum(lengths) - lengths  # each row's first token (tokens are numbered row by row)
    groups, gather, offset = [], np.empty(tokens, dtype=np.int64), 0
    for begin, end in reversed(bounds):
        rows = order[begin:end]
        columns = np.arange(lengths[rows[0]])
        real = columns[None, :] < lengths[rows][:, None]
        index = np.where(real, starts[rows][:, None] + columns[None, :], tokens).reshape(-1)
        groups.append((index, real[:, None, None, :]))
        gather[index[real.reshape(-1)]] = offset + np.flatnonzero(real)
        offset += real.size
    return groups, gather
