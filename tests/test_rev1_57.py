"""Stop 57 review: the Hub download's completion of cached snapshots, `tokenpool inspect`'s refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_integ57 import _Hub, online_hub  # noqa: F401  (the fixture, used by name)

from tokenpool.model.folders import bundled_model_path

_ONNX_REPO = {"config.json": b'{"model_type": "bert", "hidden_size": 8}', "tokenizer.json": b"{}",
              "onnx/model.onnx": b"graph", "model.safetensors": b"torch weights",
              "onnx/config.json": b'{"model_type": "bert", "hidden_size": 8}'}  # fmt: skip


class _CountingHub(_Hub):
    """`_Hub` that records the allow_patterns of every call that would reach the Hub."""

    def __init__(self, repo: dict[str, bytes], snapshot: Path) -> None:
        super().__init__(repo, snapshot)
        self.asked: list[list[str]] = []

    def __call__(self, repo_id, *, local_files_only=False, allow_patterns=(), **options):
        if not local_files_only:
            self.asked.append(list(allow_patterns))
        return super().__call__(repo_id, local_files_only=local_files_only, allow_patterns=allow_patterns, **options)


def _cached(snapshot: Path, names: tuple[str, ...]) -> Path:
    """A snapshot folder holding ``names`` of `_ONNX_REPO` (as an earlier, partial download left it)."""
    for name in names:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(_ONNX_REPO[name])
    return snapshot


def test_a_weightless_cached_snapshot_gets_the_repos_onnx_file(tmp_path, monkeypatch, online_hub):  # noqa: F811
    """Online, a cached snapshot without weights (config and tokenizer only, as transformers' file-by-file fetch
    leaves it) is completed (docs/runtimes.md) — but only for the torch runtime: the onnx runtime took it as it
    was and, finding no onnx/model.onnx, fetched the torch weights to export them, never the repo's own ONNX file."""
    import huggingface_hub

    from tokenpool.model.hub import download_model

    online_hub(_ONNX_REPO, _cached(tmp_path / "snapshot", ("config.json", "tokenizer.json")))
    folder = download_model("org/exported", runtime="onnx")
    assert (folder / "onnx" / "model.onnx").read_bytes() == b"graph"
    assert not (folder / "model.safetensors").exists()  # nothing to export: the repo's file is run
    # complete now: a later online load asks the Hub nothing
    hub = _CountingHub(_ONNX_REPO, folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    assert download_model("org/exported", runtime="onnx") == folder and hub.asked == []


@pytest.mark.parametrize(
    ("runtime", "cached"),
    [("torch", ("config.json", "model.safetensors")), ("onnx", ("config.json", "onnx/model.onnx")),
     ("onnx", ("config.json", "model.safetensors")),  # (a torch run's snapshot: the onnx runtime exports it)
     ("torch", ("config.json", "model.safetensors", "onnx/config.json", "onnx/model.onnx"))],  # (BAAI/bge-m3's onnx/)
)  # fmt: skip
def test_a_complete_cached_snapshot_asks_the_hub_nothing_online(tmp_path, monkeypatch, runtime, cached):
    """"later loads find it in the cache without any network call" (docs/runtimes.md), online too: the
    completion of weightless snapshots must not ask the Hub for a snapshot that has its runtime's weights. A
    repo's onnx/ folder with its own config.json (BAAI/bge-m3's) counted as a torch weight folder without weights,
    so every online torch load of such a complete snapshot asked the Hub twice; only the Transformer module's
    folder (and the Dense ones) are weight folders now."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from tokenpool.model.hub import download_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub = _CountingHub(_ONNX_REPO, _cached(tmp_path / "snapshot", cached))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    assert download_model("org/exported", runtime=runtime) == tmp_path / "snapshot"
    assert hub.asked == []


@pytest.mark.parametrize("size", [-5, 0])
def test_inspect_refuses_a_vocab_size_the_encoder_refuses(tmp_path, run, size):
    """The Encoder refuses any model whose config.json vocab_size is not a positive integer (`_config_size`: a
    dense model's too, whose ids are checked against it); inspect checked only the size it pools (hidden_size
    for a dense model) and printed a full report for such a folder. Now exit 2, one line naming file and key."""
    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    folder = Path(shutil.copytree(bundled_model_path(), tmp_path / "model"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": size}), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"config.json: vocab_size must be a positive integer, got {size}"):
        Encoder(folder, device="cpu")
    code, out, err = run("inspect", folder)
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert f"{folder / 'config.json'}: vocab_size must be a positive int" in err and f"got {size}" in err

