"""Stop 48 hunt in the Encoder facade and its integrations: each test failed before its fix."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture
def ray_data(ray_session):
    pytest.importorskip("pyarrow")
    import ray

    return ray


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("options", "message"), [
    ({"num_gpus": 1}, r"num_gpus=1 per actor, but no node"),
    ({"num_cpus": 64}, r"num_cpus=64 per actor, but no node"),
    ({"num_gpus": 0.5, "num_cpus": 1}, r"num_gpus=0.5, num_cpus=1 per actor"),
])  # fmt: skip
def test_ray_refuses_actors_no_node_can_hold(ray_data, options, message):
    """embed_dataset(num_gpus=1) on a cluster without a GPU hung: Ray Data waited forever for a node that fits.
    Now a ValueError naming the request, before any actor starts."""
    from tokenpool.integrations.ray import embed_dataset

    ds = ray_data.data.from_items([{"text": "a"}])
    with pytest.raises(ValueError, match=message):
        embed_dataset(ds, **options)
    embed_dataset(ds, num_cpus=1)  # what a node holds is lazily accepted


def test_ray_leaves_an_autoscaling_cluster_to_scale_up(ray_data, monkeypatch):
    """A cluster whose config may start a GPU node is not refused (the job waits for the node), one whose node
    types have no GPU (or may not be started: max_count 0) is."""
    import ray._private.state as ray_state

    from tokenpool.integrations.ray import embed_dataset

    ds = ray_data.data.from_items([{"text": "a"}])

    def config(gpus: float, max_count: int):
        group = SimpleNamespace(resources={"CPU": 8.0, "GPU": gpus}, max_count=max_count)
        return lambda: SimpleNamespace(node_group_configs=[group])

    monkeypatch.setattr(ray_state.state, "get_cluster_config", config(1.0, -1))
    embed_dataset(ds, num_gpus=1)
    for gpus, max_count in ((0.0, 4), (1.0, 0)):
        monkeypatch.setattr(ray_state.state, "get_cluster_config", config(gpus, max_count))
        with pytest.raises(ValueError, match="num_gpus=1 per actor"):
            embed_dataset(ds, num_gpus=1)


def test_ray_int8_calibration_task_is_refused_not_left_waiting(ray_data, tiny_bert_folder, tmp_path):
    """embed_parquet's calibration task asked for the actors' GPU and waited forever for it (concurrency given,
    so the one-actor-per-GPU default did not look at the cluster first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import embed_parquet

    pq.write_table(pa.table({"text": ["a b", "c d"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match="num_gpus=1, num_cpus=1 per actor"):
        embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(tiny_bert_folder),
                      pooling="mean", precision="int8", concurrency=1, num_gpus=1)  # fmt: skip


@given(st.lists(st.sampled_from([0, 5, 17, -1]), max_size=4), st.sampled_from([list, tuple, np.array]))
def test_window_suffix_reads_the_rows_eos_rule(eos_decoder, ids, kind):
    """`Layout.suffix_after` restated `Tokenization.appends_eos_after` (one rule in two places); it now reads it:
    a window row gets the EOS exactly where a truncate-mode row would, for ids as lists, tuples and arrays."""
    from tokenpool.model.windows import Layout

    tokenization = eos_decoder.tokenization
    eos = tokenization.tokenizer.eos_token_id
    ids = [eos if i == -1 else i for i in ids]
    layout = Layout.of(tokenization, None)
    assert layout.suffix == (eos,)
    expected = (eos,) if tokenization.appends_eos_after(ids) else ()
    assert layout.suffix_after(kind(ids)) == expected


@pytest.mark.parametrize(("options", "shown"), [
    ({"num_cpus": -1}, "num_cpus must be >= 0, a finite number; got -1"),
    ({"num_gpus": True}, "num_gpus must be >= 0, a finite number; got True"),
    ({"num_gpus": "1"}, "num_gpus must be >= 0, a finite number; got '1'"),
    ({"num_cpus": float("nan")}, "num_cpus must be >= 0, a finite number; got nan"),
    ({"num_gpus": float("inf")}, "num_gpus must be >= 0, a finite number; got inf"),
])  # fmt: skip
def test_ray_refuses_bad_actor_resources_naming_them(ray_data, options, shown):
    """num_cpus=-1 was taken (Ray failed inside the execution), num_gpus=True read as one GPU, num_gpus="1" a
    bare TypeError from a comparison: each is a ValueError naming the option and the value."""
    from tokenpool.integrations.ray import embed_dataset

    with pytest.raises(ValueError, match=re.escape(shown)):
        embed_dataset(ray_data.data.from_items([{"text": "a"}]), **options)


def test_ray_older_than_2_55_never_writes_among_other_files(ray_data, tiny_bert_folder, tmp_path, monkeypatch):
    """With a Ray without monotonically_increasing_id (< 2.55: Ray's own writer) the output folder was not checked:
    a second run added its files beside the first run's (a reader got both). Refused as with a newer Ray."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenpool.integrations import ray as tp_ray

    monkeypatch.setattr(tp_ray, "_increasing_id", lambda: None)
    pq.write_table(pa.table({"text": ["a b", "c d"]}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.parquet").write_bytes(b"an earlier run's file")
    with pytest.raises(FileExistsError, match="already holds files"):
        tp_ray.embed_parquet(str(tmp_path / "in.parquet"), str(out), model=str(tiny_bert_folder), pooling="mean")
    assert [p.name for p in out.iterdir()] == ["earlier.parquet"]


def test_a_token_id_past_the_embedding_table_is_named_not_looked_up(tiny_bert_folder, tmp_path):
    """A folder whose tokenizer has a token added but whose model's embeddings were not resized: a text with
    that token (or edited ids) gave torch's bare IndexError "index out of range in self" on a CPU, and on a GPU
    a device-side assert that leaves the process's CUDA context unusable (a server's, for every later request).
    Now a ValueError naming the id and the table's size, before the lookup."""
    import shutil

    from transformers import AutoTokenizer

    from tokenpool import Encoder
    from tokenpool.model.tokenization import Tokenized

    folder = tmp_path / "added-token"
    shutil.copytree(tiny_bert_folder, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(["<new-token>"])
    tokenizer.save_pretrained(folder)
    encoder = Encoder(folder, pooling="mean", device="cpu")
    rows = encoder.model.get_input_embeddings().num_embeddings
    assert tokenizer.convert_tokens_to_ids("<new-token>") == rows
    with pytest.raises(ValueError, match=rf"token id {rows} is not in the model's embedding table \(ids 0..{rows - 1}\)"):
        encoder.encode(["fine", "hello <new-token>"], batch_size=1)
    with pytest.raises(ValueError, match=r"token id -5 is not in"):
        list(encoder.pool_ids(Tokenized([[101, -5, 102]], np.array([3]))))
    assert encoder.encode(["fine", "hello"]).shape == (2, encoder.dimension)


def test_float64_by_name_as_by_torch_dtype_so_a_wrapped_encoder_pickles(tiny_bert_folder):
    """dtype=torch.float64 was taken but "float64" refused, and TokenPoolEmbedding(encoder=...) records its
    encoder's dtype by name: such an embedding could not be pickled or rebuilt from to_dict (ValueError)."""
    import pickle

    torch = pytest.importorskip("torch")
    pytest.importorskip("llama_index.core")
    from tokenpool import Encoder
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    assert Encoder(tiny_bert_folder, pooling="mean", device="cpu", dtype="float64").dtype == torch.float64
    embedding = TokenPoolEmbedding(encoder=Encoder(tiny_bert_folder, pooling="mean", device="cpu", dtype=torch.float64))
    for again in (pickle.loads(pickle.dumps(embedding)), TokenPoolEmbedding.from_dict(embedding.to_dict())):
        assert again.encoder.dtype == torch.float64
        assert again.get_text_embedding("a b") == embedding.get_text_embedding("a b")


def test_a_wrapped_encoder_on_an_fp16_onnx_file_pickles(tiny_bert_folder, tmp_path):
    """TokenPoolEmbedding(encoder=...) recorded the runner's precision as its dtype: an fp16 ONNX file (such as
    the model_fp16.onnx many Hub repositories ship) gave dtype="float16", which the onnx runtime refuses, so the
    embedding could not be pickled (LlamaIndex's parallel ingestion pickles it) or rebuilt from to_dict. It now
    records the dtype option the encoder was built with."""
    import pickle

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("llama_index.core")
    from tokenpool import Encoder
    from tokenpool.integrations.llama_index import TokenPoolEmbedding
    from tokenpool.model.onnx import export_onnx

    graph = onnx.load(export_onnx(tiny_bert_folder, tmp_path / "fp32.onnx"))  # its outputs cast to fp16
    for output in graph.graph.output:
        graph.graph.node.append(onnx.helper.make_node("Cast", [output.name + "_32"], [output.name], to=10))
        for node in graph.graph.node[:-1]:
            node.output[:] = [output.name + "_32" if name == output.name else name for name in node.output]
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    onnx.save(graph, tmp_path / "model_fp16.onnx")
    encoder = Encoder(tiny_bert_folder, pooling="mean", runtime="onnx", onnx_file=tmp_path / "model_fp16.onnx")
    assert encoder.dtype == np.float16
    embedding = TokenPoolEmbedding(encoder=encoder)
    for again in (pickle.loads(pickle.dumps(embedding)), TokenPoolEmbedding.from_dict(embedding.to_dict())):
        assert again.encoder.dtype == np.float16
        assert again.get_text_embedding("a b") == embedding.get_text_embedding("a b")
