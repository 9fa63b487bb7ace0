"""ONNX export safety (no folder code, no unpickling, never replacing a file), the onnx runtime's tokenizer
sides, and calibration files refused when malformed: each test failed before its fix."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from tokenpool.errors import CorpusError, UnsafeModelFolderError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: file bytes, or a symlink's target."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = "-> " + os.readlink(path)
        elif path.is_file():
            out[key] = path.read_bytes()
    return out


# ------------------------------------------------------------------------------------------ export safety


def _remote_code_folder(tiny: Path, folder: Path, marker: Path) -> Path:
    """``tiny`` with a config whose auto_map names a module of the folder that writes ``marker`` when imported
    (an architecture transformers does not know, so only that code can load it)."""
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="markerbert", auto_map={"AutoConfig": "marker.Config", "AutoModel": "marker.Model"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "marker.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertModel\n"
        "class Config(BertConfig):\n    model_type = 'markerbert'\n"
        "class Model(BertModel):\n    config_class = Config\n"
    )
    return folder


def test_export_onnx_never_runs_a_folders_code(tiny, tmp_path):
    """export-onnx loaded the folder with transformers without trust_remote_code: transformers asked on stdin
    and a piped "y" ran the folder's code. Now refused (exit 2, one line) before transformers reads it."""
    marker = tmp_path / "marker"
    folder = _remote_code_folder(tiny, tmp_path / "remote", marker)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENPOOL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "tokenpool.cli", "export-onnx", str(folder), "--output", str(tmp_path / "m.onnx")],
        input="y\ny\n", capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert not marker.exists()
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "auto_map" in done.stderr and "--trust-remote-code" in done.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_runtime_export_to_cache_refuses_a_folders_code(tiny, tmp_path, monkeypatch):
    from tokenpool import Encoder

    marker = tmp_path / "marker"
    folder = _remote_code_folder(tiny, tmp_path / "remote", marker)
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UnsafeModelFolderError, match="auto_map"):
        Encoder(folder, runtime="onnx")
    assert not marker.exists() and not (tmp_path / "cache").exists()


def test_export_onnx_refuses_pickled_weights_as_unsafe(tiny_copy, tmp_path):
    """A pytorch_model.bin holding more than tensors: exit 2 with tokenpool's refusal (was exit 1, torch's
    multi-sentence message), nothing unpickled, nothing written."""
    marker = tmp_path / "unpickled"
    folder = tiny_copy
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    from tokenpool.model.onnx import export_onnx

    with pytest.raises(UnsafeModelFolderError, match="refusing to unpickle pytorch_model.bin"):
        export_onnx(folder, tmp_path / "out" / "model.onnx")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_export_onnx_never_replaces_a_dangling_symlink(run, tiny, tmp_path):
    """`export-onnx --output LINK` where LINK is a dangling symlink: the check `exists()` said no, and the
    export's os.replace put the file in the link's place. Now refused, the link kept."""
    (tmp_path / "link.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    before = _files(tmp_path)
    code, out, err = run("export-onnx", tiny, "--output", tmp_path / "link.onnx")
    assert code == 2 and "already exists" in err and out == ""
    assert _files(tmp_path) == before

    from tokenpool.model.onnx import export_onnx

    with pytest.raises(CorpusError, match="never replaces"):  # the function itself, whatever its caller checked
        export_onnx(tiny, tmp_path / "link.onnx")
    assert _files(tmp_path) == before


def test_export_onnx_leaves_nothing_beside_the_target_when_it_fails(tiny, tmp_path, monkeypatch):
    """A crash inside the export removes only its own temporary folder; the target's folder is as it was."""
    import torch

    from tokenpool.model.onnx import export_onnx

    (tmp_path / "user.txt").write_text("mine")
    before = _files(tmp_path)

    def crash(*args, **kwargs):
        Path(args[2]).write_bytes(b"half a file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", crash)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(tiny, tmp_path / "model.onnx")
    assert _files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["user.txt"]


# ------------------------------------------------------------------------------------------ calibration files


def _calibration_file(tmp_path: Path, **changes: object) -> Path:
    """A valid calibration file (dimension 3, from float32 vectors) with ``changes`` written over its fields."""
    from tokenpool.core.quantize import Calibration

    vectors = np.array([[0.0, 1.0, 2.0], [1.0, 3.0, 5.0]], dtype=np.float32)
    data = {**Calibration.from_vectors(vectors).to_dict(), **changes}
    path = tmp_path / "ranges.calibration.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # json writes NaN / Infinity literals as Python reads them
    return path


@pytest.mark.parametrize(
    ("field", "values", "shown"),
    [
        ("maximum", [1e39, 3.0, 5.0], "maximum[0] is 1e+39"),  # finite in float64, infinite as float32
        ("minimum", [0.0, -1e39, 2.0], "minimum[1] is -1e+39"),
        ("minimum", [0.0, float("nan"), 2.0], "minimum[1] is nan"),
        ("maximum", [1.0, 3.0, float("inf")], "maximum[2] is inf"),
    ],
)
def test_calibration_ranges_beyond_float32_are_refused_naming_the_file_and_value(tmp_path, field, values, shown):
    """A range beyond float32 was stored as ±inf: step = inf, and every value of that dimension got code 0
    (−inf: NaN steps cast to 0, with RuntimeWarnings) — silently wrong codes. NaN was refused without saying
    where."""
    from tokenpool.core.quantize import Calibration

    path = _calibration_file(tmp_path, **{field: values})
    with pytest.raises(ValueError) as refused:
        Calibration.load(path)
    assert str(refused.value).startswith(f"{path}: ") and shown in str(refused.value)
    ranges = {"minimum": np.array([0.0, 1.0, 2.0]), "maximum": np.array([1.0, 3.0, 5.0]), field: np.array(values)}
    with pytest.raises(ValueError, match=re.escape(shown)):  # the constructor itself, e.g. from float64 vectors
        Calibration(ranges["minimum"], ranges["maximum"])


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"minimum": ["0", "1", "2"]}, "minimum[0] is '0', not a number"),  # was read as 0.0, 1.0, 2.0
        ({"maximum": [True, 3, 5]}, "maximum[0] is True, not a number"),  # was read as 1.0
        ({"extra": [1, 2]}, "'extra' must be an object, got [1, 2]"),  # was a TypeError naming no file
        ({"model_id": ["abc"]}, "'model_id' must be a string or null"),  # was accepted
        ({"model": 5}, "'model' must be a string or null, got 5"),
    ],
)
def test_malformed_calibration_fields_are_refused_naming_the_file(tmp_path, changes, shown):
    from tokenpool.core.quantize import Calibration

    path = _calibration_file(tmp_path, **changes)
    with pytest.raises(ValueError) as refused:
        Calibration.load(path)
    assert str(refused.value) == f"{path}: {shown}" or (
        str(refused.value).startswith(f"{path}: ") and shown in str(refused.value)
    )


# ------------------------------------------------------------------------------------------ CLI errors


@pytest.mark.parametrize("content", [b"not an onnx file\n", b""])
@pytest.mark.parametrize("recipe", [["--optimize"], ["--quantize", "int8"]])
def test_variant_of_a_damaged_onnx_file_is_one_line_exit_2_naming_it(run, tiny, tmp_path, content, recipe):
    """--onnx-file naming a file that is no ONNX model: was exit 1 ("failed: Error parsing message with type
    'onnx.ModelProto'"), naming no file; an empty file (an empty model) was exit 1 or "Failed to find proper
    ai.onnx domain"."""
    source = tmp_path / "damaged.onnx"
    source.write_bytes(content)
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\nthe dog runs\n", encoding="utf-8")
    before = _files(tmp_path)
    code, out, err = run(
        "export-onnx", tiny, "--onnx-file", source, *recipe, "--calibration-texts", texts,
        "--output", tmp_path / "variant.onnx",
    )  # fmt: skip
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(f"tokenpool export-onnx: error: cannot read the ONNX file {source}: ")
    assert _files(tmp_path) == before


# ------------------------------------------------------------------------------------------ onnx vs torch


def test_saved_padding_and_truncation_sides_apply_as_in_transformers(tiny_copy, tiny_onnx, tmp_path):
    """A tokenizer.json saved with left padding and left truncation, and a tokenizer_config.json naming neither
    side nor the pad token: transformers pads and truncates on the left, the onnx runtime's FolderTokenizer did
    both on the right — its vectors of truncated or padded texts differed from the torch runtime's (cos 0.86)."""
    from transformers import AutoTokenizer

    from tokenpool import Encoder
    from tokenpool.model.fast_tokenizer import FolderTokenizer

    folder = tiny_copy
    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    saved["padding"] = {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": None, "pad_id": 0,
                        "pad_type_id": 0, "pad_token": "[PAD]"}  # fmt: skip
    saved["truncation"] = {"direction": "Left", "max_length": 20, "strategy": "LongestFirst", "stride": 0}
    (folder / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key in ("padding_side", "truncation_side", "pad_token"):
        config.pop(key, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for file in folder.glob("special_tokens_map.json"):
        file.unlink()

    reference = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    mine = FolderTokenizer(folder)
    assert (mine.padding_side, mine.truncation_side, mine.pad_token_id) == (
        reference.padding_side, reference.truncation_side, reference.pad_token_id,
    )  # fmt: skip
    texts = ["a short one", "word " * 60 + "the end differs here", "word " * 60 + "another ending entirely", ""]
    by_torch = Encoder(folder, device="cpu").encode(texts)
    by_onnx = Encoder(folder, runtime="onnx", onnx_file=tiny_onnx).encode(texts)
    cosines = (by_torch.astype(np.float64) * by_onnx).sum(axis=1)  # unit vectors (the folder normalises)
    assert cosines.min() >= 0.99999, cosines
