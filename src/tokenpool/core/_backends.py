"""Array-library plumbing: find an array's namespace and move masks between libraries.

Frameworks are recognised through ``sys.modules`` (as einops does), so checking a type never imports torch,
JAX or CuPy; array-api-compat does the same when it resolves a namespace."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import array_api_compat
import numpy as np

_NAMESPACES: dict[type, Any] = {}  # exact numpy / torch array types → their namespace (it depends on the type only)


def is_array(x: Any) -> bool:
    """True for any array array-api-compat recognises (numpy, torch, JAX, CuPy, Dask, array-api-strict, …); a
    torch tensor by `is_torch_tensor` (array-api-compat's lru_cache'd checks warn under torch.compile)."""
    return type(x) in _NAMESPACES or is_torch_tensor(x) or array_api_compat.is_array_api_obj(x)


def is_torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def in_torch_transform() -> bool:
    """True where the host-side fast paths must step aside: inside a ``torch.func`` transform (wrapped tensors
    have no storage), a forward-mode AD level (a ``.numpy()`` view drops the tangents), or ``torch.jit.trace``
    (also the TorchScript ONNX export: what the host computed from one mask would become a constant)."""
    global _torch_checks
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    if _torch_checks is None:  # torch's own C checks, looked up once (this runs on every pool call)
        c = torch._C
        _torch_checks = (getattr(c, "_is_tracing", torch.jit.is_tracing),
                         getattr(c, "_are_functorch_transforms_active", lambda: False))  # fmt: skip
    tracing, transforms = _torch_checks
    if tracing() or transforms():
        return True
    forward_ad = sys.modules.get("torch.autograd.forward_ad")
    return getattr(forward_ad, "_current_level", -1) >= 0


_torch_checks: tuple[Any, Any] | None = None


def is_jax_tracer(x: Any) -> bool:
    """True inside ``jax.jit``: values are abstract, so data-dependent checks must be skipped."""
    core = sys.modules.get("jax.core")
    tracer = getattr(core, "Tracer", None)
    return tracer is not None and isinstance(x, tracer)


def has_abstract_values(x: Any) -> bool:
    """True where no host check can read ``x``'s values: a JAX tracer (`is_jax_tracer`), a tensor traced by
    torch.compile, or one batched by ``torch.func.vmap`` (at any level of functorch's wrappers: ``vmap(grad(f))``
    wraps a batched tensor)."""
    if is_jax_tracer(x):
        return True
    if not is_torch_tensor(x):
        return False
    if sys.modules["torch"].compiler.is_compiling():  # (Dynamo's fake values; first: as in `readable_now`)
        return True
    if not in_torch_transform():
        return False
    functorch = sys.modules["torch"]._C._functorch
    while functorch.is_functorch_wrapped_tensor(x):
        if functorch.is_batchedtensor(x):
            return True
        x = functorch.get_unwrapped(x)
    return False


def readable_now(x: Any) -> bool:
    """Whether a host check may read ``x``'s values now: not inside jax.jit, torch.compile, torch.func or
    torch.jit.trace (abstract values, or a graph break), and not a lazy Dask array (it would compute its graph)."""
    if is_torch_tensor(x):
        # (is_compiling first: Dynamo cannot trace `in_torch_transform`'s C checks, and fullgraph fails on them)
        return not (sys.modules["torch"].compiler.is_compiling() or in_torch_transform())
    return not (is_jax_tracer(x) or array_api_compat.is_dask_array(x))


def torch_compiling(x: Any) -> bool:
    """Whether torch.compile traces the tensor ``x`` now; not torch.export, whose program holds torch's own ops
    only (a custom op of ours would have to be registered wherever it is loaded)."""
    if not is_torch_tensor(x):
        return False
    compiler = sys.modules["torch"].compiler
    # (export's flag, not is_exporting(): Dynamo answered True to it under torch.compile too before pytorch#176347
    # (2026), and torch < 2.7 has neither)
    return compiler.is_compiling() and not getattr(compiler, "_is_exporting_flag", False)


def holds_float64(xp: Any, x: Any) -> bool:
    """Whether ``x``'s library and device have float64 to redo a sum in: not JAX without jax_enable_x64 (its
    float64 is float32, with a warning), torch on Apple's MPS (TypeError), nor a no-x64 array-api-strict."""
    if isinstance(x, np.ndarray):
        return True
    if is_torch_tensor(x):
        return x.device.type != "mps"
    info = getattr(xp, "__array_namespace_info__", None)
    return info is None or "float64" in info().dtypes(device=device(x), kind="real floating")


def namespace(x: Any) -> Any:
    """The Array API namespace of ``x`` (array-api-compat's wrapper for numpy/torch/CuPy/Dask); remembered per
    type for plain numpy arrays and torch tensors, which every pooling call asks about (~5 µs a time)."""
    found = _NAMESPACES.get(type(x))
    if found is not None:
        return found
    if is_torch_tensor(x):  # (array_namespace's lru_cache'd type checks: 5 warnings inside torch.compile)
        from array_api_compat import torch as xp
    else:
        xp = array_api_compat.array_namespace(x)
    if type(x) is np.ndarray or (is_torch_tensor(x) and type(x) is sys.modules["torch"].Tensor):
        _NAMESPACES[type(x)] = xp
    return xp


def device(x: Any) -> Any:
    """The device of an array of any library (a torch tensor's own: array-api-compat's asks lru_cache'd checks,
    which torch.compile warns about)."""
    return x.device if is_torch_tensor(x) else array_api_compat.device(x)


to_device = array_api_compat.to_device  # an array moved to another device of its own library


def without_empty_chunks(x: Any, what: str = "array") -> Any:
    """``x`` itself, or a Dask array rechunked without its empty chunks (what filtering leaves): Dask's max,
    min and cumulative sums over an axis fail to compute, or compute wrong shapes, where a block is empty
    (dask/dask#10327). Dropping them changes no value. A Dask array of unknown (nan) chunk sizes, as boolean
    indexing leaves it, is refused: its shape cannot be checked against the other inputs'."""
    if is_torch_tensor(x) or not array_api_compat.is_dask_array(x):  # (torch first: as `device`)
        return x
    if any(size != size for axis in x.chunks for size in axis):  # (nan: the only size unequal to itself)
        raise ValueError(f"{what} is a Dask array of unknown (nan) chunk sizes, shape {tuple(x.shape)}; call its "
                         ".compute_chunk_sizes() first")  # fmt: skip
    if not any(0 in axis and len(axis) > 1 for axis in x.chunks):
        return x
    return x.rechunk(tuple(tuple(size for size in axis if size) or (0,) for axis in x.chunks))


def to_numpy(x: Any) -> np.ndarray:
    """A host numpy copy (or view) of an array from any library, or of a nested list; torch's bfloat16 and float8
    (which numpy lacks) and the dtypes numpy does not define itself (ml_dtypes' bfloat16, float8, int4: JAX's) too; a
    subclass (``np.matrix``, whose rows stay 2-D) as a plain array."""
    if isinstance(x, np.ndarray):
        return _numpy_defined(x if type(x) is np.ndarray else np.asarray(x))
    if is_torch_tensor(x):
        torch = sys.modules["torch"]
        if x.dtype.is_floating_point and x.dtype not in (torch.float16, torch.float32, torch.float64):
            x = x.float()  # (bfloat16, float8: numpy has no such dtype; float32 holds each of their values)
        try:
            if x.is_cpu and not x.requires_grad:  # (detach and cpu cost ~2 µs even when they do nothing; is_cpu makes no device)
                return x.numpy()
            return x.detach().cpu().numpy()
        except RuntimeError:  # inside torch.func.grad no tensor has storage to view (cu_seqlens, prompt lengths)
            return np.array(x.tolist(), dtype=str(x.dtype).removeprefix("torch."))
    if type(x).__module__.startswith("cupy"):
        return x.get()
    try:
        return _numpy_defined(np.asarray(x))
    except (RuntimeError, TypeError) as exc:  # an Array API array on a device numpy cannot read: a host copy
        if isinstance(x, (list, tuple)):  # (torch tensors numpy cannot read, tracked, bfloat16, float8: each as above)
            return _numpy_defined(np.asarray([to_numpy(item) for item in x]))
        if isinstance(exc, TypeError) or not hasattr(x, "__dlpack__"):  # (a failed Dask computation: that error)
            raise
        try:
            host = np.from_dlpack(x, device="cpu")
        except TypeError:  # numpy < 2.1 has no device= (pyproject allows 1.24): read on the producer's device
            host = np.from_dlpack(x)
        return _numpy_defined(host)


def dtype_name(x: Any, host: np.ndarray) -> str:
    """The name of ``x``'s own dtype (torch's without "torch."; ``host``'s, its `to_numpy` copy, for a list), for a
    message: not float32, which bfloat16 and float8 are read as."""
    return str(getattr(x, "dtype", host.dtype)).removeprefix("torch.")


def host_values(x: Any, what: str) -> np.ndarray:
    """`to_numpy` of ``x``; for input that is no array (a nested list), a TypeError naming ``what`` when numpy
    cannot read it (a ragged list)."""
    try:
        return to_numpy(x)  # (a list of tensors that autograd tracks too: each item's values)
    except (ValueError, TypeError) as exc:
        if is_array(x):
            raise
        raise TypeError(f"{what} must be an array, got {type(x).__name__}: {exc}") from None


def copy_of(xp: Any, x: Any) -> Any:
    """A new array with ``x``'s values (a torch tensor by ``clone``: autograd follows it, and torch.asarray
    would warn about ``requires_grad``)."""
    return x.clone() if is_torch_tensor(x) else xp.asarray(x, copy=True)


def sum_over_none(xp: Any, x: Any, axis: int) -> Any:
    """``x`` summed over its ``axis`` of length 0, in ``x``'s own dtype: zeros that autograd keeps in its graph.
    Bools and byte-swapped numpy dtypes (``'>f4'``, which numpy's ``sum(dtype=...)`` refuses) get plain zeros."""
    if x.dtype == xp.bool or (isinstance(x.dtype, np.dtype) and not x.dtype.isnative):
        shape = tuple(size for i, size in enumerate(x.shape) if i != axis % x.ndim)
        return xp.zeros(shape, dtype=x.dtype, device=device(x))
    return xp.sum(x, axis=axis, dtype=x.dtype)


def numpy_undefined(dtype: Any) -> bool:
    """Whether ``dtype`` is a numpy dtype that numpy does not define itself (ml_dtypes' bfloat16, float8, float4,
    int4: what JAX's arrays of them become in numpy), which numpy's isdtype, finfo and iinfo refuse."""
    return isinstance(dtype, np.dtype) and dtype.isbuiltin == 2


def _numpy_defined(array: np.ndarray) -> np.ndarray:
    """``array`` as float32 when its dtype is one numpy does not define (float32 holds each of their values)."""
    if numpy_undefined(array.dtype):
        with contextlib.suppress(TypeError, ValueError):
            return array.astype(np.float32)
    return array


def check_has_values(x: Any, what: str) -> None:
    """ValueError for a tensor on torch's "meta" device, which has a shape but no values to read or copy, for a
    sparse, MKLDNN or nested torch tensor, which has no rectangular memory (torch's errors named none), and a
    numpy masked array with masked values (its mask would be silently ignored), and for a scipy sparse matrix (which
    numpy reads as a 0-d object array)."""
    if type(x).__module__.startswith("scipy.sparse"):
        raise ValueError(f"{what}: a scipy sparse {type(x).__name__} of shape {x.shape}; give a dense array (.toarray())")
    if getattr(x, "is_meta", False) is True:  # (torch's flag: no device object made)
        raise ValueError(f"{what}: a tensor on torch's 'meta' device (a shape without values); move it to a real device")
    if isinstance(x, np.ma.MaskedArray) and np.ma.is_masked(x):  # its mask would be read as values, not used
        raise ValueError(f"{what}: a numpy masked array with masked values, whose mask tokenpool does not read; give "
                         "its .data and say which tokens to pool with the attention mask")
    if is_torch_tensor(x) and (x.is_nested or x.layout is not sys.modules["torch"].strided):
        advice = "a dense one (.to_dense())" if not x.is_nested else (  # (a nested tensor's .to_dense() is none)
            "a padded one (nt.to_padded_tensor(0.0)) and a mask of its rows' lengths, or a jagged nested tensor's "
            "tokens and offsets to pool_packed(nt.values(), nt.offsets(), ...)")
        kind = "a nested" if x.is_nested else "an MKLDNN" if x.is_mkldnn else "a sparse"
        raise ValueError(f"{what}: {kind} torch tensor (layout {x.layout}); give {advice}")


def as_array_like(value: Any, xp: Any, *, what: str) -> Any:
    """``value`` itself when it is an array of namespace ``xp`` (on its own device), else a list or another
    library's array as a host numpy array: its caller checks the values where they lie and moves what it makes of
    them (a 0/1 int64 mask moved as it is would be refused by a device without 64-bit types)."""
    check_has_values(value, what)
    if is_array(value) and namespace(value) is xp:
        return without_empty_chunks(value, what)
    # `pool(hidden, "max")`, `pool(hidden, ["mean", "max"])`: strategies where the mask goes (but ["1", "0"] is an
    # array of strings, refused by its dtype below as np.array(["1", "0"]) and [["1", "0"]] are)
    listed = value if isinstance(value, (list, tuple)) and value else [value]
    digits = listed is value and any(isinstance(item, (str, bytes)) and item.isdigit() for item in listed)
    if not digits and all(isinstance(item, (str, bytes)) for item in listed):
        raise TypeError(f"{what} must be an array of 0/1 or booleans, got the {type(value).__name__} {value!r:.60} "
                        "(a pooling strategy is no mask: pool(hidden, None, 'max') pools every token)")
    try:
        host = to_numpy(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} could not be read as an array: {exc}") from None
    if host.dtype == object:
        raise ValueError(f"{what} must be a rectangular array of numbers, got {type(value).__name__} {value!r:.80}")
    # torch refuses negative strides (``mask[:, ::-1]``) and another byte order, and warns on a read-only array
    # (numpy 2's new-style dtypes, StringDType, have no byte order: kept for the caller's dtype refusal)
    return np.require(host, host.dtype if host.dtype.isnative else host.dtype.newbyteorder("="), ["C", "W"])


def default_float(xp: Any, like: Any) -> Any:
    """The library's default real floating dtype (numpy: float64, torch: its default, JAX: float32 w/o x64)."""
    with contextlib.suppress(Exception):  # (no namespace info, or one that takes other arguments)
        return xp.__array_namespace_info__().default_dtypes(device=device(like))["real floating"]
    return xp.float64
