"""The ONNX Runtime runner: a model folder's ONNX file run by onnxruntime, numpy arrays in and out, no torch
(``pip install 'tokenpool[onnx]'``). The file: ``onnx_file``, else ``onnx/model.onnx``, else an export cached
once under ``$TOKENPOOL_CACHE`` (default ``~/.cache/tokenpool``; exporting needs torch and transformers).
Encoder graphs only (last hidden state): not SPLADE, nor ``token_type_ids`` of `UNTYPED_TOKEN_TYPES`."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..core.fast import usable_cpus
from ..errors import ConfigError, CorpusError, ModelFolderError, OptionError, is_int, one_line, require
from . import unpadded
from .configs import WIDTH_KEYS, config_size, text_merged
from .folders import MODEL_CONFIG, code_repo_files, file_digest, onnx_weights_only
from .options import DTYPE_NAMES, check_dtype, device_parts, spell
from .runners import POSITION_KEYS, Runtime, position_keys, transformers_config
from .safety import check_bool_option, check_no_remote_code, is_present, read_json_file

__all__ = [
    "ONNX_RUNTIME", "OnnxRunner", "read_model_config", "find_onnx_file", "export_onnx", "cached_export_path",
    "export_to_cache", "link_into_place", "onnx_data_files", "ONNX_INPUTS", "UNTYPED_TOKEN_TYPES", "export_sources",
    "check_export_source", "record_weights", "unlink_if_same", "linked_beside", "work_folder",
]  # fmt: skip

logger = logging.getLogger(__name__)

# metadata key of the record tokenpool writes into files it made (`tokenpool.model.onnx_export`)
RECORD_KEY = "tokenpool.export"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_HIDDEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
# the input dtypes a graph may declare (ids, masks, types and positions are fed in its own)
_INPUT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
                 "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}  # fmt: skip
# the files an export is made from: config.json and the weights (shards and their index too), and the folder's
# own code and other repos' where its config names some (`_sources`); the export cache's key and an export's
# record name them
EXPORT_SOURCES = ("config.json", "*.safetensors", "*.bin", "*.index.json")
# each folder's `_sources`, and its config.json object under that file's path, while an `OnnxRunner` loads
# (`_sources_read_once`): None outside one
_LOADING_SOURCES: contextvars.ContextVar[dict[Path, Any] | None] = contextvars.ContextVar("_LOADING_SOURCES")
EXPORT_WORK_PREFIX = ".tokenpool-export-"  # the temporary folder an export is made in, beside its target
# model types whose forward takes ``token_type_ids`` but has no token-type table: it looks them up in its word
# embeddings (GPT-2 adds wte[id] for each), so any ids — zeros too — change every token's state, and only leaving
# them out (None) gives the model's own output. Their graphs must not take them (`_check_token_types`).
UNTYPED_TOKEN_TYPES = frozenset({
    "gpt2", "gpt-sw3", "gpt_neo", "gpt_bigcode", "gptj", "codegen", "openai-gpt", "ctrl", "imagegpt", "xlm", "flaubert",
})  # fmt: skip
# model types whose attention depends on the sequence length in Python (Longformer pads to its attention window,
# a block-sparse BigBird switches to full attention on short inputs, a transient-global LongT5 counts its global
# blocks): a graph traced at one length gives other hidden states at others, so `export_onnx` refuses them
# (`_traced_at_one_length`)
LENGTH_TRACED_TYPES = frozenset({"longformer", "big_bird", "longt5"})


def read_model_config(folder: Path) -> SimpleNamespace:
    """The text model's config.json as attributes (hidden_size, vocab_size, max_position_embeddings and the
    position_key it is saved under, model_type, pad_token_id: where RoBERTa-like positions start, position_pad:
    the one a graph's position_ids start after), read as JSON; a size or pad id not saved is transformers'
    default where it builds the config (`runners.transformers_config`)."""
    path = folder / "config.json"
    if not is_present(path):  # (as `check_files` names it, not as an unreadable file)
        raise ModelFolderError(f"model folder {str(folder)!r} is missing {MODEL_CONFIG}")
    try:
        data = read_json_file(path, object_only=True)
    except ConfigError as err:
        raise ModelFolderError(f"cannot read the model config: {err}") from None
    merged = text_merged(data)
    for key in (*WIDTH_KEYS, *POSITION_KEYS):  # ("512", 512.0, true: transformers refuses them on torch)
        if merged.get(key) is not None and not is_int(merged[key]):
            raise ModelFolderError(f"{path}: {key} must be an integer, got {merged[key]!r:.40}")
    width = config_size(data)
    keys = position_keys(merged.get("model_type"))
    position_key = next((k for k in keys if isinstance(merged.get(k), int)), None)  # (named by inspect)
    # a size not saved is read as torch reads it, from the one config transformers builds
    # (`runners.transformers_config`); so is a RoBERTa-like pad id, which its position limit follows (514
    # positions: 512 tokens after the pad id 1)
    model_type = str(merged.get("model_type", ""))
    pad_unsaved = model_type in unpadded.PAD_OFFSET_POSITION_TYPES and "pad_token_id" not in merged
    size_unsaved = width is None or "vocab_size" not in merged or (keys and position_key is None)
    built = transformers_config(data) if size_unsaved or pad_unsaved else None
    if width is None:  # none saved (transformers' default), or null (transformers' None: refused)
        width = getattr(built, "hidden_size", None)
    if not is_int(width):
        raise ModelFolderError(f"{path} names no hidden size (one of {', '.join(WIDTH_KEYS)})")
    positions = merged.get(position_key)
    if position_key is None and built is not None:  # (transformers' default, or T5Gemma2's nested one)
        position_key = next((k for k in keys if is_int(getattr(built, k, None))), None)
        positions = position_key and getattr(built, position_key)
    # as saved (checked by the encoder as on the torch runtime); none saved: transformers' default, as torch reads it
    vocab = merged["vocab_size"] if "vocab_size" in merged else getattr(built, "vocab_size", None)
    pad = merged["pad_token_id"] if "pad_token_id" in merged else getattr(built, "pad_token_id", None)
    # a graph's position_ids are numbered from a saved pad id, or from the default one read with a default size
    position_pad = pad if "pad_token_id" in merged or size_unsaved else None
    return SimpleNamespace(
        hidden_size=width, vocab_size=vocab, max_position_embeddings=positions, position_key=position_key,
        model_type=model_type, pad_token_id=pad, position_pad=position_pad, raw=data,
    )  # fmt: skip


def cached_export_path(folder: Path, *, writing: bool = False) -> Path:
    """Where ``folder``'s export is cached: keyed by its path and the size, mtime, inode and ctime of the files
    it is made from (`_sources`; ``cp -p`` restores the mtime); `UNTYPED_TOKEN_TYPES` add a mark (older
    exports took types), and a model `_traced_at_one_length` another (its older exports were traced at one
    length: never read, refused now).
    ``writing``: an `OptionError` naming $TOKENPOOL_CACHE when a file is in the way of the cache folder."""
    key = hashlib.sha256(str(folder.resolve()).encode())
    config, files = _sources(folder)
    for name, path in files.items():
        stat = None if path is None else path.stat()
        key.update(f"{name}:{stat and (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)}".encode())
    model_type = str(text_merged(config).get("model_type", ""))  # (no mark without a readable config.json)
    if model_type in UNTYPED_TOKEN_TYPES:
        key.update(b"\0without token_type_ids")
    if _traced_at_one_length(model_type, config.get):
        key.update(b"\0not traced")
    cache = Path(os.environ.get("TOKENPOOL_CACHE") or Path.home() / ".cache" / "tokenpool").expanduser()
    if writing and (file := next((p for p in (cache, *cache.parents) if p.exists() and not p.is_dir()), None)):
        raise OptionError(f"the ONNX export cache $TOKENPOOL_CACHE ({str(cache)!r}; default ~/.cache/tokenpool) "
                          f"must be a folder: {str(file)!r} is a file")  # fmt: skip
    return cache / "onnx" / key.hexdigest()[:24] / "model.onnx"


def export_sources(folder: Path) -> dict[str, Any]:
    """What an export of ``folder`` is made from, for its record: the sha256 of each file of `EXPORT_SOURCES`
    (``digests``) and its size and mtime in ns (``stamps``, taken first: a change while it is hashed shows later),
    which `check_export_source` compares to spare the hashing while they are unchanged."""
    files = _sources(folder)[1]
    stamps = {name: p and _size_and_time(p) for name, p in files.items()}
    return {"digests": {name: p and file_digest(p) for name, p in files.items()}, "stamps": stamps}


def _sources(folder: Path) -> tuple[dict[str, Any], dict[str, Path | None]]:
    """``folder``'s config.json object (``{}``: none, or not an object) and the files of `EXPORT_SOURCES` by
    name, and when that config has an ``auto_map`` the code a trusted export runs (transformers copies those
    modules and their relative imports): its top-level ``*.py``, and those of other repos it names, by
    absolute path (`code_repo_files`; None: a module found nowhere). Read once per folder while a runner
    loads, the config not again (the one the runner read)."""
    memo = _LOADING_SOURCES.get(None)
    if memo is not None and folder in memo:
        return memo[folder]
    try:
        config = (memo or {}).get(folder / "config.json") or read_json_file(folder / "config.json", object_only=True)
    except ConfigError:  # (no config.json, or not a JSON object: no model class of its own)
        config = {}
    code = ("*.py",) if "auto_map" in config else ()
    files = sorted({p for pattern in (*EXPORT_SOURCES, *code) for p in folder.glob(pattern) if p.is_file()})
    repos = code_repo_files(folder / "config.json") if code else {}
    found = config, {**{p.name: p for p in files}, **repos}
    if memo is not None:
        memo[folder] = found
    return found


@contextlib.contextmanager
def _sources_read_once() -> Iterator[None]:
    """Each folder's `_sources` read once in the block (an `OnnxRunner`'s load: its export cache's key, then
    the check of its file's record)."""
    token = _LOADING_SOURCES.set({})
    try:
        yield
    finally:
        _LOADING_SOURCES.reset(token)


def _size_and_time(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def record_weights(record: Any) -> dict[str, Any] | None:
    """The folder files (``digests``, and ``stamps`` where recorded) that tokenpool's ``record`` of an ONNX file
    says it was made from: its source's (an export), or the ``weights`` its source carried (a variant); None
    for a record that names none."""
    source = record.get("source") if isinstance(record, dict) else None
    made = source.get("weights", source) if isinstance(source, dict) else None
    return made if isinstance(made, dict) and isinstance(made.get("digests"), dict) else None


def check_export_source(path: Path, record: Any, folder: Path) -> None:
    """A `ModelFolderError` when the record of the ONNX file ``path`` (none: nothing checked) names files of
    ``folder`` (its source's digests; a variant's: those of the weights its fp32 source was exported from;
    other repos' code its ``auto_map`` names too: `_sources`) whose bytes are not those any more: the
    graph is not this folder's model. A file is hashed only when its size or mtime differs from the record's
    stamps (or the record has none); files not found now (an ONNX-only folder) are not compared."""
    made = record_weights(record)
    if made is None:
        return
    stamps = made.get("stamps") if isinstance(made.get("stamps"), dict) else {}
    changed, files = [], _sources(folder)[1]  # (only files found now: a record names no other file to read)
    for name, then in sorted(made["digests"].items()):
        file = files.get(str(name))
        if file is None or stamps.get(name) == _size_and_time(file):
            continue
        now = file_digest(file)
        if now != then:
            changed.append(f"{name} ({then} then, {now} now)")
    if changed:
        raise ModelFolderError(
            f"the ONNX file {path} was exported from other files than {folder} holds now: {'; '.join(changed)}; "
            "it would not give this model's vectors. Export the folder again to a new file ('tokenpool "
            "export-onnx FOLDER --output NEW.onnx', or move the old file aside first) and remake its variants"
        )


def find_onnx_file(folder: Path, onnx_file: str | os.PathLike | None) -> Path | None:
    """The ONNX file to run: ``onnx_file`` (a name in the folder's onnx/, the folder, the working directory or
    its export cache), else onnx/model.onnx, else a cached export; None when there is none yet."""
    if onnx_file is not None:
        if not isinstance(onnx_file, (str, os.PathLike)):
            raise TypeError(f"onnx_file must be a file name or path, got {type(onnx_file).__name__}")
        if not os.fspath(onnx_file):  # (Path("") is ".", a folder nobody named)
            raise OptionError(f"{spell('onnx_file', onnx_file)} is empty: name an ONNX file, or give none")
        given = Path(onnx_file).expanduser()
        places = (folder / "onnx" / given, folder / given, given)  # (absolute: ``given``)
        found = next((c for c in places if c.is_file()), None)
        if found is not None:
            return found
        if folders := [c for c in places if c.is_dir()]:
            raise ModelFolderError(
                f"{spell('onnx_file')} {str(onnx_file)!r} is a folder ({folders[0]}), not an ONNX file"
            )
        cache = cached_export_path(folder).parent  # (stats the weights and reads the config: only when needed)
        if (cache / given).is_file():
            return cache / given
        present = sorted(p.name for p in (folder / "onnx").glob("*.onnx"))  # [] without the folder
        made = sorted(p.name for p in cache.glob("*.onnx"))
        raise ModelFolderError(
            f"{spell('onnx_file')} {str(onnx_file)!r} not found in {folder / 'onnx'} (present: {present or 'none'}) "
            f"nor in the export cache {cache} (present: {made or 'none'})"
        )
    default = folder / "onnx" / "model.onnx"
    found = default if default.is_file() else cached_export_path(folder)
    return found if found.is_file() else None


def export_onnx(folder: Path, target: Path, *, opset: int = 17, trust_remote_code: bool = False) -> Path:
    """Export ``folder``'s transformers model to ``target`` (eager attention, dynamic shapes), never replacing
    a file; ``token_type_ids`` only where zeros mean what none do (`_zero_types_are_default`)."""
    import torch

    from .runners import forward_options

    model = _load_for_export(folder, trust_remote_code)
    options = forward_options(model)

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs, strict=True)), **options)[0]

    # a traced example with padding, so the mask is part of the graph and no shape is taken as constant
    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0
    hidden = _Hidden(model).eval()  # (traced, then checked against its graph on a second example)
    target.parent.mkdir(parents=True, exist_ok=True)
    with work_folder(target.parent) as work:
        partial = Path(work) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:  # (the model's first pass on the example too: it may fail in transformers, as a Nystromformer's)
                names = list(ONNX_INPUTS if _zero_types_are_default(model, ids, mask, options) else ONNX_INPUTS[:2])
                axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
                torch.onnx.export(
                    hidden, (ids, mask, torch.zeros_like(ids))[: len(names)], str(partial),
                    dynamo=False, input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                    opset_version=opset,
                )  # fmt: skip
            except RuntimeError as err:  # (the tracer's own messages name no model, e.g. "unordered_map::at")
                raise RuntimeError(f"torch.onnx.export cannot export the {model.config.model_type} model in {folder} "
                                   f"({one_line(err)[:200]}); run it on the torch runtime") from err  # fmt: skip
            inputs, model_type = _second_example(model.config)[: len(names)], model.config.model_type
            want = hidden(*inputs).numpy()  # (the model's own states on the check's example)
        del model, hidden  # (the weights freed before onnxruntime loads the graph: not twice the model's memory)
        _check_graph(partial, dict(zip(names, (t.numpy() for t in inputs), strict=True)), want, model_type, folder)
        # a model over 2 GiB comes with external weight files, which the graph names relative to itself
        with linked_beside(sorted(set(Path(work).iterdir()) - {partial}), target.parent):
            link_into_place(partial, target)
    return target


def _second_example(config: Any) -> tuple[Any, Any, Any]:
    """The inputs `_check_graph` runs a new graph on: 3 padded rows of 37, 5 and 1 tokens (another batch size and
    other lengths than the traced example; fewer tokens where the model has fewer positions)."""
    import torch

    vocab = getattr(config, "vocab_size", None) or 100
    longest = min(37, (getattr(config, "max_position_embeddings", None) or 39) - 2)  # (past a 16-token block)
    mask = (torch.arange(longest) < torch.tensor([[longest], [5], [1]])).long()
    return (torch.arange(3 * longest).reshape(3, -1) * 7 + 3) % min(vocab, 1000), mask, torch.zeros_like(mask)


def _check_graph(path: Path, feeds: dict[str, np.ndarray], want: np.ndarray, model_type: str, folder: Path) -> None:
    """A `ModelFolderError` when the new graph at ``path`` gives other hidden states than the model's (``want``) at
    the real tokens of `_second_example` (``feeds``), and a `RuntimeError` when onnxruntime cannot run it;
    unchecked without onnxruntime."""
    if not _importable("onnxruntime"):
        return
    import onnxruntime as ort

    real = feeds["attention_mask"].astype(bool)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # (its own log line beside the error: the CLI's error is one line)
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    except Exception as err:  # (onnxruntime's own types: a shape its kernels refuse at another length)
        raise RuntimeError(f"onnxruntime cannot run the {model_type} model exported from {folder} on a second example "
                           f"({one_line(err)[:200]}); use the torch runtime") from err  # fmt: skip
    difference = float(np.max(np.abs(got[real] - want[real])))
    if not difference <= 1e-3 * max(1.0, float(np.max(np.abs(want[real])))):  # (NaN too)
        raise ModelFolderError(
            f"the ONNX export of the {model_type} model in {folder} gives other hidden states than the model on a "
            f"second example of other lengths (max difference {difference:.3g}): the graph depends on the traced "
            "example; use the torch runtime"
        )


def work_folder(folder: Path) -> tempfile.TemporaryDirectory:
    """A temporary folder in ``folder`` to make an export in (`EXPORT_WORK_PREFIX`); when it cannot be made, the
    `OSError` names ``folder`` (the temporary name is one the user never gave)."""
    try:
        return tempfile.TemporaryDirectory(dir=folder, prefix=EXPORT_WORK_PREFIX)
    except OSError as err:
        raise type(err)(err.errno, err.strerror, str(folder)) from None


def _zero_types_are_default(model: Any, ids: Any, mask: Any, options: dict[str, Any]) -> bool:
    """Whether the export takes ``token_type_ids`` (fed as zeros): only when the forward takes them, the model
    type is not in `UNTYPED_TOKEN_TYPES` and zeros give what no ids give on the example batch."""
    import torch

    untyped = getattr(getattr(model, "config", None), "model_type", None) in UNTYPED_TOKEN_TYPES
    if untyped or "token_type_ids" not in unpadded.forward_parameters(model):
        return False
    with torch.no_grad():
        default = model(input_ids=ids, attention_mask=mask, **options)[0]
        try:
            zeros = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), **options)[0]
        except (RuntimeError, IndexError, ValueError):  # (zeros of this shape refused: Tapas takes 7 types a token)
            return False
    return bool(torch.allclose(default, zeros, rtol=0.0, atol=1e-6))


def _load_for_export(folder: Path, trust_remote_code: bool) -> Any:
    """The transformers model of ``folder`` in float32 with eager attention, loaded by the torch runner's
    `load_weights` (``auto_map`` refused unless trusted, ``.bin`` weights as tensors only)."""
    import torch

    from .runners import load_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_weights(
            folder, None, sparse=False, dtype=torch.float32, trust_remote_code=trust_remote_code,
            attn_implementation="eager",
        )  # fmt: skip
    if _traced_at_one_length(model.config.model_type, lambda key: getattr(model.config, key, None)):
        raise ModelFolderError(
            f"{folder}: a {model.config.model_type} model cannot be exported to ONNX by tracing: its attention depends "
            "on the sequence length, so the graph would give other vectors at other lengths; use the torch runtime"
        )
    return model.eval()


def _traced_at_one_length(model_type: str, setting: Callable[[str], Any]) -> bool:
    """Whether an export of a ``model_type`` model (its config's ``setting`` by key) would be traced at one length
    (`LENGTH_TRACED_TYPES`): every Longformer, a BigBird unless its ``attention_type`` is full ("original_full"),
    a LongT5 whose ``encoder_attention_type`` is "transient-global" (its default "local" is not)."""
    return model_type in LENGTH_TRACED_TYPES and {
        "big_bird": setting("attention_type") != "original_full",
        "longt5": setting("encoder_attention_type") == "transient-global",
    }.get(model_type, True)


def onnx_data_files(path: Path) -> list[Path]:
    """The external weights beside the ONNX file ``path`` under the names exporters give them
    (``model.onnx_data``: optimum, onnx; ``model.onnx.data``: torch), that are regular files: what a graph over
    2 GiB reads. Other names a graph may give them are not looked for (that needs the onnx package)."""
    beside = (path.with_name(path.name + "_data"), path.with_name(path.name + ".data"))
    return [p for p in beside if p.is_file()]


def link_into_place(made: Path, target: Path) -> os.stat_result:
    """Put the finished file ``made`` at ``target`` without ever replacing what is there (a hard link fails
    when ``target`` exists, even as a dangling symlink; without hard links, an exclusive create and a copy);
    returns the stat of the file put there (for `unlink_if_same`)."""
    try:
        os.link(made, target)
        return os.stat(made)  # (the same inode as the link)
    except FileExistsError:
        raise CorpusError(f"{target} already exists; tokenpool never replaces it") from None
    except OSError:  # a file system without hard links: exclusive create, then copy (removed if the copy fails)
        created = None
        try:
            with open(made, "rb") as src, open(target, "xb") as dst:
                created = os.fstat(dst.fileno())
                shutil.copyfileobj(src, dst, 1 << 20)
        except FileExistsError:
            raise CorpusError(f"{target} already exists; tokenpool never replaces it") from None
        except BaseException:
            if created is not None:
                unlink_if_same(target, created)
            raise
        return created


def unlink_if_same(path: Path, stat: os.stat_result) -> None:
    """Remove ``path`` while it is still the file ``stat`` describes (same device and inode): a file someone
    else put there meanwhile is left alone."""
    with contextlib.suppress(OSError):  # (already gone)
        if os.path.samestat(os.lstat(path), stat):
            path.unlink()


@contextlib.contextmanager
def linked_beside(files: list[Path], folder: Path) -> Iterator[None]:
    """Link each of ``files`` into ``folder`` under its own name (`link_into_place`: a model's external weight
    files), then run the block; when a link or the block fails, remove the files this linked (`unlink_if_same`)."""
    linked: list[tuple[Path, os.stat_result]] = []
    try:
        for file in files:
            linked.append((folder / file.name, link_into_place(file, folder / file.name)))
        yield
    except BaseException:
        for path, stat in linked:
            unlink_if_same(path, stat)
        raise


class OnnxRunner:
    """An ONNX file run by onnxruntime on the CPU (or CUDA, untested). Outputs are numpy arrays."""

    @_sources_read_once()
    def __init__(
        self, folder: Path, *, sparse: bool, device: str | None, dtype: Any,
        onnx_file: str | os.PathLike | None = None, threads: int | None = None,
        trust_remote_code: bool = False, model_config: Any = None,
    ) -> None:  # fmt: skip
        ONNX_RUNTIME.check(sparse=sparse, post_modules=False, folder=folder)  # (no splade)
        name = str(check_dtype(dtype)).removeprefix("torch.")
        if DTYPE_NAMES.get(name, name) not in ("None", "auto", "float32"):
            raise OptionError(
                f"the onnx runtime runs the ONNX file in its own precision, so it takes no {spell('dtype', dtype)}: "
                f"leave that option out (or give 'float32' / 'auto') and pick a quantized or fp16 file with "
                f"{spell('onnx_file')} instead"
            )
        providers = _providers(device)
        require("onnxruntime", "the onnx runtime needs onnxruntime: pip install 'tokenpool[onnx]'")
        if (config := model_config) is None and (folder / "config.json").is_file():  # (none: an ONNX file alone)
            config = read_model_config(folder)  # (first: a bad one is refused as `open_folder` refuses it)
        if isinstance(raw := getattr(config, "raw", None), dict):  # (the export cache's key and record's check)
            _LOADING_SOURCES.get()[folder / "config.json"] = raw
        path = find_onnx_file(folder, onnx_file)
        if path is None:
            path = export_to_cache(folder, trust_remote_code=trust_remote_code)
        self.path: Path = path.absolute()  # (a copy in another working directory opens the same file)
        self.sparse = False
        self.device: str = "cpu" if len(providers) == 1 else str(device)
        self._loaded = _file_stamp(path)  # (the file as the session read it: what a copy must find again)
        self._digest: str | None = None  # its sha256, taken when the runner is first pickled or copied
        self._threads = threads
        self.session = _session(path, providers, threads)
        check_export_source(path, self.record, folder)  # (tokenpool's record: made from the folder's files now?)
        # two passes at once on one thread each, for calls of two batches or more (`batching.run_passes`)
        cpu_threads = threads or usable_cpus()  # onnxruntime's default thread count follows the cores
        self.parallel_passes = 2 if self.device == "cpu" and cpu_threads >= 2 else 1
        self._pass_threads = max(1, cpu_threads // self.parallel_passes)
        self._providers = providers
        self._pass_session: Any = None
        self._pass_lock = threading.Lock()
        self.input_names = self._check_inputs(path)
        _check_token_types(self.input_names, config, path)
        self._positions = _position_numbering(config, path) if "position_ids" in self.input_names else None
        # a BERT-, GPT-2- or RoBERTa-like model runs a left-padded batch right-padded (`_run`), any graph
        self._right_align = _runs_right_aligned(config)
        hidden = self._hidden_output(path, config)
        self.output_name = hidden.name
        self.dtype = np.dtype(np.float16 if "float16" in str(hidden.type) else np.float32)
        self.model = self.session

    def _check_inputs(self, path: Path) -> list[str]:
        """The session's input names (their dtypes kept for `feed`); a `ModelFolderError` for an input tokenpool
        does not feed, or one of a dtype or fixed size it cannot feed."""
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        unknown = [n for n in names if n not in (*ONNX_INPUTS, "position_ids")]
        if unknown or "input_ids" not in names:
            raise ModelFolderError(
                f"the ONNX file {path} takes inputs {names}; tokenpool feeds input_ids, attention_mask, "
                f"token_type_ids and position_ids (unknown: {unknown})"
            )
        self._input_dtypes = {i.name: _INPUT_DTYPES.get(i.type) for i in inputs}
        odd = [f"{i.name} {i.type} {i.shape}" for i in inputs
               if i.type not in _INPUT_DTYPES or any(is_int(size) for size in i.shape or ())]  # fmt: skip
        if odd:
            raise ModelFolderError(
                f"the ONNX file {path} takes inputs tokenpool cannot feed: {odd}; it feeds batches of any size and "
                f"length (dynamic axes) as {', '.join(sorted(set(_INPUT_DTYPES)))}"
            )
        return names

    def _hidden_output(self, path: Path, config: Any) -> Any:
        """The session's b×L×D hidden-state output (by name, else the first 3-d one); a `ModelFolderError` when
        there is none or its width is not the config's hidden size."""
        outputs = self.session.get_outputs()
        hidden = [o for o in outputs if o.name in _HIDDEN_OUTPUTS]
        hidden = hidden or [o for o in outputs if len(o.shape or ()) == 3]
        if not hidden:
            raise ModelFolderError(f"the ONNX file {path} has no b×L×D output "
                                   f"(outputs: {[o.name for o in outputs]})")  # fmt: skip
        width, expected = (hidden[0].shape or [None])[-1], getattr(config, "hidden_size", None)
        if is_int(width) and is_int(expected) and width != expected:
            raise ModelFolderError(
                f"the ONNX file {path}'s output {hidden[0].name!r} is {width} wide, but the model config's hidden "
                f"size is {expected}: not this model's hidden states (an MLM graph's logits, or another model's graph)"
            )
        return hidden[0]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy (Ray, multiprocessing, pydantic's deep copies) without the sessions, which
        onnxruntime cannot pickle: the file's path, providers, threads and sha256 rebuild them (`__setstate__`).
        A `ModelFolderError` when the file changed since the session read it (a copy could not run the same model)."""
        if self._digest is None and self.path.is_file():
            self._digest = file_digest(*_model_files(self.path))
        if _file_stamp(self.path) != self._loaded:  # (after the digest: a change while it was taken counts)
            raise ModelFolderError(
                f"the ONNX file {self.path} changed since this encoder loaded it, so a copy cannot run the same "
                "model; build a new Encoder from the folder"
            )
        unpicklable = ("session", "model", "_pass_session", "_pass_lock")
        return {name: value for name, value in self.__dict__.items() if name not in unpicklable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A new session of the pickled file, refused (`ModelFolderError`) when the file is not that file any more."""
        self.__dict__.update(state)
        path, stamp = self.path, _file_stamp(self.path)
        # the very file the original loaded (a copy in its process), else one whose bytes are the same
        digest = self._digest if stamp == self._loaded else file_digest(*_model_files(path)) if path.is_file() else None
        if digest != self._digest:
            raise ModelFolderError(
                f"the ONNX file {path} changed since this encoder was pickled ({self._digest} then, "
                f"{digest or 'no file'} now), so the copy cannot run the same model; build a new Encoder"
            )
        self._loaded, self._providers = stamp, _providers(self.device)  # (CUDA's checked in this process)
        self.session = self.model = _session(path, self._providers, self._threads)
        self._pass_session, self._pass_lock = None, threading.Lock()

    @property
    def record(self) -> dict[str, Any] | None:
        """How tokenpool made this file (`tokenpool.model.onnx_export`), from its metadata; None otherwise (a
        value under tokenpool's key that is not a JSON object is not tokenpool's record)."""
        text = self.session.get_modelmeta().custom_metadata_map.get(RECORD_KEY)
        try:
            record = None if text is None else json.loads(text)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def feed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """The session's inputs for a padded batch as `forward` feeds them (also what static quantisation
        calibrates on, so its ranges are those of the activations the runtime computes)."""
        return self._feed(input_ids, attention_mask)[0]

    def _feed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """`feed`, and the column order that right-aligned a left-padded batch (None when it was not moved)."""
        order = None
        if self._right_align and unpadded.left_padded(attention_mask):  # each row's real tokens to its start
            # (positions by column, and the right padding onnxruntime's fused kernels assume)
            order = np.argsort(~attention_mask.astype(bool), axis=1, kind="stable")
            input_ids, attention_mask = (np.take_along_axis(a, order, axis=1) for a in (input_ids, attention_mask))
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:  # (zeros only for a graph that takes them)
            arrays["token_type_ids"] = np.zeros_like(input_ids)
        if self._positions is not None:  # numbered as the model's family numbers them (`_position_numbering`)
            arrays["position_ids"] = self._positions(input_ids, attention_mask)
        names = self.input_names
        return {name: np.ascontiguousarray(arrays[name], dtype=self._input_dtypes[name]) for name in names}, order

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(self.session, input_ids, attention_mask)

    def pass_forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`forward` as one of `parallel_passes` concurrent passes: on a second session of the same file with
        its share of the threads (made at the first such pass; onnxruntime sessions run concurrent calls). When
        the file is no longer the one `session` loaded (replaced or removed since), the passes share `session`:
        every pass runs the loaded model."""
        with self._pass_lock:
            if self._pass_session is None:
                same = _file_stamp(self.path) == self._loaded
                session = _session(self.path, self._providers, self._pass_threads) if same else None
                if session is None or _file_stamp(self.path) != self._loaded:  # (changed while it loaded too)
                    logger.warning("the ONNX file %s changed since it was loaded; side-by-side passes share the "
                                   "loaded model's session", self.path)  # fmt: skip
                    session = self.session
                self._pass_session = session
        return self._run(self._pass_session, input_ids, attention_mask)

    def _run(self, session: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feeds, order = self._feed(input_ids, attention_mask)
        (hidden,) = session.run([self.output_name], feeds)
        if order is not None:  # each row's states back in its own columns
            hidden = np.take_along_axis(hidden, np.argsort(order, axis=1)[..., None], axis=1)
        return hidden, attention_mask

    def inference(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def to_float32_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array, dtype=np.float32)


def _check_token_types(input_names: list[str], config: Any, path: Path) -> None:
    """A `ModelFolderError` for a graph taking ``token_type_ids`` of a model without a token-type table
    (`UNTYPED_TOKEN_TYPES`): no ids give its output — each adds a word embedding to every token."""
    model_type = getattr(config, "model_type", None)
    if "token_type_ids" in input_names and model_type in UNTYPED_TOKEN_TYPES:
        raise ModelFolderError(
            f"the ONNX file {path} takes token_type_ids, but a {model_type} model has no token-type table: it adds "
            "the word embedding of each id to its token (zeros too), so no token_type_ids give the model's own "
            "vectors. Use a graph without that input: move this file aside and tokenpool exports one (torch "
            f"needed), or run 'tokenpool export-onnx FOLDER' and pass the file it writes as {spell('onnx_file')}"
        )


def _position_numbering(config: Any, path: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """How to number a graph's ``position_ids``: from ``pad_token_id`` + 1 for a model type in
    `unpadded.PAD_OFFSET_POSITION_TYPES`, else from 0; a `ModelFolderError` when the config cannot tell (a
    config.json's ``position_pad``, `read_model_config`: a default pad id read for the limit alone is none)."""
    model_type = getattr(config, "model_type", "") or ""
    pad = getattr(config, "position_pad", getattr(config, "pad_token_id", None))
    if model_type in unpadded.PAD_OFFSET_POSITION_TYPES and is_int(pad):
        return functools.partial(_pad_offset_numbering, pad)  # (module-level functions: a runner pickles)
    if model_type and model_type not in unpadded.PAD_OFFSET_POSITION_TYPES:
        return _column_numbering
    needs = "an integer pad_token_id (its positions start after it)" if model_type else "a model_type"
    raise ModelFolderError(
        f"the ONNX file {path} takes position_ids, and tokenpool numbers them by the model's family; the model "
        f"config ({model_type or 'none'}) has no {needs}: add it to config.json"
    )


def _pad_offset_numbering(pad: int, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    return unpadded.pad_offset_positions(input_ids, pad)


def _column_numbering(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    return unpadded.batch_positions(attention_mask)


def _runs_right_aligned(config: Any) -> bool:
    """Whether the model runs a left-padded batch right-aligned: one that numbers a row's tokens by column (a
    BERT-like encoder or a GPT-2-like decoder, `unpadded.COLUMN_POSITION_TYPES`: its real tokens then get what they
    get alone — for a causal model too, the pads after them are masked keys and later columns, which they never
    see), or a RoBERTa-like one (`unpadded.PAD_OFFSET_POSITION_TYPES`), whose positions count real tokens wherever
    they stand but whose fused attention kernels (optimised variants) read the mask as right padding."""
    model_type = getattr(config, "model_type", None)
    return model_type in unpadded.COLUMN_POSITION_TYPES | unpadded.PAD_OFFSET_POSITION_TYPES


def _model_files(path: Path) -> list[Path]:
    """The ONNX file ``path`` and its external weights (`onnx_data_files`): what a copy must find unchanged."""
    return [path, *onnx_data_files(path)]


def _file_stamp(path: Path) -> tuple[tuple[int, ...], ...] | None:
    """The size, mtime, ctime and inode of ``path`` and of its external weight files (None when one is gone):
    what changes when the model's files do."""
    try:
        stats = [p.stat() for p in _model_files(path)]
    except OSError:
        return None
    return tuple((stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino) for stat in stats)


def _session(path: Path, providers: list[str], threads: int | None) -> Any:
    """An onnxruntime session of ``path`` on ``threads`` intra-op threads (None: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        raise ModelFolderError(f"cannot load the ONNX file {path}: {err}") from None


def _providers(device: str | None) -> list[Any]:
    """onnxruntime's providers for ``device`` (`device_parts`, as torch reads it): the CPU's, or CUDA's on the GPU
    ``cuda:N`` names (N = 0 for "cuda")."""
    kind, index = ("cpu", None) if device is None else device_parts(device)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":  # untested: no GPU on the machines this was written on
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise OptionError(
                f"device {device!r} needs onnxruntime's CUDAExecutionProvider (pip install onnxruntime-gpu); "
                f"available: {ort.get_available_providers()}"
            )
        return [("CUDAExecutionProvider", {"device_id": index or 0}), "CPUExecutionProvider"]
    raise OptionError(f"the onnx runtime runs on 'cpu' or 'cuda', got device {device!r} (GPU N: 'cuda:N')")


def export_to_cache(folder: Path, *, trust_remote_code: bool = False) -> Path:
    """The folder's cached export, made now (`export_onnx`) when there is none, or the one another process
    linked into place meanwhile; without torch and transformers a `ModelFolderError` saying how to get one."""
    target = cached_export_path(folder, writing=True)
    if target.is_file():
        return target
    if (file := onnx_weights_only(folder)) is not None:  # (nothing to export: its own ONNX file is named)
        raise ModelFolderError(f"{folder} has no onnx/model.onnx, nor torch weights to export one from: it has only "
                               f"ONNX weights ({file}); pass {spell('onnx_file', file)}")  # fmt: skip
    blocked = [name for name in ("torch", "transformers") if not _importable(name)]
    if blocked:
        raise ModelFolderError(
            f"{folder} has no onnx/model.onnx and exporting one needs {' and '.join(blocked)}: run "
            f"'tokenpool export-onnx {folder}' where torch is installed, or pass {spell('onnx_file')}"
        )
    logger.warning("exporting %s to ONNX once (cached at %s)", folder, target)
    try:
        return export_onnx(folder, target, trust_remote_code=trust_remote_code)
    except CorpusError:
        if target.is_file():  # another process exported the same folder meanwhile (files land finished: linked)
            return target
        raise


def _importable(name: str) -> bool:
    try:
        return name in sys.modules or bool(__import__(name))
    except ImportError:
        return False


def open_folder(folder: Path, options: Any) -> tuple[SimpleNamespace, Any]:
    """The folder's config.json read as JSON and its tokenizer.json (no torch, no transformers). A tokenizer that
    names its own class (``auto_map`` in tokenizer_config.json: it may tokenise unlike tokenizer.json) is refused
    unless trusted (`check_no_remote_code`); none of it runs here. A model class of its own (config.json's
    ``auto_map``, as Jina v2 or nomic folders have) is no matter: the ONNX graph is the model."""
    from .fast_tokenizer import FolderTokenizer

    trust = check_bool_option("trust_remote_code", options.trust_remote_code)
    check_no_remote_code(folder, trust, files=("tokenizer_config.json",))
    return read_model_config(folder), FolderTokenizer(folder)


def build_runner(folder: Path, model_config: Any, options: Any, sparse: bool) -> OnnxRunner:
    return OnnxRunner(
        folder, sparse=sparse, device=options.device, dtype=options.dtype, onnx_file=options.onnx_file,
        trust_remote_code=options.trust_remote_code, model_config=model_config,
    )  # fmt: skip


# the registry entry (`tokenpool.model.runtimes.RUNTIMES`)
ONNX_RUNTIME = Runtime(
    "onnx", open_folder, build_runner,
    no_sparse="it needs the MLM logits, which the ONNX export does not produce",
)  # fmt: skip
