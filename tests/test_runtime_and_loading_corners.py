"""Corners of model loading and the runtimes: the ONNX export cache follows the folder's weights (rewritten in
place with the same size and mtime, or sharded), checked against the torch runtime on the same folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

TEXTS = ["a short one", "a somewhat longer sentence about the weather", "x"]


def _vectors(folder: Path, runtime: str) -> np.ndarray:
    from tokenpool import Encoder

    return Encoder(folder, runtime=runtime, device="cpu").encode(TEXTS)


def _rewrite_in_place(source: Path, target: Path, *, keep_mtime: bool) -> None:
    """``target``'s bytes replaced by ``source``'s in the same inode, its mtime restored when asked."""
    before = target.stat()
    with open(source, "rb") as src, open(target, "r+b") as dst:
        dst.truncate(0)
        shutil.copyfileobj(src, dst)
    if keep_mtime:
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_cached_export_is_not_reused_after_weights_rewritten_with_same_size_and_mtime(tmp_path, monkeypatch):
    from tinymodels import bert_weights

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = bert_weights(tmp_path / "bert", seed=0)
    other = bert_weights(tmp_path / "other", seed=1)
    np.testing.assert_allclose(_vectors(folder, "onnx"), _vectors(folder, "torch"), atol=1e-5)
    weights = folder / "model.safetensors"
    assert weights.stat().st_size == (other / "model.safetensors").stat().st_size
    _rewrite_in_place(other / "model.safetensors", weights, keep_mtime=True)
    torch_vectors = _vectors(folder, "torch")
    np.testing.assert_allclose(torch_vectors, _vectors(other, "torch"), atol=1e-6)  # torch reads the new weights
    np.testing.assert_allclose(_vectors(folder, "onnx"), torch_vectors, atol=1e-5)


def test_cached_export_follows_sharded_weights(tmp_path, monkeypatch):
    import torch
    from tinymodels import bert_weights
    from transformers import BertModel

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = bert_weights(tmp_path / "bert", seed=0)
    (folder / "model.safetensors").unlink()
    torch.manual_seed(0)
    BertModel.from_pretrained(bert_weights(tmp_path / "seed0", seed=0)).save_pretrained(folder, max_shard_size="1MB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    np.testing.assert_allclose(_vectors(folder, "onnx"), _vectors(folder, "torch"), atol=1e-5)
    BertModel.from_pretrained(bert_weights(tmp_path / "seed1", seed=1)).save_pretrained(
        tmp_path / "sharded1", max_shard_size="1MB"
    )
    for shard in shards:
        _rewrite_in_place(tmp_path / "sharded1" / shard.name, shard, keep_mtime=False)
    torch_vectors = _vectors(folder, "torch")
    np.testing.assert_allclose(_vectors(folder, "onnx"), torch_vectors, atol=1e-5)


def test_an_export_finished_first_by_another_process_is_used(tmp_path, monkeypatch):
    """Two jobs (or Ray workers) exporting the same new folder at once: the one that links its file second
    uses the first one's (both are the same export) instead of failing with 'already exists'."""
    from tinymodels import bert_weights

    from tokenpool.model import onnx

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = bert_weights(tmp_path / "bert", seed=0)
    load, raced = onnx._load_for_export, []

    def other_process_finishes_first(where: Path, trust: bool):
        model = load(where, trust)
        if not raced:  # while this export runs, another one of the same folder lands in the cache
            raced.append(onnx.cached_export_path(where))
            onnx.export_onnx(where, raced[0])
        return model

    monkeypatch.setattr(onnx, "_load_for_export", other_process_finishes_first)
    vectors = _vectors(folder, "onnx")
    assert raced and raced[0].is_file()
    np.testing.assert_allclose(vectors, _vectors(folder, "torch"), atol=1e-5)


@pytest.mark.parametrize("device", ["meta", "mps", "xpu"])
def test_a_device_this_machine_cannot_run_is_a_value_error_before_the_weights_load(tmp_path, monkeypatch, device):
    """A device torch names but cannot use here fails like a misspelt one (ValueError: CLI exit 2), before the
    weights are read (the weights file is made unreadable to show that)."""
    import torch
    from tinymodels import bert_weights

    from tokenpool import Encoder

    if device != "meta":  # only devices torch cannot use on this machine (mps on a Mac, xpu with an Intel GPU can)
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError):
            pass
        else:
            pytest.skip(f"torch can use {device} here")
    folder = bert_weights(tmp_path / "bert")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"device '{device}'"):
        Encoder(folder, device=device)
