"""Stop 64, model folders / configs / ONNX: each test failed on the code before its fix."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

TEXTS = ["hello world", "a longer text here, with more words than the first", "x"]


@pytest.fixture(scope="module")
def dropout_folder(tmp_path_factory):
    """A sentence-transformers folder with a Dropout module after pooling (and after a Normalize): Transformer,
    Pooling, Dense 32->8, Normalize, Dropout — saved by sentence-transformers itself."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st
    from tinymodels import HIDDEN, bert_weights

    Dense, Dropout, Normalize, Pooling, Transformer = st.Dense, st.Dropout, st.Normalize, st.Pooling, st.Transformer
    folder = bert_weights(tmp_path_factory.mktemp("dropout") / "model")
    modules = [Transformer(str(folder), max_seq_length=48), Pooling(HIDDEN, "mean"), Dense(HIDDEN, 8),
               Normalize(), Dropout(0.3)]  # fmt: skip
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def test_a_dropout_module_is_the_identity_as_in_sentence_transformers(dropout_folder):
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    want = SentenceTransformer(str(dropout_folder), device="cpu").encode(TEXTS)
    encoder = Encoder(dropout_folder, device="cpu")
    assert encoder.config.normalize  # (the Normalize before the Dropout is the last module that does something)
    np.testing.assert_allclose(np.asarray(encoder.encode(TEXTS)), want, atol=2e-6)


def test_saving_a_config_over_a_dropout_folder_keeps_what_it_says(dropout_folder, tmp_path):
    import shutil

    from tokenpool.model.configs import read_pooling_config

    folder = shutil.copytree(dropout_folder, tmp_path / "copy")
    kinds = [entry["type"].rsplit(".", 1)[-1] for entry in json.loads((folder / "modules.json").read_text())]
    config = read_pooling_config(folder)
    replace(config, normalize=False).save(folder)
    assert read_pooling_config(folder).normalize is False
    kept = [entry["type"].rsplit(".", 1)[-1] for entry in json.loads((folder / "modules.json").read_text())]
    assert kept == [k for k in kinds if k != "Normalize"] == ["Transformer", "Pooling", "Dense", "Dropout"]


def test_a_config_file_that_is_a_folder_is_named_and_its_descriptor_closed(tmp_path):
    import os

    from tokenpool.errors import ConfigError
    from tokenpool.model.safety import read_json_object

    (tmp_path / "tokenizer_config.json").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(ConfigError) as caught:
            read_json_object(tmp_path / "tokenizer_config.json")
        message = str(caught.value)
        assert "folder, not a regular file" in message and "Is a directory: " not in message, message
    assert len(os.listdir("/proc/self/fd")) == before  # (each descriptor opened was closed)


def test_an_export_frees_the_torch_model_before_onnxruntime_loads_the_graph(tiny, tmp_path, monkeypatch):
    """The check of a new graph ran onnxruntime while the torch model was still held: twice the model's memory."""
    import weakref

    ort = pytest.importorskip("onnxruntime")
    from tokenpool.model import onnx

    loaded, alive = [], []
    load, session = onnx._load_for_export, ort.InferenceSession

    def loading(*args, **kwargs):
        model = load(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model

    def opening(*args, **kwargs):
        alive.append(loaded[0]() is not None)
        return session(*args, **kwargs)

    monkeypatch.setattr(onnx, "_load_for_export", loading)
    monkeypatch.setattr(ort, "InferenceSession", opening)
    onnx.export_onnx(tiny, tmp_path / "model.onnx")
    assert alive == [False]


def test_an_empty_folder_name_is_refused_not_read_as_the_working_folder(tmp_path, monkeypatch):
    from tokenpool import PoolingConfig, read_pooling_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="''"):
        read_pooling_config("")
    with pytest.raises(FileNotFoundError, match="''"):
        PoolingConfig(strategies=("cls",), embedding_dimension=8).save("")
    assert list(tmp_path.iterdir()) == []  # (nothing written into the working folder)


HEADERS = [  # (safetensors headers the safetensors library refuses: a Dense module's weights file)
    b"[]",
    b'{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12.5]}}',
    b'{"a": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 12]}}',
    b'{"a": {"dtype": "F32", "shape": [1.5, 2], "data_offsets": [0, 8]}}',
    b'{"a": {"dtype": "F32", "shape": [1000000000000000000000000000000], "data_offsets": [0, 12]}}',  # (review)
    b'{"a": {"dtype": "F32", "shape": [3, 100000000000000000000000], "data_offsets": [0, 12]}}',  # (review)
]


@pytest.mark.parametrize("header", HEADERS)
def test_a_malformed_safetensors_header_is_a_model_folder_error(header, tmp_path):
    import struct

    from safetensors.numpy import load_file

    from tokenpool.errors import ModelFolderError
    from tokenpool.model.modules import read_safetensors

    file = tmp_path / "model.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    with pytest.raises(Exception):  # noqa: B017 (the reference refuses it too)
        load_file(file)
    with pytest.raises(ModelFolderError, match="not readable safetensors"):
        read_safetensors(file)
