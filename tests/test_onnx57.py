"""Stop 57, ONNX export and precision evaluation: defects found by the helper's hunt, each pinned against the
documented behaviour or an independent reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder (2 layers, width 32)."""
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("tiny57") / "bert")


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory) -> Path:
    from tokenpool.model.onnx import export_onnx

    return export_onnx(tiny, tmp_path_factory.mktemp("fp32") / "model.onnx")


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory) -> Path:
    file = tmp_path_factory.mktemp("texts") / "calibration.txt"
    file.write_text("A man is playing a guitar.\nThe cat sat on the mat.\nhello world\nrain in spain\n", "utf-8")
    return file


def test_trust_remote_code_reaches_the_encoders_that_score_a_variant(run, tiny, tiny_onnx, texts_file, tmp_path):
    """A folder whose tokenizer_config.json has an auto_map runs on the onnx runtime with trust (its tokenizer.json,
    no code): `export-onnx --quantize int8 --trust-remote-code` told the user to pass --trust-remote-code."""
    folder = shutil.copytree(tiny, tmp_path / "mapped")
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "auto_map": {"AutoTokenizer": ["t.T", None]}}))
    target = tmp_path / "q.onnx"
    argv = ["export-onnx", folder, "--onnx-file", tiny_onnx, "--output", target]
    code, _, err = run(*argv, "--quantize", "int8", "--calibration-texts", texts_file, "--force")
    assert code == 2 and "--trust-remote-code" in err and not target.exists()  # refused without trust
    code, out, err = run(*argv, "--quantize", "int8", "--calibration-texts", texts_file, "--force", "--trust-remote-code")
    assert code == 0, err
    assert target.is_file() and str(target) in out
