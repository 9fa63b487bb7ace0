"""Review of stop 64 (model folders): saving over a folder with Dropout modules keeps them; RemBERT's SentencePiece
vocabulary (a safetensors shape past 64 bits: `HEADERS` in test_folders64.py). Each test failed before its fix."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

TEXTS = ["hello world", "a longer text here, with more words than the first", "x"]


@pytest.fixture(scope="module")
def dropouts(tmp_path_factory):
    """Transformer, Pooling, Dense 32->8, Dropout, LayerNorm, Normalize, Dropout: saved by sentence-transformers."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st
    from tinymodels import HIDDEN, bert_weights

    folder = bert_weights(tmp_path_factory.mktemp("dropouts") / "model")
    modules = [st.Transformer(str(folder), max_seq_length=48), st.Pooling(HIDDEN, "mean"), st.Dense(HIDDEN, 8),
               st.Dropout(0.3), st.LayerNorm(8), st.Normalize(), st.Dropout(0.2)]  # fmt: skip
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def _types(folder) -> list[str]:
    """The classes of ``folder``'s modules.json entries (save writes the pooling module's legacy import path)."""
    return [entry["type"].rsplit(".", 1)[-1] for entry in json.loads((folder / "modules.json").read_text())]


def test_save_keeps_the_dropout_modules_and_the_final_normalize_in_place(dropouts, tmp_path):
    """save dropped every Dropout entry from modules.json (the user's training pipeline lost them) -> kept; the
    Normalize before the last Dropout stays where sentence-transformers put it, and goes when normalize=False."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder, read_pooling_config

    folder = shutil.copytree(dropouts, tmp_path / "copy")
    types = _types(folder)  # (as sentence-transformers wrote them)
    config = read_pooling_config(folder)
    config.save(folder)
    assert _types(folder) == types
    replace(config, normalize=False).save(folder)
    assert _types(folder) == [t for t in types if t != "Normalize"]
    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    assert not np.allclose(np.linalg.norm(want, axis=1), 1.0)  # (no Normalize left for sentence-transformers)
    encoder = Encoder(folder, device="cpu")
    assert encoder.config.normalize is False
    np.testing.assert_allclose(np.asarray(encoder.encode(TEXTS)), want, atol=2e-6)
    config.save(folder)  # (a Normalize again: last, after the Dropout)
    assert read_pooling_config(folder).normalize is True
    assert _types(folder)[-1] == "Normalize" and sorted(_types(folder)) == sorted(types)


def test_rembert_sentencepiece_vocabulary_counts_as_a_tokenizer(tmp_path):
    """RemBERT's vocabulary file, sentencepiece.model, was no tokenizer file to check_files: a folder with it alone
    was 'missing tokenizer files' though transformers reads it."""
    transformers = pytest.importorskip("transformers")
    from tokenpool.model.folders import check_files

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    names = [f for f in transformers.RemBertTokenizer.vocab_files_names.values() if f != "tokenizer.json"]
    assert names  # (the reference: the file names transformers' RemBERT tokenizer reads)
    for name in names:
        (tmp_path / name).write_bytes(b"")
    check_files(tmp_path)
