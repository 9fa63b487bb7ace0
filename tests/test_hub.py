"""Hub ids with a stubbed huggingface_hub (no network): downloaded once into the cache, revision and cache
dir passed on, HF_HUB_OFFLINE respected, clear errors, only the files a runtime needs requested."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")
import huggingface_hub  # noqa: E402

from tokenpool.errors import ModelFolderError  # noqa: E402
from tokenpool.model.folders import bundled_model_path  # noqa: E402
from tokenpool.model.hub import is_hub_id  # noqa: E402


class FakeHub:
    """A Hub holding one repo (the bundled model's files): snapshot_download copies the allowed files into
    ``cache_dir/<org>--<name>/<revision>`` and serves them from there afterwards, as the real cache does."""

    def __init__(self, default_cache: Path) -> None:
        self.default_cache = default_cache
        self.calls: list[dict] = []
        self.downloads = 0

    def __call__(self, repo_id, *, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None, **kw):
        assert "trust_remote_code" not in kw
        self.calls.append(
            {"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir, "local": local_files_only,
             "allow": allow_patterns}
        )  # fmt: skip
        snapshot = Path(cache_dir or self.default_cache) / repo_id.replace("/", "--") / (revision or "main")
        if snapshot.is_dir():
            return str(snapshot)
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        if repo_id != "org/minilm":
            import httpx

            url = f"https://huggingface.co/api/models/{repo_id}"
            response = httpx.Response(404, request=httpx.Request("GET", url))
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 for {url}", response=response)
        source = bundled_model_path()
        for path in source.rglob("*"):
            relative = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(relative, p) for p in allow_patterns or ["*"]):
                (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, snapshot / relative)
        self.downloads += 1
        return str(snapshot)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub(tmp_path / "default-cache")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return fake


def test_hub_id_is_downloaded_once_then_read_from_the_cache(hub, tmp_path, monkeypatch):
    from tokenpool import Encoder

    cache = tmp_path / "my-cache"
    first = Encoder("org/minilm", cache_dir=cache, revision="v1", device="cpu")
    assert hub.downloads == 1
    assert first.model_path == cache / "org--minilm" / "v1"
    assert all(c["revision"] == "v1" and c["cache_dir"] == str(cache) for c in hub.calls)
    # weights and configs were fetched (1_Pooling/config.json included); no ONNX files for the torch runtime
    fetched = {p.relative_to(first.model_path).as_posix() for p in first.model_path.rglob("*") if p.is_file()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "1_Pooling/config.json", "modules.json"} <= fetched
    reference = Encoder(device="cpu").encode(["a Hub model", "the bundled model"])
    np.testing.assert_array_equal(first.encode(["a Hub model", "the bundled model"]), reference)
    # a second Encoder (even offline) reads the cache: no second download, no network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    second = Encoder("org/minilm", cache_dir=cache, revision="v1", device="cpu")
    assert hub.downloads == 1 and second.model_path == first.model_path
    assert hub.calls[-1]["local"] is True


def test_offline_and_not_cached_is_a_clear_error(hub, tmp_path, monkeypatch):
    from tokenpool import Encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFolderError, match=r"'org/minilm' is not in .*HF_HUB_OFFLINE is set"):
        Encoder("org/minilm", cache_dir=tmp_path / "empty")
    assert hub.downloads == 0 and all(c["local"] for c in hub.calls)


def test_unknown_repo_is_a_clear_error(hub, tmp_path):
    from tokenpool import Encoder

    with pytest.raises(ModelFolderError, match=r"cannot download model 'org/nothing'.*RepositoryNotFoundError"):
        Encoder("org/nothing", cache_dir=tmp_path)


def test_cli_model_hub_id_and_offline_error(hub, tmp_path, run, monkeypatch):
    corpus = tmp_path / "in.txt"
    corpus.write_text("one\ntwo\n", encoding="utf-8")
    cache = tmp_path / "c"
    code, _, err = run("embed", corpus, "-o", tmp_path / "o.npy", "--model", "org/minilm", "--cache-dir", cache)
    assert code == 0, err
    assert hub.downloads == 1 and hub.calls[-1]["cache_dir"] == str(cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run("embed", corpus, "-o", tmp_path / "p.npy", "--model", "org/other", "--cache-dir", cache)
    assert code == 2 and "HF_HUB_OFFLINE" in err and len(err.strip().splitlines()) == 1


def test_onnx_runtime_asks_for_the_onnx_file_not_the_weights(hub, tmp_path):
    from tokenpool.model.hub import download_model

    download_model("org/minilm", cache_dir=tmp_path, runtime="onnx", onnx_file="model_O3.onnx")
    allow = hub.calls[-1]["allow"]
    assert "onnx/model_O3.onnx" in allow and not any(p.endswith((".safetensors", ".bin")) for p in allow)


def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("BAAI/bge-small-en-v1.5") and is_hub_id("org/name")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "folder").mkdir()
    assert not is_hub_id("local/folder")  # an existing path is a folder, never a Hub id
    for not_id in ("name", "a/b/c", "/abs/path", "./rel/x", "~/x", "org/", 42):
        assert not is_hub_id(not_id)
