"""`pool`: validate the inputs once, reduce with each strategy, then concatenate, truncate and normalise."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelOutputError, is_int, shown_value
from . import fast
from ._backends import (
    as_array_like,
    check_has_values,
    copy_of,
    default_float,
    device,
    holds_float64,
    host_values,
    is_array,
    is_jax_tracer,
    is_torch_tensor,
    namespace,
    numpy_undefined,
    readable_now,
    sum_over_none,
    to_numpy,
    without_empty_chunks,
)
from .masks import exclude_prompt, prepare_mask
from .reductions import reduce_rows
from .strategies import SPECS, SUM_STATISTICS, Pooling, parse_combination

SPLADE_REDUCTIONS = ("max", "sum")


def pool(
    hidden: Any, attention_mask: Any = None, strategy: Any = "mean", *, prompt_length: Any = None,
    normalize: bool = False, truncate_dim: int | None = None, reduction: str = "max",
) -> Any:
    """Pool token vectors into one vector per row, over the real tokens only.

    hidden: B×L×D (or L×D for one sequence) from numpy, torch, JAX or any Array API library; integer or
        bool input is promoted to the library's default float (as numpy's mean does; the seed's
        ``Pooling.CLS(array)`` alone keeps its dtype: `first_tokens`).
    attention_mask: B×L (or L) of 0/1 or booleans, from any library or a list; None means all tokens are real.
    strategy: a `Pooling` member, its value or an alias (case-insensitive), or a list → concatenated in order.
    prompt_length: leave out the first n real tokens of every row (an int) or of each row (one int per row).
    truncate_dim: keep the first k dimensions of the result (Matryoshka), before ``normalize`` L2-normalises
        (not for SPLADE: ValueError).
    reduction: for SPLADE, "max" (default) or "sum" over tokens (another strategy refuses "sum").

    Returns an array of the input's library, device and dtype: B×D' (or D' for L×D input). A row with no real
    token gives a zero vector for every strategy. Half-precision input is accumulated in float32.
    """
    strategies = parse_combination(strategy)
    check_options(normalize, reduction, strategies, truncate_dim=truncate_dim)
    hidden = check_hidden(hidden)
    xp, single = namespace(hidden), hidden.ndim == 2
    hidden, attention_mask = as_batch(xp, hidden, attention_mask)
    out_dtype, work_dtype = work_dtypes(xp, hidden)
    # Fast-path contract (docs/architecture.md): a plan, or a plan's `pool` for one strategy, returns None
    # where it cannot, and None means the generic path (`reduce_rows`), whose rows a fast path must return.
    # `host_plan` reads a plain host mask in place; any other is checked and made boolean (`prepare_mask`).
    plan = fast.host_plan(hidden, attention_mask, work_dtype) if prompt_length is None else None
    masks: tuple[Any, Any] | None = None  # (real, keep), once made
    if plan is None:
        masks = _masks(xp, hidden, attention_mask, prompt_length)
        plan = fast.make_plan(hidden, masks[1], work_dtype, real=masks[0])
    work = None
    parts = []
    for member in strategies:
        result = plan.pool(member, reduction) if plan is not None else None
        if result is None:
            if work is None:
                work = hidden if hidden.dtype == work_dtype else xp.astype(hidden, work_dtype)
            real, keep = masks = masks or _masks(xp, hidden, attention_mask, prompt_length)
            result = reduce_rows(xp, member, work, keep, reduction, real=real)
        overflowed = overflowed_rows(xp, member, result, reduction, hidden)
        if overflowed is not None:
            real, keep = masks = masks or _masks(xp, hidden, attention_mask, prompt_length)
            result = _refit_rows(xp, member, result, overflowed, (hidden, keep, real), reduction)
        parts.append(result)
    pooled = finish(xp, parts, truncate_dim=truncate_dim, normalize=normalize, dtypes=(out_dtype, work_dtype))
    return pooled[0, ...] if single else pooled


def check_hidden(hidden: Any) -> Any:
    """`check_data`'s hidden states, which must be L×D or B×L×D (NotImplementedError naming the shape, as the
    seed)."""
    hidden = check_data(hidden, "hidden states")
    if hidden.ndim not in (2, 3):
        raise NotImplementedError(
            f"pooling needs L×D or B×L×D hidden states, got {hidden.ndim}-D input of shape {tuple(hidden.shape)}"
        )
    return hidden


def first_tokens(hidden: Any) -> Any:
    """The seed's ``Pooling.CLS(array)``: ``array[0]`` (L×D) / ``array[:, 0]`` (B×L×D) as a new array of the
    input's dtype, integers and bools included (no mask: `pool` would promote them); no token gives zeros."""
    hidden = check_hidden(hidden)
    xp = namespace(hidden)
    if hidden.shape[-2] == 0:  # a sum over no token: zeros that autograd keeps in its graph, as `pool`'s
        return sum_over_none(xp, hidden, -2)
    return copy_of(xp, hidden[..., 0, :])


def overflowed_rows(xp: Any, member: Pooling, result: Any, reduction: str, source: Any) -> np.ndarray | None:
    """The rows of a float32 sum-based B×D ``result`` that hold NaN or inf, or None when there are none (or
    `may_overflow` says no check is made). A float32 sum of values near 3.4e38 overflows where their mean does
    not; one finite check, on the result only, so the fast paths keep their speed."""
    if not may_overflow(xp, SPECS[member].running.under(reduction).statistic, result, source):
        return None
    if isinstance(result, np.ndarray) or (is_torch_tensor(result) and result.is_cpu):
        finite = np.isfinite(to_numpy(result))  # (a view: torch's own two calls cost ~3x more)
        return None if finite.all() else np.flatnonzero(~finite.all(axis=-1))
    finite = to_numpy(xp.all(xp.isfinite(result), axis=-1))  # (one device→host copy of B flags)
    return None if finite.all() else np.flatnonzero(~finite)


def may_overflow(xp: Any, statistic: str, total: Any, source: Any) -> bool:
    """Whether ``total``, a `Running` ``statistic`` of ``source`` tokens, is checked for NaN or inf to be redone
    in float64: a float32 sum whose values can be read now (`readable_now`) in a library with float64. Not
    for float16 ``source`` tokens: their float32 sums cannot overflow (no device sync for half-precision models)."""
    if total.dtype != xp.float32 or statistic not in SUM_STATISTICS:
        return False
    if hasattr(xp, "float16") and source.dtype == xp.float16:  # (Dask's has none; numpy's float64 == None)
        return False
    return readable_now(total) and holds_float64(xp, total)


def _refit_rows(xp: Any, member: Pooling, result: Any, rows: np.ndarray, inputs: tuple, reduction: str) -> Any:
    """``result`` with its non-finite values in ``rows`` recomputed in float64 by `reduce_rows` (from the B×L×D
    hidden states and the B×L ``keep`` and ``real`` masks of ``inputs``), then cast back: finite wherever the
    true value is (NaN or inf among the pooled tokens stays). Functional, so autograd follows it."""
    at = xp.asarray(rows, device=device(result))
    hidden, keep, real = (xp.take(array, at, axis=0) for array in inputs)
    redone = reduce_rows(xp, member, xp.astype(hidden, xp.float64), keep, reduction, real=real)
    where = np.arange(result.shape[0])
    where[rows] = result.shape[0] + np.arange(len(rows))  # row i of the merged rows: result's, or redone's
    with np.errstate(over="ignore"):  # (a mean/√n past float32's range is inf: the true answer, as unredone)
        redone = xp.astype(redone, result.dtype)
    merged = xp.take(xp.concat([result, redone]), xp.asarray(where, device=device(result)), axis=0)
    return xp.where(xp.isfinite(result), result, merged)


def _masks(xp: Any, hidden: Any, attention_mask: Any, prompt_length: Any) -> tuple[Any, Any]:
    """(the checked boolean mask, the same without the prompt tokens)."""
    real = prepare_mask(xp, hidden, attention_mask)
    return real, exclude_prompt(xp, real, prompt_length)


def finish(
    xp: Any, parts: list[Any], *, truncate_dim: Any, normalize: bool, dtypes: tuple[Any, Any],
    finite: bool = False,
) -> Any:
    """THE finishing step of every vector tokenpool returns: concatenate the per-strategy B×D ``parts``, keep
    the first ``truncate_dim`` dimensions (Matryoshka), then L2-normalise in the accumulation dtype, then cast
    to the output dtype; with ``finite`` a row holding NaN or inf raises `ModelOutputError` naming it."""
    out_dtype, work_dtype = dtypes
    rows = parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)
    if truncate_dim is not None:
        rows = rows[:, : check_truncate_dim(truncate_dim, rows.shape[-1])]
    if normalize:
        rows = _l2_normalise(xp, xp.astype(rows, work_dtype) if rows.dtype != work_dtype else rows)
    if finite:
        _check_finite_rows(xp, rows)
    return rows if rows.dtype == out_dtype else xp.astype(rows, out_dtype)


def check_options(
    normalize: Any, reduction: Any, members: tuple[Pooling, ...] = (), *, truncate_dim: Any = None
) -> None:
    """``normalize`` a real bool (a truthy string such as "no" must not normalise) and a known ``reduction``;
    with the strategies ``members``, the options they take: a ``reduction`` other than the default only for a
    reducible one (SPLADE), and no ``truncate_dim`` for one over the vocabulary (its first ids are no
    Matryoshka prefix)."""
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False, got {shown_value(normalize, short=True)}")
    if not isinstance(reduction, str) or reduction not in SPLADE_REDUCTIONS:
        raise ValueError(f"reduction must be one of {SPLADE_REDUCTIONS}, got {shown_value(reduction, short=True)}")
    if reduction != "max" and not _reducible(members):
        raise ValueError(f"reduction={reduction!r} is SPLADE's option; strategy {[m.value for m in members]} "
                         "does not take it")
    if truncate_dim is not None and any(SPECS[member].width == "vocab" for member in members):
        check_truncate_dim(truncate_dim)  # (a TypeError for "abc" comes first, as for any strategy)
        raise ValueError(f"truncate_dim={truncate_dim!r} keeps the first dimensions of a dense vector; "
                         f"{[m.value for m in members]} "
                         "pools over the vocabulary (its first dimensions are the first token ids): leave "
                         "truncate_dim out for splade")


def applicable_reduction(reduction: str, members: tuple[Pooling, ...]) -> str:
    """``reduction`` when one of ``members`` takes it (SPLADE), else the default: a SPLADE folder's own
    reduction must not reach a dense pooling asked of the same folder (`check_options` refuses it there)."""
    return reduction if _reducible(members) else "max"


def _reducible(members: tuple[Pooling, ...]) -> bool:
    """Whether one of ``members`` takes a ``reduction`` (SPLADE): the one rule of `check_options` and
    `applicable_reduction`."""
    return any(SPECS[member].running.reducible for member in members)


def check_data(array: Any, what: str) -> Any:
    """``array`` (numpy's for a nested list; a Dask array without empty chunks) after checking it: TypeError
    for one that holds no real numbers (complex, object, strings, bytes, datetimes, void), ValueError for a
    tensor on torch's "meta" device and other input without values to read (`check_has_values`)."""
    check_has_values(array, what)
    if not is_array(array):
        given = array
        array = host_values(given, what)
        if array.dtype == object or array.dtype.kind in "USVMm":
            raise TypeError(f"{what} must be a numeric array, got {type(given).__name__} "
                            f"of dtype {array.dtype}")
    dtype = getattr(array, "dtype", None)
    kind = dtype.kind if isinstance(dtype, np.dtype) else None  # (ml_dtypes' bfloat16 is kind "V" without fields)
    if isinstance(kind, str) and (kind in "OUSMm" or (kind == "V" and getattr(dtype, "fields", None) is not None)):
        raise TypeError(f"{what} must be a numeric array, got dtype {array.dtype}")
    complex_ = kind == "c" if kind is not None else getattr(dtype, "is_complex", None)  # (numpy's, torch's)
    if complex_ or (complex_ is None and namespace(array).isdtype(dtype, "complex floating")):
        raise TypeError(f"{what} must be real, got dtype {dtype}")
    return without_empty_chunks(array, what)


def finish_vectors(
    vectors: Any, *, truncate_dim: Any = None, normalize: bool = False, finite: bool = False, copy: bool = True
) -> Any:
    """Finish B×D (or D) vectors of any library exactly as `pool` finishes its own (`finish`: the
    Matryoshka cut to ``truncate_dim``, then L2 normalisation): the one place for both, for every caller.

    Half precision is normalised in float32 and returned in its own dtype, integers promote to the library's
    default float. A zero row stays zero (`_l2_normalise`). A row holding NaN or inf comes out non-finite (as
    `pool` returns the input's NaN), or with ``finite=True`` raises `tokenpool.errors.ModelOutputError` with
    ``index`` = the first such row (callers re-label it with ``err.at``); the check reads the finished rows (a
    NaN in dimensions the cut drops is not an error) and is skipped inside ``jax.jit``. The result is always a
    new array, never ``vectors`` or a view of it (with nothing to do: a copy), unless ``copy=False`` (for callers
    whose ``vectors`` are their own fresh rows: then it may be ``vectors`` or a view of it)."""
    check_options(normalize, "max")
    if not isinstance(finite, (bool, np.bool_)):
        raise TypeError(f"finite must be True or False, got {finite!r}")
    vectors = check_data(vectors, "vectors")
    if vectors.ndim not in (1, 2):
        raise ValueError(f"finish_vectors needs B×D rows or one D vector, got shape {tuple(vectors.shape)}")
    xp = namespace(vectors)
    single = vectors.ndim == 1
    rows = vectors[None, ...] if single else vectors
    dtypes = work_dtypes(xp, rows)
    out = finish(xp, [rows], truncate_dim=truncate_dim, normalize=normalize, dtypes=dtypes, finite=finite)
    if copy and not normalize and out.dtype == vectors.dtype:  # no new array made: never the input or a view of it
        out = copy_of(xp, out)
    return out[0, ...] if single else out


def as_batch(xp: Any, hidden: Any, attention_mask: Any) -> tuple[Any, Any]:
    """(B×L×D hidden states, their mask): one L×D sequence becomes a batch of one, its (L,) mask checked
    against it (so an error names the shapes given) and made 1×L."""
    if hidden.ndim != 2:
        return hidden, attention_mask
    if attention_mask is not None:
        mask = as_array_like(attention_mask, xp, what="attention_mask")
        if tuple(mask.shape) != (hidden.shape[0],):
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but hidden states have shape "
                             f"{tuple(hidden.shape)}; for one sequence the mask must have shape "
                             f"{(hidden.shape[0],)}")
        attention_mask = mask[None, ...]
    return hidden[None, ...], attention_mask


def work_dtypes(xp: Any, hidden: Any) -> tuple[Any, Any]:
    """(output dtype, accumulation dtype): half precision accumulates in float32, integers promote; TypeError for
    float8_e8m0fnu, which has no zero to return."""
    dtype = hidden.dtype
    if isinstance(dtype, np.dtype) and not dtype.isnative:  # '>f8' != float64: it would accumulate in float32
        dtype = dtype.newbyteorder("=")
    if dtype == xp.float32 or dtype == xp.float64:  # the common case first: no isdtype calls (~3 µs)
        return dtype, dtype
    if "e8m0" in str(dtype):  # (torch's and ml_dtypes' float8_e8m0fnu)
        raise TypeError(f"dtype {str(dtype).removeprefix('torch.')} (an MX scale format: unsigned powers of two, no "
                        "zero) cannot hold a pooled vector (a row without tokens is zeros; means and unit vectors are "
                        "no powers of two): cast the values to float32 or bfloat16 first")
    if numpy_undefined(dtype):
        # a dtype numpy does not define itself (ml_dtypes' bfloat16 and float8 types: what JAX's bfloat16
        # arrays become in numpy), which numpy's isdtype refuses: floats accumulate in float32, others promote
        return (dtype, xp.float32) if "float" in dtype.name else (xp.float64, xp.float64)
    if not xp.isdtype(dtype, "real floating"):
        dtype = default_float(xp, hidden)
    if dtype == xp.float32 or dtype == xp.float64 or (isinstance(dtype, np.dtype) and dtype.itemsize > 8):
        return dtype, dtype  # (a real floating numpy dtype above 8 bytes: long double, its own math)
    return dtype, xp.float32


def check_truncate_dim(truncate_dim: Any, width: int | None = None, *, name: str = "truncate_dim") -> int:
    """The Matryoshka dimension as an int: TypeError for a non-integer, ValueError outside 1..width (the pooled
    dimension; any positive int when the width is not known yet); messages call it ``name`` (``--dim``)."""
    if not is_int(truncate_dim):
        raise TypeError(f"{name} must be an int, got {shown_value(truncate_dim)}")
    if width is None and truncate_dim < 1:
        raise ValueError(f"{name} must be a positive int, got {shown_value(truncate_dim, str)}")
    if width is not None and not 0 < truncate_dim <= width:
        raise ValueError(f"{name} must be an int in 1..{width} (the pooled dimension), got {shown_value(truncate_dim, str)}")
    return int(truncate_dim)


def _l2_normalise(xp: Any, vectors: Any) -> Any:
    """Unit rows; a zero row stays zero (no NaN in the value or, under autograd, the gradient), and a row with
    NaN stays NaN (the test is ``== 0``, which NaN fails, not ``> 0``, which would hide it as a zero row).

    Each row is first divided by its largest magnitude, so its squares neither overflow (float32 |x| > 1.8e19
    would give an inf norm and a zero vector) nor underflow (|x| < 1e-23 would pass for a zero row)."""
    if vectors.shape[0] == 0 or vectors.shape[-1] == 0:  # (Dask's max over a block of no rows fails to compute)
        return copy_of(xp, vectors)  # (nothing to scale, but a new array, as `finish_vectors` promises)
    largest = xp.max(xp.abs(vectors), axis=-1, keepdims=True)
    empty = largest == 0
    # rows past 2^64 are first scaled by 2^-64 (exact): XLA divides by multiplying with the reciprocal, which
    # flushes to zero past 8.5e37 in float32 (1 / FLT_MIN), and JAX's unit rows came out as zeros
    shrink = xp.where(largest > 2.0**64, xp.full_like(largest, 2.0**-64), xp.ones_like(largest))
    # a row holding inf is scaled by NaN: NaN, as documented, where inf / inf made numpy (and Dask) warn
    shrink = xp.where(xp.isinf(largest), xp.full_like(largest, float("nan")), shrink)
    scaled = (vectors * shrink) / xp.where(empty, xp.ones_like(largest), largest * shrink)
    squares = xp.sum(scaled * scaled, axis=-1, keepdims=True)
    norms = xp.sqrt(xp.where(empty, xp.ones_like(squares), squares))
    return xp.where(empty, xp.zeros_like(scaled), scaled / norms)


def _check_finite_rows(xp: Any, rows: Any) -> None:
    """`ModelOutputError` naming the first row of B×D ``rows`` that holds NaN or inf (skipped under jax.jit)."""
    if rows.shape[0] == 0 or rows.shape[1] == 0 or is_jax_tracer(rows):
        return
    finite = xp.all(xp.isfinite(rows), axis=-1)
    if bool(xp.all(finite)):
        return
    row = int(np.flatnonzero(~to_numpy(finite))[0])
    raise ModelOutputError(f"row {row}", index=row)


__all__ = ["Pooling", "finish_vectors", "pool"]
