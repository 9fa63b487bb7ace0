"""Packed (varlen) input: pool T×D tokens split into rows by flash-attention style offsets ``cu_seqlens``.

Inference engines (flash-attention varlen, TEI, vLLM) hand over the real tokens of a batch back to back with
offsets ``(0, n₁, n₁+n₂, …, T)``. `pool_packed` pools them without padding them first (numpy and torch fast
paths; other libraries are padded with `unpack` and go through `pool`). `pack` and `unpack` convert."""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

from . import fast
from ._backends import (
    check_has_values,
    device,
    dtype_name,
    has_abstract_values,
    namespace,
    numpy_undefined,
    sum_over_none,
    to_numpy,
)
from .masks import prepare_mask, prompt_lengths
from .pooling import as_batch, check_data, check_options, finish, overflowed_rows, pool, work_dtypes
from .strategies import parse_combination


def pool_packed(
    tokens: Any, cu_seqlens: Any, strategy: Any = "mean", *, prompt_length: Any = None,
    normalize: bool = False, truncate_dim: int | None = None, reduction: str = "max",
) -> Any:
    """Pool packed T×D ``tokens`` into B×D', row i being ``tokens[cu_seqlens[i]:cu_seqlens[i+1]]`` (the B+1
    offsets, from 0 to T): what `tokenpool.pool` gives for the same rows padded, with the same options."""
    strategies = parse_combination(strategy)
    check_options(normalize, reduction, strategies, truncate_dim=truncate_dim)
    tokens = check_data(tokens, "packed tokens")
    if tokens.ndim != 2:
        raise ValueError(f"packed tokens must be T×D (2-D), got shape {tuple(tokens.shape)}")
    offsets, lengths = checked_offsets(cu_seqlens, tokens.shape[0])
    traced = has_abstract_values(prompt_length)  # (jax.jit, torch.func.vmap: `pool` reads them, the fast plans cannot)
    skip = None if prompt_length is None or traced else prompt_lengths(prompt_length, len(offsets) - 1)
    xp = namespace(tokens)
    out_dtype, work_dtype = work_dtypes(xp, tokens)

    # Fast-path contract (as in `pool`): `fast.packed_plan` (for these tokens) or `plan.pool` (for a strategy)
    # returns None when it cannot; any None pads the rows and takes `pool` (which may use its own fast path).
    plan = None if traced else fast.packed_plan(tokens, offsets, skip, work_dtype, lengths)
    parts = [plan.pool(member, reduction) if plan is not None else None for member in strategies]
    # no fast path, or a float32 sum past its range (`overflowed_rows`, which `pool` redoes): pad, then `pool`
    if any(part is None or overflowed_rows(xp, member, part, reduction, tokens) is not None
           for member, part in zip(strategies, parts, strict=True)):  # fmt: skip
        hidden, mask = _pad(tokens, offsets, "right", 0.0, min_length=1)  # L ≥ 1 even if every row is empty
        return pool(hidden, mask, strategies, prompt_length=prompt_length, normalize=normalize,
                    truncate_dim=truncate_dim, reduction=reduction)  # fmt: skip
    return finish(xp, parts, truncate_dim=truncate_dim, normalize=normalize, dtypes=(out_dtype, work_dtype))


def check_offsets(cu_seqlens: Any, total: int) -> np.ndarray:
    """``cu_seqlens`` as host int64 offsets, after checking they split ``total`` tokens into rows."""
    return checked_offsets(cu_seqlens, total)[0]


def checked_offsets(cu_seqlens: Any, total: int) -> tuple[np.ndarray, np.ndarray]:
    """(`check_offsets`'s offsets, the rows' lengths): the lengths come with the check."""
    check_has_values(cu_seqlens, "cu_seqlens")
    if cu_seqlens is None:
        raise TypeError("cu_seqlens must be the B+1 row offsets (an array or list of ints), got None")
    try:
        offsets = to_numpy(cu_seqlens)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cu_seqlens could not be read as an array: {exc}") from None
    if offsets.ndim != 1 or offsets.size == 0:
        raise ValueError(f"cu_seqlens must be a non-empty 1-D array of offsets, got shape {offsets.shape}: "
                         f"{_shown(offsets)}")
    if offsets.dtype.kind not in "iu":  # (bool is kind "b")
        raise ValueError(f"cu_seqlens must hold integers, got dtype {dtype_name(cu_seqlens, offsets)}: "
                         f"{_shown(offsets)}")
    if offsets.dtype == np.uint64 and int(np.maximum.reduce(offsets)) > np.iinfo(np.int64).max:
        # (as int64 it would wrap to a negative offset the caller never gave)
        raise ValueError(f"cu_seqlens holds {int(np.maximum.reduce(offsets))}, past the {total} tokens: "
                         f"{_shown(offsets)}")  # fmt: skip
    offsets = offsets.astype(np.int64, copy=False)
    steps = offsets[1:] - offsets[:-1]  # (np.diff costs ~5 µs more per call: this runs on every packed pool)
    if int(offsets[0]) != 0:  # (Python ints: fewer numpy calls, each ~3 µs right after a large read)
        raise ValueError(f"cu_seqlens must start at 0, got {_shown(offsets)}")
    if steps.size and int(np.minimum.reduce(steps)) < 0:
        at = int(np.argmax(steps < 0))
        raise ValueError(f"cu_seqlens must not decrease, but {offsets[at]} is followed by {offsets[at + 1]}: "
                         f"{_shown(offsets)}")
    if int(offsets[-1]) != total:
        raise ValueError(f"cu_seqlens must end at the number of tokens {total}, got {offsets[-1]}: {_shown(offsets)}")
    return offsets, steps


def _shown(offsets: np.ndarray) -> str:
    """The first offsets, for an error message (formatted only when one is raised: it costs ~20 µs)."""
    return np.array2string(offsets.ravel()[:12], separator=", ") + (" …" if offsets.size > 12 else "")


def pack(hidden: Any, attention_mask: Any = None) -> tuple[Any, Any]:
    """B×L×D padded states and their mask → (T×D real tokens in order, int32 ``cu_seqlens`` of length B+1),
    both of ``hidden``'s library and device; L×D input with an L mask is one row."""
    hidden = check_data(hidden, "hidden states")  # (its real tokens are found on the host)
    if hidden.ndim not in (2, 3):
        raise ValueError(f"pack needs B×L×D (or L×D) hidden states, got shape {tuple(hidden.shape)}")
    if type(hidden).__module__.startswith("dask"):  # (Dask cannot index a 3-D array by a 2-D boolean mask)
        raise TypeError("pack does not take Dask arrays: pool them with pool(), or pack hidden.compute()")
    xp = namespace(hidden)
    hidden, attention_mask = as_batch(xp, hidden, attention_mask)
    keep = prepare_mask(xp, hidden, attention_mask)
    counts = np.count_nonzero(to_numpy(keep), axis=1)
    tokens = hidden[keep]
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(_index_dtype(int(counts.sum())))
    return tokens, xp.asarray(offsets, device=device(hidden))


def unpack(
    tokens: Any, cu_seqlens: Any, *, padding_side: str = "right", pad_value: float = 0.0
) -> tuple[Any, Any]:
    """T×D packed tokens → (B×L×D padded states filled with ``pad_value``, B×L boolean mask), L the longest
    row; differentiable with torch (padding is built by indexing, not by writing into the tokens)."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    tokens = check_data(tokens, "packed tokens")
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float, np.integer, np.floating)):
        raise TypeError(f"pad_value must be a number, got {pad_value!r}")
    if tokens.ndim != 2:
        raise ValueError(f"packed tokens must be T×D (2-D), got shape {tuple(tokens.shape)}")
    fill = _fill_value(namespace(tokens), tokens.dtype, pad_value)
    if fill is None:
        raise ValueError(f"pad_value {pad_value!r} is not a value of the tokens' dtype {tokens.dtype}")
    return _pad(tokens, check_offsets(cu_seqlens, tokens.shape[0]), padding_side, fill)


def _fill_value(xp: Any, dtype: Any, value: float) -> float | None:
    """``value`` as the padding of ``dtype`` takes it, or None where ``dtype`` does not hold it (a cast would cut
    0.5 to 0, wrap 300 in int8, make 0.5 or 7 True, 1e10 an inf in float16, or -inf float8_e4m3fn's -448 or nan,
    without a word). A float dtype holds anything that rounds to a finite value, and an inf or nan it stores as
    itself; an int goes into one as a double (as numpy's fill converts it; torch's takes no int past int64), so
    one past every double (10**400) is refused; a long double takes it."""
    whole = isinstance(value, (int, np.integer))  # (compared exactly: 10**400 is no float)
    exact = numpy_undefined(dtype) and "int" in dtype.name  # (ml_dtypes' int4: numpy's isdtype refuses it)
    if exact or not whole and not math.isfinite(value):
        back = _stored(xp, dtype, value)
        return value if back is not None and (back == value or math.isnan(back) and math.isnan(value)) else None
    if numpy_undefined(dtype):  # ml_dtypes' bfloat16, float8, float4: numpy's finfo refuses them too
        info, back = importlib.import_module("ml_dtypes").finfo(dtype), _stored(xp, dtype, value)
        held = back is not None and math.isfinite(back)  # (float8_e8m0fnu has no 0: stored as nan)
        return value if held and not _past_largest(float(value), float(info.max), float(info.eps)) else None
    if xp.isdtype(dtype, "bool"):
        return value if value in (0, 1) else None
    if xp.isdtype(dtype, "integral"):
        info = xp.iinfo(dtype)
        held = (whole or float(value).is_integer()) and info.min <= value <= info.max
        return value if held else None
    if not xp.isdtype(dtype, "real floating"):
        return value
    largest, eps = float(xp.finfo(dtype).max), float(xp.finfo(dtype).eps)
    if math.isinf(largest):  # a long double: numpy converts an int exactly, and it holds every double
        return value
    if whole:
        try:
            value = float(value)
        except OverflowError:
            return None
    return None if _past_largest(value, largest, eps) else value


def _past_largest(value: float, largest: float, eps: float) -> bool:
    """Whether finite ``value`` rounds past ``largest``, the largest value of a float type whose epsilon is
    ``eps`` (half a spacing past it rounds to inf, or saturates in a type without one: float4_e2m1fn's 6)."""
    return not abs(value) < largest + eps * 2.0 ** (math.frexp(largest)[1] - 2)


def _stored(xp: Any, dtype: Any, value: float) -> float | None:
    """``value`` stored in a 0-d array of ``dtype`` and read back as a float; None where ``xp`` refuses it."""
    try:
        with np.errstate(all="ignore"):  # (numpy stores inf in an int8 as 0, with a warning only)
            return float(xp.full((), value, dtype=dtype))
    except (OverflowError, TypeError, ValueError, RuntimeError):
        return None


def _pad(
    tokens: Any, offsets: np.ndarray, side: str, pad_value: float, min_length: int = 0
) -> tuple[Any, Any]:
    xp = namespace(tokens)
    total, width = tokens.shape
    lengths = np.diff(offsets)
    longest = max(int(lengths.max(initial=0)), min_length)
    column = np.arange(longest)[None, :]
    pad = (longest - lengths)[:, None] if side == "left" else np.zeros((len(lengths), 1), dtype=np.int64)
    mask = (column >= pad) & (column < pad + lengths[:, None])
    shape, where = (len(lengths), longest, width), device(tokens)
    fill = xp.full((), pad_value, dtype=tokens.dtype, device=where)
    keep = xp.asarray(mask, device=where)
    # padding takes token 0, then is replaced by ``fill`` (selected, not concatenated to the tokens: torch.cat
    # refuses float16 tokens under a bfloat16 autocast); with no token at all, a sum over none keeps autograd's
    # graph (and forward-mode tangents) attached to the tokens
    if total == 0:
        taken = sum_over_none(xp, tokens, 0)
    else:
        index = np.where(mask, offsets[:-1, None] + column - pad, 0).reshape(-1).astype(_index_dtype(total))
        taken = xp.reshape(xp.take(tokens, xp.asarray(index, device=where), axis=0), shape)
    return xp.where(keep[..., None], taken, fill), keep


def _index_dtype(count: int) -> np.dtype:
    """int32 for indexes of ``count`` tokens below 2^31 (a device without 64-bit integers takes them), else int64."""
    return np.dtype(np.int32 if count < 2**31 else np.int64)


__all__ = ["check_offsets", "pack", "pool_packed", "unpack"]
