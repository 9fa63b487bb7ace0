"""Stop 55 hunt (security and data safety): a model folder is data, read without blocking or without end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinymodels import bert_folder  # noqa: E402

from tokenpool.errors import TokenpoolError  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A sentence-transformers folder (random 2-layer BERT, mean pooling, no Normalize); never written into."""
    return bert_folder(tmp_path_factory.mktemp("safety55") / "bert", normalize=False)


def _copy(folder: Path, target: Path, *, dense: bool = False) -> Path:
    """A writable copy of ``folder``; ``dense``: with a Dense module (its config.json planted by the test)."""
    shutil.copytree(folder, target)
    if dense:
        modules = json.loads((target / "modules.json").read_text(encoding="utf-8"))
        modules.append({"idx": len(modules), "name": "dense", "path": "2_Dense",
                        "type": "sentence_transformers.sentence_transformer.modules.dense.Dense"})  # fmt: skip
        (target / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
        (target / "2_Dense").mkdir()
    return target


def _raises_without_blocking(call, fifo: Path) -> BaseException:
    """The exception ``call()`` raises, asserting it returns within 20 s instead of waiting on the named pipe
    ``fifo`` for a writer (the pipe is then opened and closed once, so a blocked reader gets an end of file)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    blocked = thread.is_alive()
    if blocked:  # release the reader: a writer that opens and closes the pipe gives it an end of file
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(60)
    assert not blocked, f"reading the model folder waited on the named pipe {fifo}"
    assert outcome and outcome[0] is not None, "a named pipe in the model folder was read as a file"
    return outcome[0]


def test_onnx_runtime_config_json_a_named_pipe_is_refused_not_waited_on(tiny_folder, tmp_path):
    """The torch runtime says a folder whose config.json is a named pipe has no config.json; the onnx runtime
    (which reads config.json itself) opened the pipe and waited for a writer forever."""
    from tokenpool import Encoder

    folder = _copy(tiny_folder, tmp_path / "model")
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    error = _raises_without_blocking(lambda: Encoder(str(folder), runtime="onnx"), folder / "config.json")
    assert isinstance(error, TokenpoolError), error
    assert str(folder / "config.json") in str(error) and "regular file" in str(error)


def test_dense_module_config_a_named_pipe_is_refused_not_waited_on(tiny_folder, tmp_path):
    """A Dense module's config.json that is a named pipe: the Encoder waited for a writer forever."""
    from tokenpool import Encoder

    folder = _copy(tiny_folder, tmp_path / "model", dense=True)
    os.mkfifo(folder / "2_Dense" / "config.json")
    error = _raises_without_blocking(lambda: Encoder(str(folder)), folder / "2_Dense" / "config.json")
    assert isinstance(error, TokenpoolError), error
    assert str(folder / "2_Dense" / "config.json") in str(error) and "regular file" in str(error)


def _run_limited(code: str, memory: int = 1 << 30) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with ``memory`` bytes of address space at most and 120 s of time."""
    limited = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n{code}"
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", limited], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("where", ["config.json", "2_Dense/config.json"])
def test_a_config_linked_to_dev_zero_is_refused_not_read_without_end(tiny_folder, tmp_path, where):
    """A config file symlinked to /dev/zero (an endless device) was read until memory ran out (MemoryError);
    it is refused as a file that is not a regular file, as the torch runtime's missing config.json is."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    folder = _copy(tiny_folder, tmp_path / "model", dense=True)
    (folder / where).unlink(missing_ok=True)
    os.symlink("/dev/zero", folder / where)
    reader = ("from tokenpool.model.onnx import read_model_config as read; read(folder)" if where == "config.json"
              else "from tokenpool.model.modules import read_post_modules as read; read(folder)")  # fmt: skip
    code = (
        f"from pathlib import Path\nfolder = Path({str(folder)!r})\n"
        f"try:\n    {reader}\nexcept MemoryError:\n    print('MemoryError')\n"
        f"except ValueError as exc:\n    print(type(exc).__name__, exc)\nelse:\n    print('read')\n"
    )
    out = _run_limited(code).stdout
    assert "regular file" in out and str(folder / where) in out, out


SAVED_FILES = ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def test_pooling_config_save_into_a_hub_snapshot_leaves_the_shared_blobs_alone(tiny_folder, tmp_path):
    """A Hugging Face cache snapshot's files are symlinks to shared blobs (named by their hash, shared by every
    revision holding them). `PoolingConfig.save(snapshot)` wrote through those links, changing the blobs (and
    every other revision using them); it now replaces the folder's own names (whole files, one rename each)."""
    import dataclasses

    from tokenpool import read_pooling_config

    folder = _copy(tiny_folder, tmp_path / "snapshot")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for k, name in enumerate(SAVED_FILES):
        blob = blobs / f"blob{k}"
        (folder / name).rename(blob)
        os.symlink(blob, folder / name)
    before = {blob.name: blob.read_bytes() for blob in blobs.iterdir()}
    config = dataclasses.replace(read_pooling_config(folder), strategies=("cls",), normalize=True,
                                 prompts={"query": "query: "})  # fmt: skip
    config.save(folder)
    assert {blob.name: blob.read_bytes() for blob in blobs.iterdir()} == before  # the cache's blobs: untouched
    assert not any((folder / name).is_symlink() for name in SAVED_FILES)
    assert read_pooling_config(folder) == config


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("escape", ["../victim", "absolute"])
def test_export_onnx_refuses_a_transformer_path_outside_the_folder(tiny_folder, tmp_path, monkeypatch, run, escape):
    """`Encoder` and `tokenpool inspect` refuse a modules.json module path that leaves the model folder;
    `tokenpool export-onnx` followed the Transformer's, exported the model it found there and, with
    --into-folder, wrote onnx/model.onnx and its record into that other folder (exit 0)."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    victim = _copy(tiny_folder, tmp_path / "victim")
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    path = "../victim" if escape == "../victim" else str(victim)
    modules = [{"idx": 0, "name": "0", "path": path, "type": "sentence_transformers.models.Transformer"}]
    (hostile / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    before = _tree(victim)
    code, out, err = run("export-onnx", hostile, "--into-folder")
    assert code == 2 and out == "", (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "must stay inside the model folder" in err and path in err, err
    assert _tree(victim) == before and not (tmp_path / "cache").exists()


def test_export_onnx_names_a_malformed_modules_json(tiny_folder, tmp_path, monkeypatch, run):
    """export-onnx reads modules.json without the pooling config's checks: malformed, it said only
    "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", naming no file."""
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    folder = _copy(tiny_folder, tmp_path / "model")
    (folder / "modules.json").write_text("{nope", encoding="utf-8")
    code, out, err = run("export-onnx", folder, "--into-folder")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(folder / "modules.json") in err, (code, err)
    assert not (folder / "onnx").exists()
