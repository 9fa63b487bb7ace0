"""Stop 58 review of the ONNX export: documented behaviour checked against what the command does."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]


def test_every_page_says_where_into_folder_writes_for_a_subfolder_layout(run, tiny, tmp_path, monkeypatch):
    """`export-onnx --into-folder` on a folder whose modules.json keeps the Transformer in `0_Transformer` writes
    `FOLDER/0_Transformer/onnx/model.onnx` (where the runtime looks); docs/cli.md said `FOLDER/onnx/model.onnx`
    only. Every paragraph of the docs and README that says where `--into-folder` writes must name that path."""
    root = tmp_path / "model"
    modules = json.loads((tiny / "modules.json").read_text(encoding="utf-8"))
    shutil.copytree(tiny, root / "0_Transformer", ignore=shutil.ignore_patterns("modules.json", "1_*", "2_*"))
    for module in modules[1:]:
        shutil.copytree(tiny / module["path"], root / module["path"])
    (root / "modules.json").write_text(json.dumps([{**modules[0], "path": "0_Transformer"}, *modules[1:]]))
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    code, out, err = run("export-onnx", root, "--into-folder")
    assert code == 0, err
    written = Path(out.splitlines()[0]).relative_to(root).as_posix()
    assert written == "0_Transformer/onnx/model.onnx"
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for paragraph in re.split(r"\n\s*\n", page.read_text(encoding="utf-8")):
            text = " ".join(paragraph.split())
            if "--into-folder" in text and "FOLDER/onnx/model.onnx" in text:
                assert f"FOLDER/{written}" in text, (page.name, text[:200])
