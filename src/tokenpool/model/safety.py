"""Model folders are data, never code: an ``auto_map`` (Python files transformers would import) is refused
unless ``trust_remote_code=True``, transformers always gets an explicit ``trust_remote_code`` (it never asks),
and pickled weights are read only with ``torch.load(weights_only=True)``. Imports no framework.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnsafeModelFolderError, check_bool

__all__ = [
    "CODE_CONFIG_FILES", "check_no_remote_code", "check_bool_option", "pickle_refusal", "read_json_file",
    "read_json_object", "read_regular_file", "is_present", "check_regular_files",
]  # fmt: skip

NOT_REGULAR = "a named pipe, device, socket or folder, not a regular file"
# the most bytes tokenpool reads of a folder's JSON file (the largest real ones, tokenizer configs with every added
# token, are a few MiB): a larger (say sparse) file is refused by its size, never read whole into memory
MAX_JSON_BYTES = 64 << 20
# tokenizer.json's (read whole by the tokenizers library): Gemma 3's is some 32 MiB, a million-piece vocabulary's
# (XLM-V's 901,629 Unigram pieces, saved as tokenizers saves them: indented, lines per piece) some 60 MiB
MAX_TOKENIZER_JSON_BYTES = 512 << 20
# the files of a folder in which transformers looks for ``auto_map`` (code to import)
CODE_CONFIG_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")


def check_bool_option(name: str, value: Any) -> bool:
    """A safety switch's ``value`` as a bool (`errors.check_bool`, numpy's too): a truthy string such as "no"
    must not switch it on, and None is no answer."""
    return check_bool(name, value, or_none=False)


def read_regular_file(file: Path, limit: int = -1) -> bytes:
    """The bytes of ``file``, a regular file (or a symlink to one) of at most ``limit`` bytes (-1: any size). It is
    opened without blocking and anything else is an `OSError`, never read: a named pipe would wait for a writer
    forever, a device such as /dev/zero never ends, a larger file (EFBIG) would fill the memory."""
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:  # (checked before open(): on a folder it failed naming the descriptor, "Is a directory: 3", and kept it)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, NOT_REGULAR, str(file))
        if 0 <= limit < info.st_size:
            raise OSError(errno.EFBIG, _over(info.st_size, limit), str(file))
        with open(fd, "rb", closefd=False) as fh:
            return fh.read(limit)  # (-1: all; a file grown since is cut at the limit)
    finally:
        os.close(fd)


def _over(size: int, limit: int) -> str:
    return f"{size:,} bytes, over the {limit:,} tokenpool reads"


def check_regular_files(folder: Path, names: Iterable[str]) -> None:
    """`ConfigError` naming the first of ``names`` in ``folder`` that is there (`is_present`) but is no regular
    file (or link to one): a library reading it would wait on a pipe forever, or take it for absent and read
    another file (transformers: a pipe ``tokenizer.json`` made it build the tokenizer from ``vocab.txt``); or
    a JSON file over `MAX_JSON_BYTES` (tokenizer.json: `MAX_TOKENIZER_JSON_BYTES`), which the library would read
    whole (tokenizer.json: the tokenizers')."""
    for file in (folder / name for name in names):
        if is_present(file) and not file.is_file():
            why = NOT_REGULAR if file.exists() else "a dangling link"
            raise ConfigError(f"{file}: {why}; tokenpool reads only regular files from a model folder")
        cap = MAX_TOKENIZER_JSON_BYTES if file.name == "tokenizer.json" else MAX_JSON_BYTES
        if file.suffix == ".json" and file.is_file() and (size := file.stat().st_size) > cap:
            raise ConfigError(f"{file}: {_over(size, cap)} of a JSON file")


def is_present(path: Path) -> bool:
    """Whether anything is at ``path``: a file, folder, pipe, device or link (a dangling one too). A config file
    that is there but is no regular file is refused when read (`read_regular_file`), never taken for absent:
    that would pick another layout or pooling (drop a Normalize module, say) without a word."""
    return os.path.lexists(path)


def read_json_file(file: Path, *, object_only: bool = False, missing: str | None = None) -> Any:
    """``file``'s JSON (`read_regular_file`); a `ConfigError` naming it when it is not readable JSON or,
    ``object_only``, not a JSON object, and the message ``missing`` when it does not exist (when given)."""
    try:
        data = json.loads(read_regular_file(file, MAX_JSON_BYTES))
    except FileNotFoundError as exc:
        raise ConfigError(missing or f"{file}: not readable JSON ({exc})") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise ConfigError(f"{file}: not readable JSON ({exc})") from None
    if object_only and not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a JSON object, got {type(data).__name__}")
    return data


def read_json_object(file: Path) -> dict[str, Any]:
    """``file``'s JSON object (`read_json_file`), ``{}`` when nothing is at ``file`` (`is_present`)."""
    return read_json_file(file, object_only=True) if is_present(file) else {}


def check_no_remote_code(
    folder: Path, trust_remote_code: bool, files: tuple[str, ...] = CODE_CONFIG_FILES
) -> None:
    """`UnsafeModelFolderError` naming the file when one of ``files`` of ``folder`` asks for its own code and the
    caller did not trust it; a config file that is not a JSON object (or no regular file) is a `ConfigError`."""
    if trust_remote_code:
        return
    for name in files:
        file = folder / name
        data = read_json_object(file)  # (a pipe or folder there is refused: transformers would take it for absent)
        if "auto_map" in data:
            classes = data["auto_map"]
            shown = ", ".join(sorted(map(str, classes)))[:120] if isinstance(classes, dict) else repr(classes)[:120]
            raise UnsafeModelFolderError(
                f"{file} has an 'auto_map' ({shown}): loading it would run Python code from the model folder; "
                f"tokenpool refuses unless you trust that code (trust_remote_code=True / --trust-remote-code)"
            )


def pickle_refusal(folder: Path, exc: BaseException) -> UnsafeModelFolderError | None:
    """The refusal to raise when loading ``folder`` failed because a pickled weights file holds more than
    tensors (torch.load with weights_only=True stopped it), else None."""
    text = f"{type(exc).__name__}: {exc}"
    if "UnpicklingError" in text or "Weights only load failed" in text or "weights_only" in text:
        names = sorted(p.name for p in folder.glob("*.bin"))
        return UnsafeModelFolderError(
            f"refusing to unpickle {', '.join(names) or 'the weights'} in {folder}: the file holds objects other "
            f"than tensors (tokenpool loads .bin weights only with torch.load(weights_only=True)); convert the "
            f"weights to model.safetensors"
        )
    return None
