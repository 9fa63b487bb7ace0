"""Attention masks: validation, conversion, prompt exclusion and the order of real tokens in each row."""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

from ..errors import is_int
from ._backends import (
    as_array_like,
    check_has_values,
    device,
    dtype_name,
    has_abstract_values,
    in_torch_transform,
    is_array,
    is_torch_tensor,
    namespace,
    readable_now,
    to_device,
    to_numpy,
    torch_compiling,
)


def prepare_mask(xp: Any, hidden: Any, attention_mask: Any) -> Any:
    """The mask as a boolean B×L array of ``hidden``'s library and device (all True when ``None``); ValueError
    when its shape is not ``hidden.shape[:-1]`` or a value is not 0/1/True/False."""
    rows, length = hidden.shape[0], hidden.shape[1]
    if attention_mask is None:
        return xp.ones((rows, length), dtype=xp.bool, device=device(hidden))
    mask = as_array_like(attention_mask, xp, what="attention_mask")
    if _torch_mask_check is None and is_torch_tensor(mask) and readable_now(mask):
        register_torch_mask_check()
    if tuple(mask.shape) != (rows, length):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but hidden states have shape "
                         f"{tuple(hidden.shape)}; the mask must have shape {(rows, length)}")
    on_host = isinstance(hidden, np.ndarray)
    if not (isinstance(mask, np.ndarray) and not on_host) and mask.dtype == xp.bool:  # (first: under
        return _on_device_of(xp, mask, hidden)  # torch.compile a boolean mask must not reach `.numpy()`)
    host = host_view(mask)
    if host is not None:  # numpy (also a list's, another library's), or a CPU tensor seen through numpy: 3 passes
        if host.dtype.kind not in "biuf":  # instead of 5 library calls
            raise ValueError(f"attention_mask must hold 0/1 or booleans, got dtype {mask.dtype}")
        _check_binary(host)
        keep = host if host.dtype.kind == "b" else host != 0
        return _on_device_of(xp, keep, hidden)
    if not (xp.isdtype(mask.dtype, "integral") or xp.isdtype(mask.dtype, "real floating")):
        raise ValueError(f"attention_mask must hold 0/1 or booleans, got dtype {mask.dtype}")
    compiling = torch_compiling(mask)
    if compiling and _torch_mask_check is not None:
        return _on_device_of(xp, _torch_mask_check(mask), hidden)  # (torch.compile: checked as the graph runs)
    if compiling or not has_abstract_values(mask):  # (compiled before the op's registration: a graph break)
        _check_values(xp, mask)
    return _on_device_of(xp, mask == 1, hidden)


_torch_mask_check: Any = None  # torch's op ``tokenpool::binary_mask``, once registered
_REGISTERING = threading.Lock()  # (two threads' first torch masks: one registration)


def register_torch_mask_check() -> None:
    """Register torch's custom op ``tokenpool::binary_mask`` (`_check_values`, then ``mask == 1``), where torch is
    imported: a torch.compile graph (fullgraph too) runs it on the real values, where Dynamo can trace no check
    that reads them, nor this registration (done by `tokenpool.torch`'s import and by any eager torch mask; a
    graph traced before either checks them after a graph break, and fullgraph fails, as before the op)."""
    global _torch_mask_check
    torch = sys.modules.get("torch")
    if _torch_mask_check is not None or torch is None or not hasattr(torch.library, "custom_op"):  # (torch < 2.4)
        return
    with _REGISTERING:
        if _torch_mask_check is not None:
            return
        try:
            check = torch.library.custom_op("tokenpool::binary_mask", _binary_mask, mutates_args=(),
                                            schema="(Tensor mask) -> Tensor")  # fmt: skip
            check.register_fake(lambda mask: torch.empty_like(mask, dtype=torch.bool))
        except RuntimeError:  # an earlier copy of this module (importlib.reload) on a torch that refuses redefining
            check = torch.ops.tokenpool.binary_mask
        _torch_mask_check = check


def _binary_mask(mask: Any) -> Any:
    """`register_torch_mask_check`'s op on real values: ValueError naming a value other than 0/1, else the
    boolean mask."""
    _check_values(namespace(mask), mask)
    return mask == 1


def _check_values(xp: Any, mask: Any) -> None:
    """ValueError naming the values of an integer or float ``mask`` that are not 0 or 1: one reduction where the
    mask lies (on CUDA one synchronisation), its values copied to the host only when one is bad."""
    if not bool(xp.all(xp.logical_or(mask == 0, mask == 1))):
        _check_binary(to_numpy(mask))  # raises, naming the values


def _on_device_of(xp: Any, keep: Any, hidden: Any) -> Any:
    """The boolean mask ``keep`` on ``hidden``'s device, moved only as booleans (checked where it lay): a device
    without 64-bit types (array-api-strict's "no_x64") takes them from an int64 or float64 mask too."""
    if isinstance(keep, np.ndarray) or device(keep) is None:  # (a JAX tracer has no device: asarray places it)
        return keep if isinstance(hidden, np.ndarray) else xp.asarray(keep, device=device(hidden))
    return keep if device(keep) == device(hidden) else to_device(keep, device(hidden))  # (JAX: asarray can't)


def host_view(array: Any) -> np.ndarray | None:
    """A zero-copy numpy view of a numpy array (ml_dtypes' as float32) or of an untracked CPU torch tensor, else
    None (other libraries and devices keep their own kernels, and torch.func's wrapped tensors have no memory)."""
    if isinstance(array, np.ndarray):
        return to_numpy(array)
    if is_torch_tensor(array) and array.is_cpu and not array.requires_grad and readable_now(array):
        try:
            return array.numpy()
        except (TypeError, RuntimeError):  # bfloat16 and other dtypes numpy lacks, a lazily negated tensor
            return None
    return None


def _check_binary(host: np.ndarray) -> None:
    """ValueError naming the values of an integer or float mask that are not 0 or 1."""
    if host.size == 0:
        return
    if np.issubdtype(host.dtype, np.integer):
        valid = host.min() >= 0 and host.max() <= 1
    else:
        valid = bool(np.logical_or(host == 0, host == 1).all())
    if not valid:
        bad = np.unique(host[(host != 0) & (host != 1)])[:5]
        raise ValueError(f"attention_mask must hold only 0 and 1 (or True/False), found {bad.tolist()}")


def exclude_prompt(xp: Any, keep: Any, prompt_length: Any) -> Any:
    """Drop the first ``prompt_length`` real tokens of each row (an int, or one per row) from ``keep``."""
    if prompt_length is None:
        return keep
    if is_int(prompt_length):
        # a plain int stays a scalar comparison, with no host round trip and no read of L: traceable under
        # compile/jit/torch.export with a dynamic length; past int32 (the ranks' type, ranks <= L) it leaves out
        # as much as int32's maximum, that is every token
        count = min(_non_negative(int(prompt_length)), _RANK_MAX)
        return keep if count == 0 else xp.logical_and(keep, token_ranks(xp, keep) > count)
    rows, length = keep.shape[0], int(keep.shape[1])
    if has_abstract_values(prompt_length):  # (jax.jit, torch.compile, torch.func.vmap): used as it is, values
        _check_lengths_array(prompt_length, rows)  # unchecked (as a mask's)
        limit = _capped_column(xp, prompt_length, length)
    else:
        counts = np.minimum(prompt_lengths(prompt_length, rows), length)  # (checked on the host)
        if is_torch_tensor(prompt_length) and in_torch_transform():
            # torch.jit.trace: the host's counts would become constants of the graph; the tensor flows through it
            limit = _capped_column(xp, xp.asarray(prompt_length, device=device(keep)), length)
        elif not np.any(counts):
            return keep
        else:
            limit = xp.asarray(counts.reshape(rows, 1).astype(np.int32), device=device(keep))  # (<= L, as ranks)
    ranks = token_ranks(xp, keep)
    return xp.logical_and(keep, ranks > xp.astype(limit, ranks.dtype))


def _capped_column(xp: Any, counts: Any, length: int) -> Any:
    """Per-row ``counts`` as a B×1 column, each at most ``length`` (by ``where``: ``xp.minimum(counts, length)``
    makes array-api-compat call torch.result_type, which torch.compile cannot trace)."""
    column = xp.reshape(counts, (-1, 1))
    if xp.iinfo(column.dtype).max <= length:  # (uint8 counts need no cap, and full_like could not hold L)
        return column
    return xp.where(column > length, xp.full_like(column, length), column)


_RANK_MAX = int(np.iinfo(np.int32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)  # the cap of a prompt_length count (a larger one leaves out every token)


def token_ranks(xp: Any, keep: Any) -> Any:
    """For each position, how many kept tokens its row has up to and including it (1..n on kept tokens)."""
    return xp.cumulative_sum(xp.astype(keep, xp.int32), axis=1, dtype=xp.int32)  # (the standard's default: int64)


def prompt_lengths(prompt_length: Any, rows: int) -> np.ndarray:
    if is_int(prompt_length):
        return np.full(rows, _non_negative(int(prompt_length)), dtype=np.int64)
    if not is_array(prompt_length) and not isinstance(prompt_length, (list, tuple)):
        raise TypeError(f"prompt_length must be an int or one int per row, got {prompt_length!r}")
    check_has_values(prompt_length, "prompt_length")
    if isinstance(prompt_length, (list, tuple)):
        listed = _listed_counts(prompt_length)
        if listed is not None:
            _check_lengths_array(listed, rows)
            return listed
    counts = to_numpy(prompt_length)
    _check_lengths_array(counts, rows, prompt_length)  # before any int(): a 0-d 1.5 must not become 1
    if counts.ndim == 0:
        return np.full(rows, _non_negative(int(counts)), dtype=np.int64)
    _check_no_negative(counts[counts < 0][:5].tolist())
    # a uint64 value above int64's range would wrap to a negative count (pooling the prompt): cap it (leaving
    # out more tokens than a row has leaves out the whole row either way; only uint64 can exceed int64)
    if counts.dtype == np.uint64:
        counts = np.minimum(counts, np.uint64(_INT64_MAX))
    return counts.astype(np.int64)


def _listed_counts(values: list | tuple) -> np.ndarray | None:
    """A list of Python (or numpy) ints as int64 counts, read exactly: numpy makes ints past int64 objects (each
    is capped, as a single count is); a bool is refused (as a single one is: numpy would read True as 1). None
    for a list of anything else (arrays, tensors), which numpy reads; ``[]`` is no counts (numpy: float64)."""
    bools = [value for value in values if isinstance(value, (bool, np.bool_))]
    if bools:
        raise TypeError(f"prompt_length must hold integers, got {bools[0]!r}")
    if not all(map(is_int, values)):
        return None
    counts = [int(value) for value in values]
    _check_no_negative([count for count in counts if count < 0][:5])
    return np.array([min(count, _INT64_MAX) for count in counts], dtype=np.int64)


def _check_no_negative(negatives: list[int]) -> None:
    """ValueError naming the (first few) negative counts of a per-row ``prompt_length``, if any."""
    if negatives:
        raise ValueError(f"prompt_length must be >= 0, got {negatives}")


def _check_lengths_array(counts: np.ndarray, rows: int, given: Any = None) -> None:
    """TypeError / ValueError unless the array ``counts`` (read from ``given``) holds integers, one per row (or one
    for all: 0-d)."""
    if not namespace(counts).isdtype(counts.dtype, "integral"):
        raise TypeError(f"prompt_length must hold integers, got dtype {dtype_name(given, counts)}")
    if counts.ndim and tuple(counts.shape) != (rows,):
        raise ValueError(f"prompt_length has shape {tuple(counts.shape)}; it must be one value per row, shape ({rows},)")


def _non_negative(count: int) -> int:
    """``count`` checked >= 0 and capped at int64's maximum (a larger count leaves out every token anyway)."""
    if count < 0:
        raise ValueError(f"prompt_length must be >= 0, got {count}")
    return min(count, _INT64_MAX)

