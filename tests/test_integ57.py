"""Stop 57, integrations and top-level modules: the LlamaIndex embedding, `tokenpool.torch.Pool`, Hub snapshots,
`tokenpool inspect` and the package's public names."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pytest

from tokenpool.model.folders import bundled_model_path


def _partial_snapshot(cache: Path, files: tuple[str, ...]) -> Path:
    """A Hub cache holding ``org/mini`` as transformers leaves it after ``AutoTokenizer.from_pretrained``: the
    snapshot's refs and a few of its files, no tree listing (the files came one by one, not by snapshot)."""
    repo = cache / "models--org--mini"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for name in files:
        shutil.copyfile(bundled_model_path() / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    return snapshot


def test_a_partial_cached_snapshot_is_completed_online(tmp_path, monkeypatch):
    """A cached snapshot without weights (its tokenizer fetched by transformers) was taken as the model: online
    the Hub was asked only for pytorch_model*.bin, so a safetensors repo stayed without weights and the Encoder
    failed; the snapshot is now completed. Offline it is still never downloaded, and the error names the folder."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    cached = huggingface_hub.snapshot_download  # the real cache lookup
    snapshot = _partial_snapshot(tmp_path, ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"))
    downloads: list[list[str]] = []

    def snapshot_download(repo_id, *, local_files_only=False, allow_patterns=None, **options):
        if local_files_only:
            return cached(repo_id, local_files_only=True, allow_patterns=allow_patterns, **options)
        downloads.append(allow_patterns)  # the Hub: the bundled model's files that the patterns match
        for path in bundled_model_path().rglob("*"):
            relative = path.relative_to(bundled_model_path()).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(relative, pattern) for pattern in allow_patterns):
                (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, snapshot / relative)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFolderError, match=f"{snapshot}' is missing model weights"):
        Encoder("org/mini", cache_dir=tmp_path, device="cpu")
    assert downloads == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    encoder = Encoder("org/mini", cache_dir=tmp_path, device="cpu")
    assert encoder.model_path == snapshot and (snapshot / "1_Pooling" / "config.json").is_file()
    texts = ["a Hub model", "completed from the cache"]
    assert abs(encoder.encode(texts) - Encoder(device="cpu").encode(texts)).max() < 1e-6


@pytest.mark.parametrize(("size", "message"), [(-5, "must be a positive int"), ("32", "must be an integer")])
def test_inspect_refuses_a_hidden_size_the_encoder_refuses(tmp_path, run, size, message):
    """config.json's hidden_size -5 (or "32") made the Encoder refuse the folder, while inspect printed a full
    report, "dimension -5" (or the pooling file's 384, read_model_config's refusal swallowed); now exit 2, one
    line naming the file, the key and the value."""
    import json

    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    folder = Path(shutil.copytree(bundled_model_path(), tmp_path / "model"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": size}), encoding="utf-8")
    with pytest.raises(ConfigError, match="hidden_size"):
        Encoder(folder, device="cpu")
    code, out, err = run("inspect", folder)
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert f"{folder / 'config.json'}: hidden_size {message}, got {size!r}" in err


@pytest.mark.parametrize("name", ["cache_dir", "revision"])
def test_an_empty_cache_dir_or_revision_is_refused_before_the_hub_is_asked(tmp_path, monkeypatch, run, name):
    """``cache_dir=""`` (``--cache-dir "$UNSET"``) reached huggingface_hub, which resolves Path("") to the current
    folder and downloads the model there; ``revision=""`` was no revision the user named. Both are now refused,
    named as given, before the Hub is asked (as an empty MODEL is)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *args, **options: asked.append(options))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match=f"{name}='' names no"):
        Encoder("org/mini", **{name: ""})
    corpus = tmp_path / "in.txt"
    corpus.write_text("one\n", encoding="utf-8")
    flag = "--" + name.replace("_", "-")
    code, _, err = run("embed", corpus, "-o", tmp_path / "out.npy", "--model", "org/mini", flag, "")
    assert code == 2 and err.count("\n") == 1 and f"{flag} '' names no" in err
    assert asked == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.parametrize(
    "name", ["a/..", "org/model.git", "org/a--b", "org/-x", "org/x.", "org/" + "x" * 97, "org/x\n", "org/mini"]
)
def test_a_name_the_hub_refuses_is_no_hub_id(tmp_path, monkeypatch, name):
    """"a/..", "org/model.git" (names huggingface_hub's validate_repo_id refuses) counted as Hub ids: offline the
    error said the model "is not in the cache and HF_HUB_OFFLINE is set", never that the name is at fault. Now
    `is_hub_id` follows the Hub's rule, and such a name is "no such model folder (give ... a Hub id such as ...)"."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError
    from tokenpool.model.hub import is_hub_id

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        validate_repo_id(name)
    except HFValidationError:
        valid = False
    else:
        valid = True
    assert is_hub_id(name) == valid
    expected = "is not in .* HF_HUB_OFFLINE is set" if valid else "does not exist .*Hugging Face Hub id such as"
    with pytest.raises(ModelFolderError, match=expected):
        Encoder(name, cache_dir=tmp_path)


class _Hub:
    """``snapshot_download`` over a repo of ``{name: bytes}``: online it copies the files the allow_patterns match
    (fnmatch, as the Hub matches them) into one snapshot folder; local_files_only: that folder, once made."""

    def __init__(self, repo: dict[str, bytes], snapshot: Path) -> None:
        self.repo, self.snapshot = repo, snapshot

    def __call__(self, repo_id, *, local_files_only=False, allow_patterns=(), **options):
        import huggingface_hub

        if local_files_only and not self.snapshot.is_dir():
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        for name, data in self.repo.items() if not local_files_only else ():
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (self.snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                (self.snapshot / name).write_bytes(data)
        return str(self.snapshot)


@pytest.fixture
def online_hub(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def install(repo: dict[str, bytes], snapshot: Path) -> None:
        monkeypatch.setattr(huggingface_hub, "snapshot_download", _Hub(repo, snapshot))

    return install


def test_a_hub_repos_onnx_file_at_its_root_is_fetched(tmp_path, online_hub):
    """``onnx_file`` names a file in the folder's onnx/ or in the folder itself (`find_onnx_file`, docs/runtimes.md),
    but a Hub download asked only for onnx/NAME: a repo with model.onnx at its root (optimum's, Qdrant's exports)
    came without it, and the runtime found no file. Both places are fetched now, each with its external data."""
    from tokenpool.model.hub import download_model
    from tokenpool.model.onnx import find_onnx_file

    repo = {"config.json": b"{}", "tokenizer.json": b"{}", "model.onnx": b"graph", "model.onnx_data": b"weights",
            "model.safetensors": b"torch weights", "onnx/model_O3.onnx": b"graph O3"}  # fmt: skip
    for onnx_file, found in (("model.onnx", "model.onnx"), ("model_O3.onnx", "onnx/model_O3.onnx")):
        online_hub(repo, tmp_path / onnx_file)
        folder = download_model("org/exported", runtime="onnx", onnx_file=onnx_file)
        assert find_onnx_file(folder, onnx_file) == folder / found
        fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert fetched == sorted(["config.json", "tokenizer.json", found] + ["model.onnx_data"] * (found == "model.onnx"))


def test_the_onnx_runtime_exports_a_hub_repo_without_an_onnx_file(tmp_path, monkeypatch, online_hub):
    """A folder without onnx/model.onnx is exported once from its torch weights (README, docs/runtimes.md), but a
    Hub download for the onnx runtime fetched no weights: the export failed with "cannot load the model weights"
    (the repo's safetensors never asked for). The weights now come when the repo has no ONNX file."""
    pytest.importorskip("onnxruntime")
    from tokenpool import Encoder

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "exports"))
    source = bundled_model_path()
    online_hub({p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()},
               tmp_path / "snapshot")  # fmt: skip
    encoder = Encoder("org/minilm", runtime="onnx")
    texts = ["a Hub model without an ONNX file", "exported once"]
    reference = Encoder(device="cpu").encode(texts)
    assert float((encoder.encode(texts) * reference).sum(axis=1).min()) > 0.99999
