"""Hostile model folders: code they ask to run, pickles, garbage weights, malformed configs.

Each case names the folder defect, the expected exception (API) or exit status (CLI), and the disk state
afterwards (no marker file written by folder code, no output written).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import sys
import warnings
from pathlib import Path

import pytest

from tokenpool import Encoder
from tokenpool.errors import ConfigError, ModelFolderError, TokenpoolError, UnsafeModelFolderError

from .conftest import cli

# --------------------------------------------------------------------------------------------- folder code

EVIL_PY = """
from pathlib import Path
Path({marker!r}).write_text("folder code ran")
from transformers import BertConfig, BertModel, BertTokenizerFast
class EvilConfig(BertConfig):
    pass
class EvilModel(BertModel):
    config_class = EvilConfig
class EvilTokenizer(BertTokenizerFast):
    pass
"""


def _plant_code(folder: Path, marker: Path, where: str) -> None:
    """Give ``folder`` an ``evil.py`` that writes ``marker`` when imported, named by an auto_map in ``where``."""
    (folder / "evil.py").write_text(EVIL_PY.format(marker=str(marker)))
    file = folder / where
    data = json.loads(file.read_text())
    if where == "config.json":
        data["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    else:
        data["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    file.write_text(json.dumps(data))


CODE_CASES = [
    # (case, file holding auto_map, command line after the model option, stdin)
    ("embed-stdin-answers-y-config", "config.json", ["embed", "-", "-o", "{out}"], b"y\nhello\n"),
    ("embed-stdin-answers-y-tokenizer", "tokenizer_config.json", ["embed", "-", "-o", "{out}"], b"y\nhello\n"),
    ("embed-file-input-y-config", "config.json", ["embed", "{txt}", "-o", "{out}"], b"y\ny\ny\n"),
    ("evaluate-y-config", "config.json", ["evaluate", "{tsv}"], b"y\n"),
    ("evaluate-y-tokenizer", "tokenizer_config.json", ["evaluate", "{tsv}"], b"y\n"),
    ("embed-stdin-closed-config", "config.json", ["embed", "{txt}", "-o", "{out}"], None),
]


def cli_in_process(run, monkeypatch, *argv: object, stdin: bytes | None = b"") -> tuple[int, str, str]:
    """``tokenpool ARGV`` called in this process (the ``run`` fixture: `tokenpool.cli.main`, its exit status),
    reading ``stdin`` (None: a closed stdin, read as empty, as /dev/null reads). Its stderr holds what a process
    would print there that pytest keeps to itself: Python warnings (a process's default filters) and log
    records at WARNING or above (logging's last-resort handler: pytest's own handlers are on the root logger)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8"))
    last_resort = logging.StreamHandler(sys.stderr)  # (capsys's stderr, which ``run`` reads)
    last_resort.setLevel(logging.WARNING)
    logging.getLogger().addHandler(last_resort)
    try:
        with warnings.catch_warnings(record=True) as said:
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", hidden)  # as a process (not pytest) hides them
            code, out, err = run(*argv)
    finally:
        logging.getLogger().removeHandler(last_resort)
    shown = (warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in said)
    return code, out, err + "".join(shown)


@pytest.mark.parametrize(("case", "where", "argv", "stdin"), CODE_CASES, ids=[c[0] for c in CODE_CASES])
def test_folder_code_never_runs_from_cli(model_copy, tmp_path, run, monkeypatch, case, where, argv, stdin):
    """exit 2 naming the file with the auto_map; marker absent; no output file. The first case runs a real
    ``python -m tokenpool.cli`` process (a piped stdin answering "y", its own modules cache); the others call
    the command line's main in this process (the same code; a process each cost seconds of imports)."""
    folder = model_copy()
    marker = tmp_path / "MARKER"
    _plant_code(folder, marker, where)
    (tmp_path / "in.txt").write_text("hello\nworld\n")
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1.0\nc\td\t2.0\n")
    names = {"out": tmp_path / "out.npy", "txt": tmp_path / "in.txt", "tsv": tmp_path / "pairs.tsv"}
    args = [a.format(**names) for a in argv] + ["--model", folder]
    if case == CODE_CASES[0][0]:
        result = cli(*args, stdin=stdin, env={"HF_MODULES_CACHE": str(tmp_path / "modules")})
        code, err = result.returncode, result.stderr.decode()
    else:
        code, _, err = cli_in_process(run, monkeypatch, *args, stdin=stdin)
    assert code == 2, err
    assert "auto_map" in err and where in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "out.npy.tokenpool-partial").exists()


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_folder_code_refused_by_the_api(model_copy, tmp_path, where):
    folder = model_copy()
    marker = tmp_path / "MARKER"
    _plant_code(folder, marker, where)
    with pytest.raises(UnsafeModelFolderError, match=where):
        Encoder(folder)
    assert not marker.exists()


def test_llama_index_refuses_folder_code(model_copy, tmp_path):
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    folder = model_copy()
    marker = tmp_path / "MARKER"
    _plant_code(folder, marker, "config.json")
    with pytest.raises(UnsafeModelFolderError):
        TokenPoolEmbedding(str(folder))
    assert not marker.exists()


@pytest.mark.parametrize("value", ["yes", "no", 1, None])
def test_trust_remote_code_must_be_a_bool(tiny_bert, value):
    """a truthy string must not switch the safety option on: TypeError naming the value."""
    with pytest.raises(TypeError, match="trust_remote_code"):
        Encoder(tiny_bert, trust_remote_code=value)


def test_trust_remote_code_true_is_the_only_opt_in(model_copy, tmp_path, monkeypatch):
    """With trust_remote_code=True transformers is allowed to import the folder's code (here: the marker)."""
    folder = model_copy()
    marker = tmp_path / "MARKER"
    _plant_code(folder, marker, "config.json")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    with contextlib.suppress(Exception):  # the planted code is not a working model; only its import matters
        Encoder(folder, trust_remote_code=True)
    assert marker.exists()


def test_cli_trust_remote_code_flag_exists():
    result = cli("embed", "--help")
    assert b"--trust-remote-code" in result.stdout


# ------------------------------------------------------------------------------------------------- pickles


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def _pickled_weights(folder: Path, marker: Path) -> None:
    import torch
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    state["payload"] = _Payload(marker)  # type: ignore[assignment]
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def test_pickle_payload_in_pytorch_model_bin_is_refused(model_copy, tmp_path):
    folder = model_copy()
    marker = tmp_path / "MARKER"
    _pickled_weights(folder, marker)
    with pytest.raises(UnsafeModelFolderError, match="safetensors"):
        Encoder(folder)
    assert not marker.exists()


def test_pickle_payload_cli_exit_2(model_copy, tmp_path, run, monkeypatch):
    """(`tokenpool.cli.main` in this process: a payload that ran would write the marker here as well.)"""
    folder = model_copy()
    marker = tmp_path / "MARKER"
    _pickled_weights(folder, marker)
    (tmp_path / "in.txt").write_text("hello\n")
    code, _, err = cli_in_process(run, monkeypatch, "embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy",
                                   "--model", folder)  # fmt: skip
    assert code == 2, err
    assert "refusing to unpickle" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out.npy").exists()


def test_plain_tensor_pickle_still_loads(model_copy, tiny_bert):
    """A .bin of plain tensors is data: it loads (weights_only) and gives the safetensors vectors."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    folder = model_copy()
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    texts = ["a tiny test", "another"]
    np.testing.assert_array_equal(Encoder(folder).encode(texts), Encoder(tiny_bert).encode(texts))


# ------------------------------------------------------------------------------------- damaged folders (API)


def _garbage_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 100)


def _truncated_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _huge_header(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")


def _edit(file: str, change):
    def apply(folder: Path) -> None:
        path = folder / file
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return apply


def _write(file: str, text: str):
    def apply(folder: Path) -> None:
        (folder / file).unlink(missing_ok=True)
        (folder / file).write_text(text)

    return apply


def _onnx_only(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"\x08\x07onnx-bytes")


def _modules_idx(value):
    def change(modules):
        modules[0]["idx"] = value

    return _edit("modules.json", change)


FOLDER_CASES = [
    # (case, damage, exception, message fragment)
    ("garbage-model.safetensors", _garbage_weights, ModelFolderError, "model weights"),
    ("truncated-model.safetensors", _truncated_weights, ModelFolderError, "model weights"),
    ("safetensors-header-2**62", _huge_header, ModelFolderError, "model weights"),
    ("hidden_size-abc", _edit("config.json", lambda c: c.update(hidden_size="abc")), TokenpoolError, "hidden_size"),
    ("hidden_size-negative", _edit("config.json", lambda c: c.update(hidden_size=-4)), TokenpoolError, "hidden_size"),
    ("vocab_size-null", _edit("config.json", lambda c: c.update(vocab_size=None)), TokenpoolError, "vocab_size"),
    ("config.json-a-list", _write("config.json", "[1, 2]"), ConfigError, "config.json"),
    ("config.json-not-json", _write("config.json", "{nope"), ConfigError, "config.json"),
    ("config.json-empty-file", _write("config.json", ""), ConfigError, "config.json"),
    ("tokenizer_config-a-list", _write("tokenizer_config.json", "[]"), ConfigError, "tokenizer_config.json"),
    ("tokenizer.json-garbage", _write("tokenizer.json", "{\"model\": 5}"), TokenpoolError, "tokenizer"),
    ("modules.json-idx-string", _modules_idx("zero"), ConfigError, "idx"),
    ("modules.json-idx-null", _modules_idx(None), ConfigError, "idx"),
    ("modules.json-idx-float", _modules_idx(0.5), ConfigError, "idx"),
    ("modules.json-idx-duplicate", _edit("modules.json", lambda m: m[1].update(idx=0)), ConfigError, "idx"),
    ("modules.json-path-escapes", _edit("modules.json", lambda m: m[1].update(path="../../etc")), ValueError, "inside"),
    ("modules.json-unknown-class-path", _edit("modules.json", lambda m: m[1].update(type="os.system")), ValueError,
     "cannot run module"),
    ("modules.json-an-object", _write("modules.json", "{}"), ValueError, "list"),
    ("onnx-only-folder", _onnx_only, ModelFolderError,
     r"only ONNX weights \(onnx/model\.onnx\).*runtime='onnx'"),
    ("max_position_embeddings-string", _edit("config.json", lambda c: c.update(max_position_embeddings="x")),
     TokenpoolError, "max_position_embeddings"),
]


@pytest.mark.parametrize(
    ("case", "damage", "error", "fragment"), FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES]
)
def test_damaged_folder_is_a_clear_error(model_copy, case, damage, error, fragment):
    folder = model_copy()
    damage(folder)
    before = sorted(p.name for p in folder.rglob("*"))
    with pytest.raises(error, match=fragment) as info:
        Encoder(folder)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written into the folder


@pytest.mark.parametrize(
    ("case", "damage"),
    [(c[0], c[1]) for c in FOLDER_CASES if c[0] in ("garbage-model.safetensors", "hidden_size-abc",
                                                     "modules.json-idx-string", "onnx-only-folder")],
)
def test_damaged_folder_cli_exit_2(model_copy, tmp_path, run, monkeypatch, case, damage):
    """(`tokenpool.cli.main` in this process, its exit status: a real process's is
    `test_folder_code_never_runs_from_cli`'s first case.)"""
    folder = model_copy()
    damage(folder)
    (tmp_path / "in.txt").write_text("hello\n")
    code, _, err = cli_in_process(run, monkeypatch, "embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy",
                                   "--model", folder)  # fmt: skip
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "out.npy.tokenpool-partial").exists()
    if case == "onnx-only-folder":  # the advice names the flag that runs it
        assert "--runtime onnx" in err


def test_folder_is_a_file(tmp_path):
    (tmp_path / "model").write_text("not a folder")
    with pytest.raises(NotADirectoryError):
        Encoder(tmp_path / "model")


def test_pickled_pooling_config_is_not_read(model_copy):
    """A pickle planted as a module config is never unpickled: it is refused as malformed JSON."""
    folder = model_copy()
    (folder / "1_Pooling" / "config.json").write_bytes(pickle.dumps({"pooling_mode": "mean"}))
    with pytest.raises(ValueError, match="1_Pooling"):
        Encoder(folder)
