"""Stop 66, model folders / configs / ONNX (s66-folders): the defects settled there, each checked against an
independent reference (transformers' own config, the safetensors library, the torch runtime's quiet load)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tokenpool.errors import ModelFolderError

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` run by this Python in a fresh process with this worktree's src, offline."""
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


# ------------------------------------------------------------------------------------------ quiet transformers


def test_reading_a_config_that_saves_no_position_limit_is_as_quiet_as_the_torch_runtime(tmp_path):
    """The onnx runtime builds transformers' config for a folder that saves no position limit (its default is
    what torch reads); transformers' own log lines were not quieted there as the torch runtime quiets them
    (`runners.quiet_transformers`): a cohere_compass folder printed "`standardize_rope_params` was called but
    no RoPE parameters were found" on stderr, which the torch runtime's read of the same config does not."""
    pytest.importorskip("transformers")
    config = {"model_type": "cohere_compass", "hidden_size": 32, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    torch_read = _python(
        """
        import sys
        from transformers import AutoConfig
        from tokenpool.model.runners import quiet_transformers
        with quiet_transformers():
            AutoConfig.from_pretrained(sys.argv[1], local_files_only=True)
        """,
        str(tmp_path),
    )
    onnx_read = _python(
        """
        import sys
        from pathlib import Path
        from tokenpool.model.onnx import read_model_config
        print(read_model_config(Path(sys.argv[1])).max_position_embeddings)
        """,
        str(tmp_path),
    )
    assert torch_read.returncode == 0 and onnx_read.returncode == 0, torch_read.stderr + onnx_read.stderr
    assert torch_read.stderr == ""
    assert onnx_read.stderr == torch_read.stderr


def test_an_onnx_encode_of_a_folder_that_saves_its_sizes_imports_neither_torch_nor_transformers(tiny, tiny_onnx):
    """With torch and transformers installed (not blocked, as in test_onnx's no-torch run), an ONNX encode of a
    folder whose config.json saves every size reads it as JSON: neither is imported."""
    done = _python(
        """
        import sys
        from tokenpool import Encoder
        encoder = Encoder(sys.argv[1], runtime="onnx", onnx_file=sys.argv[2])
        assert encoder.encode(["a cat sat"]).shape[0] == 1
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """,
        str(tiny), str(tiny_onnx),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ pad id not saved


def _pad_offset_types() -> list[str]:
    transformers = pytest.importorskip("transformers")
    from tokenpool.model.unpadded import PAD_OFFSET_POSITION_TYPES

    known = transformers.models.auto.configuration_auto.CONFIG_MAPPING_NAMES
    return sorted(t for t in PAD_OFFSET_POSITION_TYPES if t in known)


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "camembert", "mpnet", "bert"])
def test_a_folder_saving_every_size_but_no_pad_id_caps_on_onnx_as_on_torch(tmp_path, model_type):
    """A RoBERTa-like config.json saving hidden_size, vocab_size and max_position_embeddings (514) but no
    pad_token_id: torch reads transformers' default pad id (1), so its positions hold 512 tokens; the onnx
    runtime read no pad id and allowed the whole table (514), where the graph's positions run past it."""
    transformers = pytest.importorskip("transformers")
    from tokenpool.model.encoder import resolve_max_length
    from tokenpool.model.onnx import read_model_config

    saved = {"model_type": model_type, "hidden_size": 32, "vocab_size": 100, "max_position_embeddings": 514}
    (tmp_path / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    reference = transformers.AutoConfig.for_model(model_type, **{k: v for k, v in saved.items() if k != "model_type"})
    pad = 1 if model_type == "mpnet" else reference.pad_token_id  # (MPNet's positions always start after 1)
    offset = pad + 1 if model_type in _pad_offset_types() else 0
    no_limits = type("Pooling", (), {"max_seq_length": None})()
    assert resolve_max_length(None, no_limits, None, read_model_config(tmp_path)) == 514 - offset


def test_a_default_pad_id_does_not_number_a_graph_taking_position_ids(tmp_path):
    """The pad id read as torch reads it sets the limit, but a graph that takes position_ids is numbered only
    from a saved one (test_onnx_positions wants that case refused) where config.json saves every size (a
    default size reads the default pad id for the numbering too, as before: test_c66_review)."""
    pytest.importorskip("transformers")
    from tokenpool.model import onnx

    for saved in ({"hidden_size": 32, "vocab_size": 100, "max_position_embeddings": 514},):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta", **saved}), encoding="utf-8")
        config = onnx.read_model_config(tmp_path)
        assert config.pad_token_id == 1
        with pytest.raises(ModelFolderError, match="takes position_ids.*no an integer pad_token_id"):
            onnx._position_numbering(config, tmp_path / "model.onnx")


# ------------------------------------------------------------------------------------------ safetensors


def _safetensors_file(path, tensors: dict[str, tuple[list[int], list[int]]], data: bytes) -> None:
    """A .safetensors file of float32 ``tensors`` (name: (shape, data_offsets)) over the bytes ``data``."""
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": offsets} for name, (shape, offsets) in tensors.items()}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize(
    "tensors",
    [
        {"a": ([4], [0, 16]), "b": ([4], [0, 16])},  # the same bytes twice
        {"a": ([4], [0, 16]), "b": ([2], [8, 16]), "c": ([2], [16, 24])},  # b inside a
        {"a": ([2], [0, 8]), "b": ([2], [16, 24])},  # bytes 8..16 belong to no tensor
        {"a": ([2], [0, 8])},  # bytes 8..24 belong to no tensor
    ],
    ids=["same-bytes", "overlapping", "gap", "unread-tail"],
)
def test_read_safetensors_refuses_the_layouts_the_safetensors_library_refuses(tmp_path, tensors):
    """safetensors requires the tensors' byte ranges to follow one another from 0 to the end of the data;
    tokenpool's numpy reader (Dense / LayerNorm module weights) read overlapping ranges as two tensors."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from tokenpool.model.modules import read_safetensors

    path = tmp_path / "model.safetensors"
    _safetensors_file(path, tensors, np.arange(6, dtype=np.float32).tobytes())
    with pytest.raises(Exception):  # noqa: B017 - the reference library's own error types
        safetensors_numpy.load_file(str(path))
    with pytest.raises(ModelFolderError, match=f"{path}: not readable safetensors.*(overlap|unread|no tensor)"):
        read_safetensors(path)


def test_read_safetensors_still_reads_what_the_safetensors_library_reads(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from tokenpool.model.modules import read_safetensors

    path = tmp_path / "model.safetensors"
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32), "e": np.zeros(0, np.float32)}
    safetensors_numpy.save_file(tensors, str(path))
    ours, theirs = read_safetensors(path), safetensors_numpy.load_file(str(path))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_read_safetensors_refuses_a_file_over_its_size_cap_unread(tmp_path):
    """A Dense weights file had no size cap (config files have `safety.MAX_JSON_BYTES`): a sparse file of
    terabytes was read whole into memory. Refused by its size, naming the file."""
    from tokenpool.model import modules

    path = tmp_path / "model.safetensors"
    with open(path, "wb") as fh:
        fh.truncate(modules.MAX_SAFETENSORS_BYTES + 1)  # (sparse: no disk used)
    with pytest.raises(ModelFolderError, match=f"{path}: not readable safetensors.*bytes, over the"):
        modules.read_safetensors(path)


# ------------------------------------------------------------------------------------------ a mistyped path


def test_a_mistyped_relative_path_that_reads_as_a_hub_id_says_it_is_no_local_folder_either(tmp_path, monkeypatch):
    """``models/mini-lm`` (a typo of ``models/minilm``, beside a ``models`` folder) has the shape of a Hub id, so
    it was looked up on the Hub and the error spoke of the Hugging Face cache only; it now says that the local
    folder ``models`` holds no such folder. (``./models/mini-lm``, ``~/…`` and ``/…`` already read as paths.)"""
    from tokenpool.model.folders import resolve_model_path

    pytest.importorskip("huggingface_hub")
    (tmp_path / "models" / "minilm").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelFolderError, match="not in .*; nor is it a local folder: 'models' holds no 'mini-lm'"):
        resolve_model_path("models/mini-lm")
    for path in ("./models/mini-lm", str(tmp_path / "models" / "mini-lm")):
        with pytest.raises(ModelFolderError, match="model folder .*mini-lm' does not exist"):
            resolve_model_path(path)


# ------------------------------------------------------------------------------------------ one read a load


def test_an_onnx_load_of_an_export_cache_file_reads_the_folders_sources_once(tiny_copy, tiny_onnx, tmp_path, monkeypatch):
    """A file found in the folder's export cache (a variant made by 'tokenpool export-onnx') whose record names
    the folder's files: the cache's key and the record's check each built the folder's sources, and the key
    read config.json once more for its model type — three reads of config.json where one tells it all."""
    import shutil

    from tokenpool.model import onnx

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = tiny_copy
    variant = onnx.cached_export_path(folder).with_name("variant.onnx")
    variant.parent.mkdir(parents=True)
    shutil.copy(tiny_onnx, variant)
    record = {"source": {"folder": str(folder), **onnx.export_sources(folder)}}
    monkeypatch.setattr(onnx.OnnxRunner, "record", property(lambda self: record))
    model_config = onnx.read_model_config(folder)
    reads = []
    original = onnx.read_json_file

    def counted(file, **options):
        reads.append(file)
        return original(file, **options)

    monkeypatch.setattr(onnx, "read_json_file", counted)
    runner = onnx.OnnxRunner(folder, sparse=False, device=None, dtype=None, onnx_file="variant.onnx",
                             model_config=model_config)  # fmt: skip
    assert runner.path == variant.absolute()
    assert reads == []  # (stop 67: none at all; the runner takes the config `model_config` was read from)
    (folder / "model.safetensors").write_bytes(b"other weights")  # the record's check still runs
    with pytest.raises(ModelFolderError, match="was exported from other files"):
        onnx.OnnxRunner(folder, sparse=False, device=None, dtype=None, onnx_file=variant, model_config=model_config)
