"""Array backends the tests run on, with conversions to and from numpy."""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest

from tokenpool.core import compiled, fast

BACKENDS = ["numpy", "torch", "jax", "array_api_strict", "dask"]

# dtypes each backend is tested with (names; bfloat16 only where the library has it)
DTYPES = {
    "numpy": ["float64", "float32", "float16"],
    "torch": ["float64", "float32", "float16", "bfloat16"],
    "jax": ["float32", "float16", "bfloat16"],
    "array_api_strict": ["float64", "float32"],
    "dask": ["float64", "float32", "float16"],
}

# (rtol, atol) against the float64 reference, which is fed the same rounded input values
TOLERANCE = {
    "float64": (1e-10, 1e-10),
    "float32": (1e-5, 1e-5),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1.6e-2, 1.6e-2),
}


def require(backend: str) -> None:
    module = {"array_api_strict": "array_api_strict", "dask": "dask.array"}.get(backend, backend)
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{backend} is not installed")


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype`` and back to float64 (what the library will actually see)."""
    if dtype == "bfloat16":
        import torch

        return torch.tensor(values, dtype=torch.bfloat16).to(torch.float64).numpy()
    return values.astype(dtype).astype(np.float64)


def to_backend(values: np.ndarray, backend: str, dtype: str | None = None):
    """A numpy array as an array of ``backend`` (cast to ``dtype`` when given)."""
    if backend == "numpy":
        return values if dtype is None else values.astype(dtype)
    if backend == "torch":
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(values))
        return tensor if dtype is None else tensor.to(getattr(torch, dtype))
    if backend == "jax":
        import jax.numpy as jnp

        array = jnp.asarray(values)
        return array if dtype is None else array.astype(getattr(jnp, dtype))
    if backend == "array_api_strict":
        import array_api_strict as xp

        array = xp.asarray(values)
        return array if dtype is None else xp.astype(array, getattr(xp, dtype))
    if backend == "dask":
        import dask.array as da

        array = da.from_array(values, chunks=max(1, values.shape[0] // 2))  # several chunks along rows
        return array if dtype is None else array.astype(dtype)
    raise ValueError(backend)


def to_numpy64(array) -> np.ndarray:
    """Any backend's array as float64 numpy."""
    module = type(array).__module__
    if module.startswith("dask"):
        return np.asarray(array.compute(), dtype=np.float64)
    if module.startswith("torch"):
        return array.detach().to("cpu").double().numpy()
    if module.startswith("jax"):
        return np.asarray(array.astype("float32") if str(array.dtype) == "bfloat16" else array, dtype=np.float64)
    return np.asarray(array, dtype=np.float64)


def dtype_name(array) -> str:
    return str(array.dtype).rsplit(".", 1)[-1]


def library_of(array) -> str:
    module = type(array).__module__.split(".")[0]
    return {"jaxlib": "jax"}.get(module, module)


# the fast paths' kernel choices for numpy / torch CPU input (see `fast_kernels`)
KERNELS = ["numpy", "numpy-plain", "torch", "torch-numpy", "torch-numpy-plain"]


@contextlib.contextmanager
def fast_kernels(backend: str):
    """Select torch's own kernels ("torch") or numpy's on a view ("torch-numpy", whose sums take torch's
    ``embedding_bag``) for torch CPU tensors, and numpy's own reductions for everything ("…-plain") or
    `core/compiled.py`'s (where numba is installed) for inputs of any size."""
    saved = fast.TORCH_CPU_VIA_NUMPY, fast.TORCH_CPU_ON_TORCH_THREADS, compiled.ENABLED, fast.COMPILED_ELEMENTS
    fast.TORCH_CPU_VIA_NUMPY = backend.startswith("torch-numpy")
    fast.TORCH_CPU_ON_TORCH_THREADS = compiled.ENABLED = not backend.endswith("-plain")
    fast.COMPILED_ELEMENTS = 0  # the compiled kernels for inputs of any size
    try:
        yield
    finally:
        fast.TORCH_CPU_VIA_NUMPY, fast.TORCH_CPU_ON_TORCH_THREADS, compiled.ENABLED, fast.COMPILED_ELEMENTS = saved


def counting_kernels(monkeypatch) -> list[str]:
    """Names of `core/compiled.py`'s kernels called from now on (numba must be installed)."""
    kernels = compiled.kernels()
    assert kernels is not None
    calls: list[str] = []
    original = kernels.run  # every pooling call of a kernel, serial or on numba's threads
    monkeypatch.setattr(kernels, "run", lambda name, *a: calls.append(name) or original(name, *a))
    return calls


def mask_layout(rng: np.random.Generator, rows: int, length: int, layout: str) -> np.ndarray:
    """A boolean B×L mask: "right" or "left" padding (rows of 0…L real tokens), or random "holes"."""
    if layout == "holes":
        return rng.random((rows, length)) < 0.6
    lengths = rng.integers(0, length + 1, rows)
    columns = np.arange(length)[None, :]
    return columns >= (length - lengths)[:, None] if layout == "left" else columns < lengths[:, None]
