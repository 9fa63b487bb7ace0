"""Lead's fixes of stop 56, each pinned by a test that failed before it."""

import pytest

from tokenpool.core.chunking import BoundaryChunks, TokenChunks, parse_chunks
from tokenpool.errors import OptionError


@pytest.mark.parametrize("spec", ["tokens:" + "9" * 5000, "boundaries:64:" + "7" * 5000, "tokens:" + "1" * 30])
def test_a_chunk_spec_with_a_huge_number_is_an_option_error_naming_it(spec):
    # before: int() raised a bare ValueError telling the caller to call sys.set_int_max_str_digits()
    with pytest.raises(OptionError, match=r"must be below 2\*\*63, got a \d+-bit int in chunks='(tokens|boundaries):"):
        parse_chunks(spec)


@pytest.mark.parametrize("kind", [TokenChunks, BoundaryChunks])
def test_a_chunk_spec_object_with_a_huge_size_is_refused_naming_its_class(kind):
    with pytest.raises(OptionError, match=f"chunk size must be below 2\\*\\*63, got a 16610-bit int in {kind.__name__}"):
        kind(10**5000)
    assert str(parse_chunks("tokens:9223372036854775807:3")) == "tokens:9223372036854775807:3"


def test_bench_refuses_a_shortened_option(capsys):
    # before: `tokenpool bench --thr 3` set --threads (every other parser refuses prefixes since stop 56)
    from tokenpool.cli import main

    assert main(["bench", "--thr", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--thr" in err[0]


@pytest.mark.parametrize("model", ["folder", None])
def test_a_cache_dir_with_a_local_folder_is_refused_as_a_revision_is(model, tiny_bert_folder, run, tmp_path):
    # before: --cache-dir with a local (or the bundled) model was accepted and ignored; --revision was refused
    corpus = tmp_path / "t.txt"
    corpus.write_text("hello\n", encoding="utf-8")
    where = ["--model", tiny_bert_folder] if model else []
    code, _, err = run("embed", corpus, "-o", tmp_path / "o.npy", *where, "--cache-dir", tmp_path / "hub")
    from clitools import assert_one_error_line

    assert_one_error_line(code, err, f"--cache-dir {tmp_path / 'hub'}", "local folder")
    assert not (tmp_path / "o.npy").exists()


def test_a_cache_dir_with_a_local_folder_is_refused_in_python_by_its_parameter_name(tmp_path):
    from tokenpool.model.folders import bundled_model_path, resolve_model_path

    with pytest.raises(OptionError, match="cache_dir=.* applies to a Hugging Face Hub id"):
        resolve_model_path(bundled_model_path(), cache_dir=str(tmp_path))
    assert resolve_model_path(None) == bundled_model_path()


def test_a_pooling_config_with_a_reduction_for_dense_strategies_is_refused_when_made():
    # before: accepted, and the first encode failed in pool (before stop 56: the reduction was silently ignored)
    from tokenpool.errors import ConfigError
    from tokenpool.model.configs import PoolingConfig

    with pytest.raises(ConfigError, match=r"splade_reduction='sum' is SPLADE's option; strategy \['mean'\]"):
        PoolingConfig(strategies=("mean",), splade_reduction="sum")
    assert PoolingConfig(strategies=("splade",), splade_reduction="sum").splade_reduction == "sum"
    assert PoolingConfig(strategies=("mean",)).splade_reduction == "max"


@pytest.mark.parametrize("pooling", ["mean", "cls", ["mean", "max"]])
@pytest.mark.parametrize("long_documents", ["truncate", "windows"])
def test_a_splade_folder_with_sum_pools_densely_when_asked(tmp_path, pooling, long_documents):
    # found by the stop's review: the folder's reduction "sum" reached pool with a dense pooling, which the
    # stop's new check refuses; every encode raised (the server answered 422). Reference: a plain loop.
    import numpy as np
    from tinymodels import bert_folder, edit_json

    from tokenpool import Encoder

    folder = tmp_path / "splade"
    bert_folder(folder, mlm=True)
    edit_json(folder / "1_SpladePooling/config.json", pooling_strategy="sum")
    enc = Encoder(folder, pooling=pooling, long_documents=long_documents)
    got = enc.encode(["hello world", "a"])
    names = [pooling] if isinstance(pooling, str) else pooling
    for batch in Encoder(folder, pooling=pooling).iter_token_batches(["hello world", "a"]):
        hidden = np.asarray(batch.hidden, dtype=np.float64)
        mask = np.asarray(batch.attention_mask)
        for row, index in enumerate(batch.indices):
            real = hidden[row][mask[row] == 1]
            parts = {"mean": real.mean(0), "cls": real[0], "max": real.max(0)}
            want = np.concatenate([parts[n] for n in names])
            if enc.normalize:
                want = want / np.linalg.norm(want)
            np.testing.assert_allclose(got[index], want, atol=1e-5)


def test_a_non_integer_truncate_dim_with_splade_is_the_type_error_any_strategy_gets():
    import numpy as np

    from tokenpool import pool

    logits = np.ones((1, 3, 10), dtype=np.float32)
    for strategy in ("splade", "mean"):
        with pytest.raises(TypeError, match="truncate_dim must be an int, got 'abc'"):
            pool(logits, None, strategy, truncate_dim="abc")
    with pytest.raises(ValueError, match="truncate_dim=8 keeps the first dimensions"):
        pool(logits, None, "splade", truncate_dim=8)


def test_too_many_inputs_names_the_servers_option_as_the_other_size_limits_do():
    # before: "'inputs' has 4 inputs; this server takes at most 3 per request" (--max-input-chars and
    # --max-chunks name their option; --max-inputs did not)
    pytest.importorskip("uvicorn")
    from serve_fakes import FakeRunner, post

    from tokenpool.serve.server import start_server
    from tokenpool.serve.settings import ServeSettings

    with start_server(FakeRunner(max_length=16), ServeSettings(batch_size=4, max_inputs=3)) as server:
        for path, field, status in (("/embed", "inputs", 413), ("/v1/embeddings", "input", 400)):  # (as TEI, OpenAI)
            answer = post(server, path, {field: ["a", "b", "c", "d"]})
            assert answer.status_code == status, answer.text
            assert f"'{field}' has 4 inputs; this server takes at most 3 per request (--max-inputs)" in answer.text


def test_ray_sparse_rows_take_the_requests_prompt_as_the_dense_rows_do(tmp_path):
    # before: EmbedBatch's SPLADE path built its own sparse request without the prompt (silently un-prompted rows)
    import numpy as np
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("ray")
    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.integrations.ray import EmbedBatch
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    splade = str(bert_folder(tmp_path / "splade", mlm=True))
    texts = ["cats purr loudly", "dogs bark"]
    embed = EmbedBatch("text", "embedding", EncoderOptions(model=splade), EncodeRequest(prompt="query: "))
    table = embed(pa.table({"text": texts}))
    encoder = Encoder(splade)
    want, plain = encoder.encode(texts, prompt="query: "), encoder.encode(texts)
    rows = np.zeros_like(want)
    columns = (table.column("indices").to_pylist(), table.column("values").to_pylist())
    for i, (indices, values) in enumerate(zip(*columns, strict=True)):
        rows[i, indices] = values
    np.testing.assert_array_equal(rows, want)
    assert np.abs(want - plain).max() > 1e-3  # the prompt changes the rows


def test_embed_parquet_with_more_gpus_than_the_cluster_has_is_bad_input(ray_session, tiny_bert_folder, tmp_path):
    # before: a RuntimeError from the default concurrency (`embed --ray --device cuda` exited 1, "failed"),
    # where embed_dataset(num_gpus=1) is the documented ValueError
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import embed_parquet

    pq.write_table(pa.table({"text": ["a b", "c d"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match="num_gpus=1 per actor"):
        embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(tiny_bert_folder),
                      pooling="mean", num_gpus=1)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_onnx_runtime_runs_a_folder_whose_model_class_is_its_own_without_trust(tmp_path):
    # found by the stop's review: since this stop the onnx runtime refused a folder whose config.json has an
    # auto_map (Jina v2, nomic: their own model class, which the ONNX graph replaces); only a tokenizer class of
    # the folder's own matters there. Reference: the same folder without the auto_map.
    import json
    import shutil

    import numpy as np
    pytest.importorskip("onnxruntime")
    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.errors import UnsafeModelFolderError
    from tokenpool.model.onnx import export_onnx

    plain = bert_folder(tmp_path / "plain")
    export_onnx(plain, plain / "onnx" / "model.onnx")
    own = tmp_path / "own"
    shutil.copytree(plain, own)
    config = json.loads((own / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModel": "modeling_own.OwnModel"}
    (own / "config.json").write_text(json.dumps(config), encoding="utf-8")
    texts = ["a cat", "two dogs bark"]
    got = Encoder(own, runtime="onnx").encode(texts)
    np.testing.assert_array_equal(got, Encoder(plain, runtime="onnx").encode(texts))
    with pytest.raises(UnsafeModelFolderError, match="config.json has an 'auto_map'"):
        Encoder(own)  # the torch runtime would import the class


@pytest.mark.parametrize("device", [0, 1])
def test_ray_refuses_an_int_gpu_index_without_num_gpus_as_it_refuses_cuda(device):
    # found by the stop's review: device=0 (torch reads it as cuda:0) passed with num_gpus=0, where
    # device="cuda" is refused (Ray would hide the GPUs from the actors)
    pytest.importorskip("ray")
    from tokenpool.integrations.ray import embed_dataset

    with pytest.raises(ValueError, match=f"device={device} needs num_gpus > 0"):
        embed_dataset(None, device=device)


def test_a_link_at_the_work_folders_temporary_name_is_never_written_through(tmp_path):
    # found by the stop's review: the fixed NAME.tmp was opened "wb", following a symlink put there after the
    # start-up check (the data went into the link's target, and the link was renamed over the file)
    import os

    from tokenpool.io.workdir import write_atomic

    outside = tmp_path / "users-file"
    outside.write_bytes(b"keep me")
    work = tmp_path / "work"
    work.mkdir()
    target = work / "manifest.json"
    (work / "manifest.json.tmp").symlink_to(outside)
    write_atomic(target, b"{}")
    assert outside.read_bytes() == b"keep me"
    assert target.read_bytes() == b"{}" and not target.is_symlink()
    assert not os.path.lexists(work / "manifest.json.tmp")
    (work / "manifest.json.tmp").write_bytes(b"left by a kill")  # a kill's leftover is replaced as before
    write_atomic(target, b"[]")
    assert target.read_bytes() == b"[]" and sorted(p.name for p in work.iterdir()) == ["manifest.json"]
