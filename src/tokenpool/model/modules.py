"""The sentence-transformers modules after pooling — ``Dense``, ``LayerNorm``, ``Normalize`` — run in their
configured order (e.g. EmbeddingGemma: Transformer → Pooling → Dense → Dense → Normalize).

Data, never code: a module's class is recognised by its name only (nothing is imported from the path in
``modules.json``), a Dense activation is taken from an allow-list of torch activations by name, and weights are
read from ``model.safetensors`` (or a ``pytorch_model.bin`` with ``torch.load(weights_only=True)``, which
refuses anything but tensors). `read_post_modules` imports no framework; `Pipeline` imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelFolderError, UnsafeModelFolderError

__all__ = ["PostModule", "read_post_modules", "output_width", "Pipeline", "ACTIVATIONS", "POST_MODULE_KINDS"]

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


def _class_name(module_type: str) -> str:
    return module_type.rsplit(".", 1)[-1]


def read_post_modules(root: Path) -> tuple[PostModule, ...]:
    """The Dense / LayerNorm / Normalize modules that follow the pooling module in ``root/modules.json``, in
    order, with their configs checked (`ConfigError` naming the file otherwise)."""
    from .configs import ordered_modules

    file = root / "modules.json"
    if not file.is_file():
        return ()
    try:
        modules = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: not readable JSON ({exc})") from None
    if not isinstance(modules, list):
        return ()
    found: list[PostModule] = []
    after_pooling = False
    for entry in ordered_modules(modules, file):
        kind = _class_name(str(entry.get("type", "")))
        if kind in ("Pooling", "SpladePooling"):
            after_pooling = True
            continue
        if after_pooling and kind in POST_MODULE_KINDS:
            rel = str(entry.get("path", ""))
            found.append(PostModule(kind, rel, _module_config(root, kind, rel)))
    return tuple(found)


def _module_config(root: Path, kind: str, rel: str) -> dict[str, Any]:
    if kind == "Normalize":
        return {}
    file = root / rel / "config.json"
    try:
        config = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{kind} module folder {root / rel} has no config.json") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{file} must hold a JSON object, got {type(config).__name__}")
    if kind == "Dense":
        for key in ("in_features", "out_features"):
            _positive_int(config.get(key), file, key)
        if not isinstance(config.get("bias", True), bool) or not isinstance(config.get("use_residual", False), bool):
            raise ConfigError(f"{file}: 'bias' and 'use_residual' must be true or false")
        for key in ("module_input_name", "module_output_name"):
            if config.get(key, "sentence_embedding") not in ("sentence_embedding", None):
                raise ConfigError(
                    f"{file}: {key}={config[key]!r} is not supported (tokenpool runs Dense on the sentence embedding)"
                )
        activation_name(config.get("activation_function", "torch.nn.modules.activation.Tanh"), file)
    else:  # LayerNorm
        _positive_int(config.get("dimension"), file, "dimension")
    return config


def _positive_int(value: Any, file: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{file}: {key!r} must be a positive integer, got {value!r:.40}")
    return value


def activation_name(path: Any, file: Path) -> str:
    """The allow-listed torch activation a Dense config names (never imported from its path)."""
    if path is None:
        return "Identity"
    if not isinstance(path, str):
        raise ConfigError(f"{file}: activation_function must be a class path string, got {path!r:.60}")
    name = _class_name(path)
    if not path.startswith("torch.nn.") or name not in ACTIVATIONS:
        raise ConfigError(
            f"{file}: activation_function {path!r} is not one tokenpool runs; it imports no code from a model "
            f"folder and knows torch.nn {', '.join(ACTIVATIONS)}"
        )
    return name


def output_width(modules: tuple[PostModule, ...], width: int, where: Path) -> int:
    """The vector width after ``modules``, checking that each module fits the width it receives."""
    for module in modules:
        if module.kind == "Dense":
            if module.config["in_features"] != width:
                raise ConfigError(
                    f"{where / module.path / 'config.json'}: in_features={module.config['in_features']} but the "
                    f"vectors reaching it have {width} dimensions"
                )
            width = module.config["out_features"]
        elif module.kind == "LayerNorm" and module.config["dimension"] != width:
            raise ConfigError(
                f"{where / module.path / 'config.json'}: dimension={module.config['dimension']} but the vectors "
                f"reaching it have {width} dimensions"
            )
    return width


def _load_weights(folder: Path) -> dict[str, Any]:
    """A module folder's tensors: model.safetensors, else pytorch_model.bin read with weights_only=True."""
    import torch

    safetensors_file, pickle_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_file), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
            raise ModelFolderError(f"{safetensors_file}: not readable safetensors ({exc})") from None
    if pickle_file.is_file():
        try:
            state = torch.load(pickle_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
                raise UnsafeModelFolderError(
                    f"refusing to unpickle {pickle_file}: it holds objects other than tensors; convert it to "
                    f"model.safetensors"
                ) from None
            raise ModelFolderError(f"{pickle_file}: not readable ({exc})") from None
        if not isinstance(state, dict):
            raise ModelFolderError(f"{pickle_file}: expected a dict of tensors")
        return state
    raise ModelFolderError(f"module folder {folder} has no model.safetensors (or pytorch_model.bin)")


def _tensor(state: dict[str, Any], key: str, shape: tuple[int, ...], folder: Path) -> Any:
    import torch

    value = state.get(key)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or not value.is_floating_point():
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ModelFolderError(f"{folder}: weights need a floating tensor {key!r} of shape {shape}, got {got}")
    return value


class Pipeline:
    """The post-pooling modules as torch callables on the runner's device and dtype.

    A trailing ``Normalize`` is left to the Encoder (its ``normalize`` option, applied after ``truncate_dim``,
    as for models without Dense layers); a Normalize in the middle runs where it stands.
    """

    def __init__(self, root: Path, modules: tuple[PostModule, ...], *, device: str, dtype: Any) -> None:
        import torch

        self.modules = modules
        self.steps: list[Any] = []
        for module in modules:
            folder = root / module.path
            if module.kind == "Normalize":
                self.steps.append(lambda x: torch.nn.functional.normalize(x, p=2.0, dim=-1))
                continue
            state = _load_weights(folder)
            if module.kind == "Dense":
                self.steps.append(_dense(module.config, state, folder, device, dtype))
            else:
                dim = module.config["dimension"]
                weight = _tensor(state, "norm.weight", (dim,), folder).to(device=device, dtype=dtype)
                bias = _tensor(state, "norm.bias", (dim,), folder).to(device=device, dtype=dtype)
                self.steps.append(
                    lambda x, w=weight, b=bias, d=dim: torch.nn.functional.layer_norm(x, (d,), w, b, eps=1e-5)
                )

    def __call__(self, vectors: Any) -> Any:
        for step in self.steps:
            vectors = step(vectors)
        return vectors


def _dense(config: dict[str, Any], state: dict[str, Any], folder: Path, device: str, dtype: Any) -> Any:
    import torch

    n_in, n_out = config["in_features"], config["out_features"]
    weight = _tensor(state, "linear.weight", (n_out, n_in), folder).to(device=device, dtype=dtype)
    bias = (
        _tensor(state, "linear.bias", (n_out,), folder).to(device=device, dtype=dtype)
        if config.get("bias", True)
        else None
    )
    activation = getattr(torch.nn, activation_name(config.get("activation_function", "torch.nn.Tanh"), folder))()
    residual = None
    if config.get("use_residual", False):
        residual = (
            None
            if n_in == n_out
            else _tensor(state, "residual.weight", (n_out, n_in), folder).to(device=device, dtype=dtype)
        )

    def step(x: Any) -> Any:
        out = activation(torch.nn.functional.linear(x, weight, bias))
        if config.get("use_residual", False):
            out = out + (x if residual is None else torch.nn.functional.linear(x, residual))
        return out

    return step
