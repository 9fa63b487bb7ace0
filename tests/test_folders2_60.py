"""Model folders and ONNX export (stop 60, second round): each test failed on the code before its fix."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sentence_transformers")


def test_tokenizer_name_or_path_naming_another_tokenizer_is_refused(tiny_copy):
    """sentence-transformers loads the tokenizer from sentence_bert_config.json's tokenizer_name_or_path (its
    Transformer passes it to AutoProcessor.from_pretrained); tokenpool used the folder's own tokenizer silently."""
    from tokenpool.errors import ConfigError
    from tokenpool.model.configs import read_pooling_config

    file = tiny_copy / "sentence_bert_config.json"
    config = json.loads(file.read_text())
    expected = read_pooling_config(tiny_copy)
    for same in (None, str(tiny_copy), str(tiny_copy) + "/"):  # the folder itself: read as before
        file.write_text(json.dumps({**config, "tokenizer_name_or_path": same}))
        assert read_pooling_config(tiny_copy) == expected
    file.write_text(json.dumps({**config, "tokenizer_name_or_path": "bert-base-cased"}))
    with pytest.raises(ConfigError) as error:
        read_pooling_config(tiny_copy)
    message = str(error.value)
    assert str(file) in message and "tokenizer_name_or_path='bert-base-cased'" in message
    assert "the folder's own tokenizer" in message


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    """A tiny random BERT saved by sentence-transformers as a SparseEncoder (MLMTransformer, SpladePooling)."""
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("splade") / "model", mlm=True)


def test_export_onnx_refuses_a_splade_folder(run, splade_folder, tmp_path):
    """export-onnx exited 0 on a SparseEncoder folder, writing a hidden-state graph no runtime can use for it
    (docs/runtimes.md: the onnx runtime refuses splade pooling; the export gives hidden states)."""
    folder = splade_folder
    target = tmp_path / "out" / "model.onnx"
    code, out, err = run("export-onnx", folder, "--output", target)
    assert (code, out) == (2, "")
    (line,) = err.strip().splitlines()
    assert str(folder) in line and "SPLADE" in line and "torch runtime only" in line, line
    assert not target.exists() and not (folder / "onnx").exists()
