"""Hugging Face Hub ids (``"org/name"``): downloaded once with ``huggingface_hub`` into its cache, only the
files a runner reads; with ``HF_HUB_OFFLINE=1`` an uncached model is a clear error, never a network call."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ModelFolderError, OptionError, env_flag, require
from .options import spell

__all__ = ["is_hub_id", "hub_offline", "download_model"]

# huggingface_hub's rule (validate_repo_id): each part 1-96 of [\w.-], starting and ending with [\w], no "--" or "..", no
# ".git" at the end; anything else is no Hub id (offline it was "not in the cache", never the name at fault)
_HUB_ID = re.compile(r"^(?!.*(?:--|\.\.|\.git$))[A-Za-z0-9](?:[\w.-]{0,94}\w)?/\w(?:[\w.-]{0,94}\w)?$")
# Every file transformers' tokenizer classes load, by suffix or (.txt and others a corpus may share) by name: the
# Hub download takes them, and a resumed job's fingerprint stamps them
TOKENIZER_SUFFIXES = (".json", ".model", ".spm", ".tiktoken")
TOKENIZER_NAMES = ("vocab.txt", "merges.txt", "dict.txt", "bpe.codes", "prophetnet.tokenizer")
# "*.py": a folder's own code comes too — never run unless trust_remote_code (which then finds it), and seen
# by the refusals that name it (a modules.json type from the folder's code)
_SMALL_FILES = ["*.txt", "tokenizer*", "*.py", *(f"*{suffix}" for suffix in TOKENIZER_SUFFIXES), *TOKENIZER_NAMES]
_TORCH_WEIGHTS = ["*.safetensors"]  # a weight folder without them gets its pytorch_model*.bin (`_pickled_weights`)


def is_hub_id(model: Any) -> bool:
    """``"org/name"``: one slash, a name the Hub takes (`_HUB_ID`), not an existing path."""
    return isinstance(model, str) and bool(_HUB_ID.fullmatch(model)) and not Path(model).expanduser().exists()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, read now rather than at huggingface_hub's import."""
    return env_flag("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def download_model(
    repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
    runtime: str = "torch", onnx_file: str | os.PathLike | None = None,
) -> Path:  # fmt: skip
    """The local snapshot of ``repo_id``: from the cache when it is there (no network), else downloaded once."""
    for name, value in (("revision", revision), ("cache_dir", cache_dir)):
        if value is not None and os.fspath(value) == "":  # ("$UNSET": main, and the current folder as the cache)
            raise OptionError(f"{spell(name, '')} names no {name.replace('_', ' ')}; leave it out for the default")
    why = f"loading the Hub model {repo_id!r} needs huggingface_hub: pip install huggingface_hub"
    hub = require("huggingface_hub", why)
    names: list[str] = []  # where `find_onnx_file` looks in the Transformer folder: onnx/NAME, then NAME
    if runtime == "onnx":
        given = None if onnx_file is None else Path(onnx_file).as_posix()
        names = ["onnx/model.onnx"] if given is None else [f"onnx/{given}", given]
    options: dict[str, Any] = {
        "revision": revision,
        "cache_dir": None if cache_dir is None else str(Path(cache_dir).expanduser()),
        "allow_patterns": [*_SMALL_FILES, *(_onnx_patterns(names) if names else _TORCH_WEIGHTS)],
    }
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    cache = options["cache_dir"] or "the Hugging Face cache"
    online = not hub_offline()
    try:
        path = Path(hub.snapshot_download(repo_id, local_files_only=True, **options))
    except Exception as err:  # not cached (LocalEntryNotFoundError and friends): download, unless offline
        if not online:
            raise ModelFolderError(
                f"model {where} is not in {cache} and HF_HUB_OFFLINE is set, so it cannot be downloaded "
                f"(unset HF_HUB_OFFLINE to download it once, or pass a local folder) [{type(err).__name__}]"
            ) from None
        path = None
    files = _in_transformer(path, names)
    # a cached snapshot without weights is partial (transformers fetches a repo file by file): completed online
    if path is None or (online and _weightless(path, files)):
        path = _download(hub, repo_id, options, where, cache)
        # a Transformer module in a subfolder (its modules.json came now): its own onnx/ files, a second step
        if (files := _in_transformer(path, names)) != names and _weightless(path, files):
            path = _download(hub, repo_id, {**options, "allow_patterns": _onnx_patterns(files)}, where, cache)
    if online and runtime == "onnx" and onnx_file is None and not (path / files[0]).is_file():
        return download_model(repo_id, revision=revision, cache_dir=cache_dir)  # the weights an export is made from
    pickled = _pickled_weights(path) if runtime == "torch" and online else []
    return _download(hub, repo_id, {**options, "allow_patterns": pickled}, where, cache) if pickled else path


def _onnx_patterns(files: list[str]) -> list[str]:
    """The ONNX ``files`` with their external data (under the names `onnx_data_files` looks for)."""
    return [f"{file}{end}" for file in files for end in ("", "_data", ".data")]


def _in_transformer(path: Path | None, names: list[str]) -> list[str]:
    """``names`` (paths inside the Transformer module's folder) as paths inside the snapshot ``path``."""
    from .modules import transformer_dir

    inner = transformer_dir(path) if path is not None and names else ""
    return [str(PurePosixPath(inner, name)) for name in names] if inner else names


def _weightless(path: Path, onnx_files: list[str]) -> bool:
    """Whether a snapshot has neither an ONNX file of ``onnx_files`` nor each weight folder's torch weights."""
    return not any((path / file).is_file() for file in onnx_files) and bool(_pickled_weights(path))


def _pickled_weights(path: Path) -> list[str]:
    """Patterns of the ``pytorch_model*.bin`` weights of the snapshot's weight folders (the transformers model's:
    a config.json with a model_type, the root's when it has one; each Dense / LayerNorm module's) that have neither
    safetensors nor those files yet: a repository often holds both formats (and OpenVINO .bin files), and only one
    is read."""
    from .modules import read_post_modules
    from .safety import read_json_file

    try:
        typed = [
            folder.relative_to(path).as_posix() for folder in (path, *path.iterdir())
            if (folder / "config.json").is_file() and "model_type" in read_json_file(folder / "config.json", object_only=True)
        ]  # fmt: skip
        # (the model at the root: another folder's config, such as BAAI/bge-m3's onnx/, comes with no torch weights)
        folders = set(typed[:1] if typed[:1] == ["."] else typed)
        folders |= {module.path for module in read_post_modules(path) if module.kind != "Normalize"}
    except (OSError, ValueError):  # a malformed config: the Encoder names it once the folder is read
        folders = {"."}
    return [
        str(PurePosixPath(folder, "pytorch_model*.bin")) for folder in sorted(folders)
        if not any((path / folder).glob("*.safetensors")) and not any((path / folder).glob("pytorch_model*.bin"))
    ]  # fmt: skip


def _download(hub: Any, repo_id: str, options: dict[str, Any], where: str, cache: str) -> Path:
    """`snapshot_download` from the Hub; its failures as a `ModelFolderError` naming the model."""
    try:
        return Path(hub.snapshot_download(repo_id, **options))
    except Exception as err:
        from huggingface_hub import errors as hub_errors

        kind = type(err).__name__
        named = (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError, hub_errors.HFValidationError)
        if isinstance(err, named):  # GatedRepoError is a RepositoryNotFoundError
            raise ModelFolderError(
                f"cannot download model {where}: {kind} (a typo, a private or gated model — log in with "
                f"'hf auth login' — or a wrong revision)"
            ) from None
        raise ModelFolderError(f"cannot download model {where} into {cache}: {kind}: {err}") from None
