"""The sentence-transformers modules after pooling (``Dense``, ``LayerNorm``, ``Normalize``), in their
configured order. Data, never code: classes known by name, Dense activations from an allow-list, weights read
by numpy (or ``torch.load(weights_only=True)``); `Pipeline` runs on torch tensors or numpy arrays alike."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from ..core.pooling import finish_vectors
from ..errors import ConfigError, ModelFolderError, UnsafeModelFolderError, is_int
from .safety import is_present, read_json_file, read_regular_file

__all__ = [
    "PostModule", "read_post_modules", "transformer_dir", "read_module_config", "read_safetensors", "output_width", "Pipeline",
    "weights_file",
    "ACTIVATIONS", "ACTIVATION_FUNCTIONS", "POST_MODULE_KINDS",
]  # fmt: skip

POST_MODULE_KINDS = ("Dense", "LayerNorm", "Normalize")
# torch.nn activation classes a Dense module may name (by their last path component, under torch.nn): built
# with their default arguments, as sentence-transformers builds them
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "Softplus", "ELU", "LeakyReLU", "Mish")


@dataclass(frozen=True)
class PostModule:
    """One module after pooling: its class name, folder (relative to the model root) and config."""

    kind: str
    path: str
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def read_post_modules(root: Path) -> tuple[PostModule, ...]:
    """The Dense / LayerNorm / Normalize modules that follow the pooling module in ``root/modules.json``, in
    order, with their configs checked (`ConfigError` naming the file otherwise)."""
    file = root / "modules.json"
    if not is_present(file):
        return ()
    modules = read_json_file(file)
    if not isinstance(modules, list):
        return ()
    entries = ordered_modules(modules, file)
    kinds = [class_name(entry["type"]) for entry in entries]
    start = next((k + 1 for k, kind in enumerate(kinds) if kind in ("Pooling", "SpladePooling")), len(kinds))
    return tuple(
        PostModule(kind, entry["path"], read_module_config(root, kind, entry["path"]))
        for entry, kind in zip(entries[start:], kinds[start:], strict=True) if kind in POST_MODULE_KINDS
    )


def transformer_dir(root: Path) -> str:
    """Folder of the Transformer module inside a sentence-transformers layout ("" for the root)."""
    modules_file = root / "modules.json"
    if not is_present(modules_file):
        return ""
    modules = read_json_file(modules_file)  # (export-onnx reads no pooling config first: checked here too)
    ordered = ordered_modules(modules, modules_file) if isinstance(modules, list) else []
    first = ordered[0] if ordered else {}
    return first.get("path", "") if str(first.get("type", "")).endswith("Transformer") else ""


def class_name(module_type: str) -> str:
    """The class of a modules.json ``type`` (its last dotted part): only the name is read, nothing imported."""
    return module_type.rsplit(".", 1)[-1]


def ordered_modules(modules: list[Any], where: Path) -> list[Any]:
    """modules.json entries in pipeline order: the list order, which sentence-transformers runs whatever the
    ``idx`` values say. ``idx`` must still be an int and unique, and so must a ``name`` (sentence-transformers
    keys modules by it: a repeated one replaces the earlier module); a damaged file is refused, not guessed at.
    ``type`` and ``path`` must be strings, the path inside the model folder (not absolute, no ``..``)."""
    seen: set[int] = set()
    names: list[Any] = []  # (a list: a JSON name may be unhashable)
    for entry in modules:
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: module entry {entry!r:.80} must be a JSON object")
        if not (isinstance(entry.get("type"), str) and isinstance(entry.get("path"), str)):
            raise ConfigError(f"{where}: module entry {entry!r:.120} needs string 'type' and 'path'")
        if "name" in entry:
            if entry["name"] in names:
                raise ConfigError(f"{where}: two modules have name {entry['name']!r:.40}; sentence-transformers keeps only the last")
            names.append(entry["name"])
        rel = entry["path"]
        if Path(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise ConfigError(f"{where}: module path {rel!r:.80} must stay inside the model folder")
        if "idx" not in entry:
            continue
        idx = entry["idx"]
        if not is_int(idx):
            raise ConfigError(f"{where}: module 'idx' must be an integer, got {idx!r:.40} in {entry!r:.120}")
        if idx in seen:
            raise ConfigError(f"{where}: two modules have idx {idx}; the pipeline order is undefined")
        seen.add(idx)
    if seen and len(seen) != len(modules):
        raise ConfigError(f"{where}: some modules have an 'idx' and some do not; the pipeline order is undefined")
    return list(modules)


def read_module_config(root: Path, kind: str, rel: str) -> dict[str, Any]:
    """The checked ``config.json`` of a Dense, LayerNorm or Normalize module at ``root/rel`` (a Normalize may
    have none: sentence-transformers' default); `ConfigError` naming the file for one tokenpool cannot run."""
    file = root / rel / "config.json"
    if kind == "Normalize" and not is_present(file):
        return {}
    missing = f"{kind} module folder {root / rel} has no config.json"
    config = read_json_file(file, object_only=True, missing=missing)
    if kind in ("Dense", "Normalize"):  # modules that name the feature they read and write
        _check_feature_names(config, file, kind)
    if kind == "Dense":
        for key in ("in_features", "out_features"):
            _positive_int(config.get(key), file, key)
        if not isinstance(config.get("bias", True), bool) or not isinstance(config.get("use_residual", False), bool):
            raise ConfigError(f"{file}: 'bias' and 'use_residual' must be true or false")
        activation_name(config.get("activation_function", "torch.nn.modules.activation.Tanh"), file)
    elif kind == "LayerNorm":
        _positive_int(config.get("dimension"), file, "dimension")
    return config


def _check_feature_names(config: dict[str, Any], file: Path, kind: str) -> None:
    """tokenpool runs a module on the sentence embedding only: ``module_input_name`` must be that feature (as
    by default) and ``module_output_name`` too, or null (= the input's)."""
    for key, allowed in (("module_input_name", ("sentence_embedding",)),
                         ("module_output_name", ("sentence_embedding", None))):  # fmt: skip
        if config.get(key, "sentence_embedding") not in allowed:
            raise ConfigError(
                f"{file}: {key}={config[key]!r:.60} is not supported (tokenpool runs {kind} on the sentence "
                "embedding only)"
            )


def _positive_int(value: Any, file: Path, key: str) -> None:
    if not is_int(value) or value < 1:
        raise ConfigError(f"{file}: {key!r} must be a positive integer, got {value!r:.40}")


def activation_name(path: Any, file: Path) -> str:
    """The allow-listed torch activation a Dense config names (never imported from its path); null is refused,
    as sentence-transformers cannot load it (it saves torch.nn.Identity for none)."""
    if not isinstance(path, str):
        raise ConfigError(f"{file}: activation_function must be a class path string, got {path!r:.60}")
    name = path.rsplit(".", 1)[-1]
    if not path.startswith("torch.nn.") or name not in ACTIVATIONS:
        raise ConfigError(
            f"{file}: activation_function {path!r:.80} is not one tokenpool runs; it imports no code from a model "
            f"folder and knows torch.nn {', '.join(ACTIVATIONS)}"
        )
    return name


def output_width(modules: tuple[PostModule, ...], width: int, where: Path) -> int:
    """The vector width after ``modules``, checking that each module fits the width it receives."""
    for module in modules:
        key = {"Dense": "in_features", "LayerNorm": "dimension"}.get(module.kind)
        if key is not None and module.config[key] != width:
            raise ConfigError(
                f"{where / module.path / 'config.json'}: {key}={module.config[key]} but the vectors "
                f"reaching it have {width} dimensions"
            )
        if module.kind == "Dense":
            width = module.config["out_features"]
    return width


_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}
# the most bytes tokenpool reads of a module's weights file (a 4096×4096 float32 Dense is 64 MiB): a larger
# (say sparse) file is refused by its size, never read whole into memory
MAX_SAFETENSORS_BYTES = 4 << 30


def read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file as numpy arrays (bf16 widened to float32), read with numpy alone
    (data only, no code runs); a malformed file is a `ModelFolderError`, as is one the safetensors library
    refuses: tensors whose byte ranges overlap or leave bytes between them (`_check_contiguous`)."""
    try:
        data = read_regular_file(path, MAX_SAFETENSORS_BYTES)
        size = int.from_bytes(data[:8], "little")
        if len(data) < 8 or size > len(data) - 8:
            raise ValueError(f"header length {size} exceeds the file ({len(data)} bytes)")
        header = json.loads(data[8 : 8 + size])
        if not isinstance(header, dict):
            raise ValueError(f"its header must be a JSON object, got {type(header).__name__}")
        body = memoryview(data)[8 + size :]
        tensors = {name: _safetensor(entry, body) for name, entry in header.items() if name != "__metadata__"}
        _check_contiguous({name: header[name]["data_offsets"] for name in tensors}, len(body))
        return tensors
    except (OSError, ValueError, TypeError, KeyError, OverflowError) as exc:  # (OSError: a pipe, folder, dangling link; Overflow: a size > 64 bits)
        raise ModelFolderError(f"{path}: not readable safetensors ({exc})") from None


def _safetensor(entry: dict[str, Any], body: memoryview) -> Any:
    import numpy as np

    kind = _SAFETENSORS_DTYPES.get(entry["dtype"])
    if kind is None:
        raise ValueError(f"dtype {entry['dtype']!r:.40} is not supported")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not all(isinstance(v, list) and all(is_int(n) and n >= 0 for n in v) for v in (shape, offsets)) or len(offsets) != 2:
        raise ValueError(f"shape {shape!r:.40} and data_offsets {offsets!r:.40} must be lists of whole numbers (0 or more)")
    begin, end = offsets
    count = int(np.prod(shape, dtype=np.int64))
    if not 0 <= begin <= end <= len(body) or end - begin != count * np.dtype(kind).itemsize:
        raise ValueError(f"byte range {begin}..{end} does not hold a {entry['dtype']} tensor of shape {shape}")
    array = np.frombuffer(body[begin:end], dtype=kind).reshape(shape)
    if entry["dtype"] == "BF16":  # the upper half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.copy()


def _check_contiguous(offsets: dict[str, list[int]], size: int) -> None:
    """A `ValueError` unless the tensors' byte ranges (``offsets``) follow one another from 0 to ``size``, as
    the safetensors library requires: no two views of the same bytes, no bytes that belong to no tensor."""
    end = 0
    for name, (begin, stop) in sorted(offsets.items(), key=lambda item: item[1]):
        if begin != end:
            why = "overlaps the tensor before it" if begin < end else f"leaves bytes {end}..{begin} unread"
            raise ValueError(f"tensor {name!r:.60} at bytes {begin}..{stop} {why}")
        end = stop
    if end != size:
        raise ValueError(f"bytes {end}..{size} of the data belong to no tensor")


def weights_file(folder: Path) -> Path:
    """The weights file of a Dense / LayerNorm module folder: model.safetensors (one that is no regular file is
    refused when read, never passed over for the .bin), else pytorch_model.bin; a `ModelFolderError` for neither."""
    safetensors_file, pickle_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if is_present(safetensors_file):
        return safetensors_file
    if pickle_file.is_file():
        return pickle_file
    raise ModelFolderError(f"module folder {folder} has no model.safetensors (or pytorch_model.bin)")


def _load_weights(folder: Path) -> dict[str, Any]:
    """A module folder's tensors as numpy arrays: model.safetensors (read with numpy alone), else
    pytorch_model.bin read with torch's weights_only=True (needs torch)."""
    file = weights_file(folder)
    if file.suffix == ".safetensors":
        return read_safetensors(file)
    try:
        import torch
    except ImportError:
        raise ModelFolderError(
            f"{file}: reading a .bin file needs torch; convert it to model.safetensors"
        ) from None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            raise UnsafeModelFolderError(
                f"refusing to unpickle {file}: it holds objects other than tensors; convert it to "
                f"model.safetensors"
            ) from None
        raise ModelFolderError(f"{file}: not readable ({exc})") from None
    if not isinstance(state, dict):
        raise ModelFolderError(f"{file}: expected a dict of tensors")
    return {key: _numpy(value) for key, value in state.items()}


def _numpy(value: Any) -> Any:
    """A torch tensor from a .bin file as numpy (floating ones as float32); anything else as it is."""
    import torch

    if not isinstance(value, torch.Tensor):
        return value
    return value.detach().to(torch.float32).numpy() if value.is_floating_point() else value.numpy()


def _tensor(state: dict[str, Any], key: str, shape: tuple[int, ...], folder: Path) -> Any:
    import numpy as np

    value = state.get(key)
    if not isinstance(value, np.ndarray) or tuple(value.shape) != shape or value.dtype.kind != "f":
        got = tuple(value.shape) if isinstance(value, np.ndarray) else type(value).__name__
        raise ModelFolderError(f"{folder}: weights need a floating tensor {key!r} of shape {shape}, got {got}")
    return value


class Pipeline:
    """The post-pooling modules run on the runner's arrays (torch, or numpy for a numpy ``dtype``); a trailing
    ``Normalize`` is left to the Encoder's ``normalize`` (after ``truncate_dim``)."""

    def __init__(self, root: Path, modules: tuple[PostModule, ...], *, device: str, dtype: Any) -> None:
        self.modules = modules
        self.library, convert = _converter(device, dtype)
        self.steps: list[Any] = []
        for module in modules:
            folder = root / module.path
            if module.kind == "Normalize":  # a zero row stays zero, as with sentence-transformers' floor
                self.steps.append(partial(finish_vectors, normalize=True))
                continue
            state = _load_weights(folder)
            if module.kind == "Dense":
                self.steps.append(_dense(module.config, state, folder, convert))
            else:
                dim = module.config["dimension"]
                weight = convert(_tensor(state, "norm.weight", (dim,), folder))
                bias = convert(_tensor(state, "norm.bias", (dim,), folder))
                self.steps.append(partial(_layer_norm, weight=weight, bias=bias))  # (picklable: no lambda)

    def __call__(self, vectors: Any) -> Any:
        for step in self.steps:
            vectors = step(vectors)
        return vectors


def _converter(device: str, dtype: Any) -> tuple[str, Any]:
    """The runner's library ("numpy" for a numpy ``dtype``) and how numpy weights become its arrays."""
    import numpy as np

    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        return "numpy", lambda array: array.astype(dtype, copy=True)
    import torch

    return "torch", lambda array: torch.from_numpy(array).to(device=device, dtype=dtype)


def _layer_norm(x: Any, weight: Any, bias: Any, eps: float = 1e-5) -> Any:
    """LayerNorm over the last axis (biased variance, torch's default eps); half precision's row statistics
    overflow (squares above 65504, from |x| > 256), so they are taken in float32, as torch does."""
    from array_api_compat import array_namespace

    xp = array_namespace(x)
    wide = x if x.dtype == xp.float32 or x.dtype == xp.float64 else xp.astype(x, xp.float32)
    centred = wide - xp.mean(wide, axis=-1, keepdims=True)
    variance = xp.mean(centred * centred, axis=-1, keepdims=True)
    return xp.astype(centred / xp.sqrt(variance + eps), x.dtype) * weight + bias


def _dense(config: dict[str, Any], state: dict[str, Any], folder: Path, convert: Any) -> Any:
    n_in, n_out = config["in_features"], config["out_features"]
    weight_t = convert(_tensor(state, "linear.weight", (n_out, n_in), folder).T.copy())
    bias = convert(_tensor(state, "linear.bias", (n_out,), folder)) if config.get("bias", True) else None
    activation = ACTIVATION_FUNCTIONS[activation_name(config.get("activation_function", "torch.nn.Tanh"), folder)]
    residual = None
    if config.get("use_residual", False) and n_in != n_out:
        residual = convert(_tensor(state, "residual.weight", (n_out, n_in), folder).T.copy())

    # a partial of a module-level function, not a closure: an Encoder holding it pickles (worker processes)
    return partial(_dense_step, weight_t=weight_t, bias=bias, activation=activation, residual=residual,
                   use_residual=bool(config.get("use_residual", False)))


def _dense_step(
    x: Any, *, weight_t: Any, bias: Any, activation: Any, residual: Any, use_residual: bool
) -> Any:  # fmt: skip
    """One Dense module on ``x``: activation(x W^T + b), plus x (or x R^T when the widths differ) with a residual."""
    out = x @ weight_t
    out = activation(out if bias is None else out + bias)
    if use_residual:
        out = out + (x if residual is None else x @ residual)
    return out


def _activation(name: str, x: Any) -> Any:
    """The torch.nn activation ``name`` (default arguments) on ``x``, written once for any array namespace."""
    if name == "Identity":
        return x
    from array_api_compat import array_namespace

    xp = array_namespace(x)
    zero = xp.zeros_like(x)
    if name in ("Sigmoid", "SiLU"):
        e = xp.exp(-xp.abs(x))  # never overflows
        sigmoid = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return sigmoid if name == "Sigmoid" else x * sigmoid
    if name in ("Softplus", "Mish"):
        # log(1 + e^x) as max(x, 0) + log1p(e^-|x|) (torch's threshold of 20 gives the same float32 values)
        softplus = xp.where(x > 0, x, zero) + xp.log1p(xp.exp(-xp.abs(x)))
        return softplus if name == "Softplus" else x * xp.tanh(softplus)
    return {
        "Tanh": lambda: xp.tanh(x),
        "ReLU": lambda: xp.where(x > 0, x, zero),
        "ELU": lambda: xp.where(x > 0, x, xp.expm1(xp.where(x > 0, zero, x))),
        "LeakyReLU": lambda: xp.where(x >= 0, x, 0.01 * x),
        "GELU": lambda: 0.5 * x * (1 + _erf(x / 2**0.5)),
    }[name]()


def _erf(x: Any) -> Any:
    from array_api_compat import is_torch_array

    if is_torch_array(x):
        import torch

        return torch.special.erf(x)
    import numpy as np

    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


ACTIVATION_FUNCTIONS: dict[str, Any] = {name: partial(_activation, name) for name in ACTIVATIONS}
