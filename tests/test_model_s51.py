"""Encoders users copy or ship to other processes (pydantic ``model_copy(deep=True)``, Ray, multiprocessing,
joblib): each test failed before its fix (stop 51)."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import ModelFolderError  # noqa: E402

TEXTS = ["A man is playing a guitar.", "Someone plays an instrument on a small stage tonight.", "", "cat"]


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder with its export in onnx/model.onnx."""
    from tinymodels import bert_folder

    from tokenpool.model.onnx import export_onnx

    folder = bert_folder(tmp_path_factory.mktemp("tiny") / "bert")
    export_onnx(folder, folder / "onnx" / "model.onnx")
    return folder


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _in_a_fresh_process(encoder: Encoder) -> np.ndarray:
    """``encoder.encode(TEXTS)`` in a spawned process (the Encoder pickled there, as Ray and joblib ship it)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(encoder.encode, (TEXTS,))


# ------------------------------------------------------------------------------------------ onnx runtime copies


def test_an_onnx_encoder_deep_copies_and_pickles_with_its_own_session_and_the_same_bits(onnx_folder):
    """deepcopy and pickle of an onnx-runtime Encoder raised TypeError: cannot pickle 'InferenceSession' object
    (the torch runtime's copied); the copy now runs its own session of the same file, the same vectors bit for bit."""
    encoder = Encoder(str(onnx_folder), runtime="onnx")
    expected = encoder.encode(TEXTS)
    for clone in (copy.deepcopy(encoder), pickle.loads(pickle.dumps(encoder))):
        assert clone.runner.session is not encoder.runner.session
        assert clone.model is clone.runner.session
        assert clone.runner.path == encoder.runner.path
        assert _same_bits(clone.encode(TEXTS), expected)
        assert _same_bits(clone.encode(TEXTS, batch_size=1), encoder.encode(TEXTS, batch_size=1))
    assert _same_bits(encoder.encode(TEXTS), expected)  # the original keeps working


def test_an_onnx_encoder_runs_in_a_spawned_process(onnx_folder):
    """multiprocessing (spawn), joblib's loky and Ray pickle what they send: the onnx Encoder could not be sent."""
    encoder = Encoder(str(onnx_folder), runtime="onnx")
    assert _same_bits(_in_a_fresh_process(encoder), encoder.encode(TEXTS))


def test_an_onnx_file_changed_after_pickling_is_refused_when_unpickled(onnx_folder, tmp_path):
    """The copy rebuilds its session from the file; a file that changed since (another export of the same name)
    would give other vectors than the pickled Encoder's, so unpickling refuses it, naming the file."""
    import onnx
    from onnx import numpy_helper

    folder = tmp_path / "bert"
    import shutil

    shutil.copytree(onnx_folder, folder)
    encoder = Encoder(str(folder), runtime="onnx")
    data = pickle.dumps(encoder)
    graph_file = folder / "onnx" / "model.onnx"
    graph = onnx.load(str(graph_file))
    first = graph.graph.initializer[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * 2, first.name))
    onnx.save(graph, str(graph_file))
    with pytest.raises(ModelFolderError, match="changed") as caught:
        pickle.loads(data)
    assert str(graph_file) in str(caught.value)
    assert not _same_bits(Encoder(str(folder), runtime="onnx").encode(TEXTS), encoder.encode(TEXTS))  # a real change


def test_an_onnx_file_changed_before_pickling_is_refused_when_pickled(onnx_folder, tmp_path):
    """The running session holds the file as it was loaded: a copy made after the file changed could not run the
    same model, so pickling refuses it rather than ship another model under the same name."""
    import shutil

    folder = tmp_path / "bert"
    shutil.copytree(onnx_folder, folder)
    encoder = Encoder(str(folder), runtime="onnx")
    graph_file = folder / "onnx" / "model.onnx"
    graph_file.write_bytes(graph_file.read_bytes() + b"\0")  # (any change: refused before onnxruntime reads it)
    with pytest.raises(ModelFolderError, match="changed") as caught:
        copy.deepcopy(encoder)
    assert str(graph_file) in str(caught.value)


def test_a_llama_index_embedding_of_an_onnx_encoder_copies_deeply(onnx_folder):
    """pydantic's ``model_copy(deep=True)`` deep-copies the private Encoder: TypeError for the onnx runtime."""
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    embedding = TokenPoolEmbedding(encoder=Encoder(str(onnx_folder), runtime="onnx"))
    clone = embedding.model_copy(deep=True)
    assert clone.encoder.runner.session is not embedding.encoder.runner.session
    assert clone.get_text_embedding_batch(TEXTS) == embedding.get_text_embedding_batch(TEXTS)


def test_an_onnx_encoder_loaded_by_a_relative_path_unpickles_in_another_working_directory(onnx_folder, monkeypatch):
    """A worker process (Ray's) runs in its own working directory: the copy opens the file the original loaded."""
    monkeypatch.chdir(onnx_folder.parent)
    encoder = Encoder(onnx_folder.name, runtime="onnx")
    data = pickle.dumps(encoder)
    monkeypatch.chdir(onnx_folder)
    clone = pickle.loads(data)
    assert clone.runner.path == onnx_folder / "onnx" / "model.onnx"
    assert _same_bits(clone.encode(TEXTS), encoder.encode(TEXTS))


def _graph_with_positions(source: Path, folder: Path) -> Path:
    """``source`` copied to ``folder`` with an onnx/model.onnx taking ``position_ids`` too (a third party's
    export of the same weights: torch.onnx.export of a wrapper)."""
    import shutil

    from tinymodels import export_taking_positions
    from transformers import BertModel

    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("onnx"))
    model = BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    export_taking_positions(model, folder / "onnx" / "model.onnx")
    return folder


def test_an_onnx_encoder_of_a_graph_taking_position_ids_pickles(onnx_folder, tmp_path):
    """Its position numbering was a lambda, which pickle refuses (deepcopy passed it along)."""
    folder = _graph_with_positions(onnx_folder, tmp_path / "positions")
    encoder = Encoder(str(folder), runtime="onnx")
    assert "position_ids" in encoder.runner.input_names
    clone = pickle.loads(pickle.dumps(encoder))
    assert _same_bits(clone.encode(TEXTS), encoder.encode(TEXTS))


# ------------------------------------------------------------------------------------------ torch runtime copies


def test_a_torch_encoder_runs_in_a_spawned_process(onnx_folder):
    """The torch runner switches BERT to tokenpool's unpadded attention, registered with transformers in the
    process that loaded it: an Encoder pickled to a fresh process (multiprocessing, joblib's loky, Ray) raised
    KeyError: '`tokenpool_unpadded` is not a valid attention implementation' on its first encode."""
    encoder = Encoder(str(onnx_folder))
    assert encoder.runner.unpadded
    np.testing.assert_allclose(_in_a_fresh_process(encoder), encoder.encode(TEXTS), rtol=0, atol=1e-6)


def test_an_encoder_unpickled_in_another_working_directory_keeps_its_model_id(onnx_folder, monkeypatch):
    """An Encoder of a relative folder read its model_id from that relative path, so a copy in another working
    directory (a worker process) had model_id None, and a calibration of another model was used without a word."""
    import dataclasses

    from tokenpool.core.quantize import CalibrationMismatch

    monkeypatch.chdir(onnx_folder.parent)
    encoder = Encoder(onnx_folder.name)
    model_id = encoder.model_id
    assert model_id is not None
    other_id = model_id.rsplit(":", 1)[0] + ":" + "0" * 64  # another model's id, of this version's kind
    other = dataclasses.replace(encoder.calibrate(TEXTS), model_id=other_id)
    data = pickle.dumps(encoder)
    monkeypatch.chdir(onnx_folder)
    clone = pickle.loads(data)
    assert clone.model_id == model_id
    assert str(clone.model_path) == onnx_folder.name  # (as given: messages and labels name it so)
    with pytest.raises(CalibrationMismatch, match="another model"):
        clone.encode(TEXTS, precision="int8", calibration=other)


def test_an_onnx_model_with_external_weights_changed_after_pickling_is_refused(onnx_folder, tmp_path):
    """A graph over 2 GiB keeps its weights in a file beside it (``model.onnx_data``): the copy's check read the
    graph file alone, so other weights there (same graph bytes) were run under the pickled model's name."""
    import shutil

    import onnx

    folder = tmp_path / "bert"
    shutil.copytree(onnx_folder, folder)
    graph_file = folder / "onnx" / "model.onnx"
    graph = onnx.load(str(graph_file))
    onnx.save(graph, str(graph_file), save_as_external_data=True, location="model.onnx_data", size_threshold=0)
    encoder = Encoder(str(folder), runtime="onnx")
    data = pickle.dumps(encoder)
    assert _same_bits(pickle.loads(data).encode(TEXTS), encoder.encode(TEXTS))
    weights = folder / "onnx" / "model.onnx_data"
    assert weights.stat().st_size > 100_000  # every initializer is in it
    values = np.frombuffer(weights.read_bytes(), dtype=np.uint8).copy()
    values[len(values) // 2 :: 4] ^= 1  # (the graph file is untouched: only weights beside it change)
    weights.write_bytes(values.tobytes())
    with pytest.raises(ModelFolderError, match="changed"):
        pickle.loads(data)
