"""Stop 58 (model folders, readers and jobs): tokenizer files that are no regular files, a Dense module's null
activation, a resume that reuses a last chunk whose last block the end of the input did not cut."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from jobkill import run_killed_in

from tokenpool import Encoder
from tokenpool.errors import ConfigError
from tokenpool.jobs import embed_corpus

pytest.importorskip("transformers")


def _bundled_copy(tmp_path: Path) -> Path:
    from tokenpool.model.folders import bundled_model_path

    return Path(shutil.copytree(bundled_model_path(), tmp_path / "m"))


def _replace(target: Path, make: str, tmp_path: Path) -> None:
    """``target`` made a named pipe, a folder or a dangling link."""
    target.unlink(missing_ok=True)
    if make == "fifo":
        os.mkfifo(target)
    elif make == "folder":
        target.mkdir()
    else:
        target.symlink_to(tmp_path / "gone")


@pytest.mark.parametrize("make", ["fifo", "folder", "dangling link"])
@pytest.mark.parametrize("name", ["tokenizer.json", "vocab.txt", "added_tokens.json", "config.json"])
def test_torch_runtime_refuses_a_tokenizer_file_that_is_no_regular_file(tmp_path, name, make):
    """transformers took a pipe (folder, dangling link) at tokenizer.json for absent and built the tokenizer from
    vocab.txt instead, and passed over one at added_tokens.json: the folder loaded without a word; one at
    config.json was reported as a missing config.json."""
    folder = _bundled_copy(tmp_path)
    _replace(folder / name, make, tmp_path)
    with pytest.raises(ConfigError, match=rf"{name}: .*not a regular file|{name}: a dangling link"):
        Encoder(folder, device="cpu")


def test_a_pipe_as_the_only_tokenizer_file_is_named_not_called_missing(tmp_path):
    """With vocab.txt gone, a pipe at tokenizer.json was reported as 'missing tokenizer files'."""
    folder = _bundled_copy(tmp_path)
    (folder / "vocab.txt").unlink()
    _replace(folder / "tokenizer.json", "fifo", tmp_path)
    with pytest.raises(ConfigError, match=r"tokenizer\.json: a named pipe"):
        Encoder(folder, device="cpu")


def test_onnx_runtime_names_a_pipe_at_tokenizer_json(tmp_path):
    """The onnx runtime said the folder 'has only slow tokenizer files' for a pipe at tokenizer.json."""
    pytest.importorskip("onnxruntime")
    from tinymodels import bert_folder

    from tokenpool.model.onnx import export_onnx

    folder = bert_folder(tmp_path / "bert")
    export_onnx(folder, folder / "onnx" / "model.onnx")
    _replace(folder / "tokenizer.json", "fifo", tmp_path)
    with pytest.raises(ConfigError, match=r"tokenizer\.json: a named pipe"):
        Encoder(folder, runtime="onnx")


def test_a_dense_activation_of_null_is_refused_as_sentence_transformers_refuses_it(tmp_path):
    """A Dense config with "activation_function": null ran as Identity; sentence-transformers cannot load such a
    folder at all (it saves "torch.nn.modules.linear.Identity" for no activation), so no vector is right."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tinymodels import HIDDEN, bert_weights

    plain = bert_weights(tmp_path / "plain")
    modules = [Transformer(str(plain), max_seq_length=32), Pooling(HIDDEN, "mean"), Dense(HIDDEN, 8)]
    folder = tmp_path / "dense"
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    config = folder / "2_Dense" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "activation_function": None}))
    with pytest.raises(Exception) as st_error:  # noqa: PT011 - whatever sentence-transformers raises
        SentenceTransformer(str(folder), device="cpu")
    assert not isinstance(st_error.value, ConfigError)
    with pytest.raises(ConfigError, match=r"2_Dense/config\.json: activation_function must be a class path"):
        Encoder(folder, device="cpu")


@pytest.mark.parametrize(("rows", "fmt"), [("vectors", "npy"), ("vectors", "parquet"), ("chunks", "parquet"),
                                           ("int8", "parquet")])  # fmt: skip
def test_a_last_chunk_whose_blocks_the_input_did_not_cut_is_reused_on_resume(small, tmp_path, monkeypatch, rows, fmt):
    """20 records in chunks of 8 and blocks of 4: the end of the input closed the last chunk, records 16-19, at a
    block's end, so its block is the one a longer input gives; killed while the output was written, 7 records
    appended, resumed: that chunk is reused (was encoded again) and the output is a fresh run's, byte for byte."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    from test_jobs56 import _job, _texts, _write

    src, out = tmp_path / "in.jsonl", tmp_path / f"out.{fmt}"
    _write(src, _texts(0, 20))
    job = _job(src, out, rows)
    run_killed_in(small, job, monkeypatch)
    _write(src, _texts(0, 27))
    job.resume = True
    result = embed_corpus(small, job, log=lambda m: None)
    fresh = tmp_path / f"fresh.{fmt}"
    embed_corpus(small, _job(src, fresh, rows), log=lambda m: None)
    assert out.read_bytes() == fresh.read_bytes()
    assert (result.reused_chunks, result.chunks) == (3, 5)  # [16, 20) and [20, 24): one row group, as fresh


def test_a_chunk_job_with_empty_documents_whole_gives_an_empty_line_its_row(small, tmp_path):
    """EmbedJob(request=EncodeRequest(chunks=..., empty_documents="whole")) refused an empty or blank line before
    the model loaded ("no chunk to embed"), where `Encoder.encode_chunks` with the same request gives such a text
    one row of its whole text (docs/long-documents.md): the job now writes encode_chunks' rows."""
    import numpy as np

    from tokenpool.jobs import EmbedJob, EncodeRequest

    texts = ["a first text with a few words", "", "   ", "the last text"]
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    request = EncodeRequest(chunks="tokens:4", empty_documents="whole")
    embed_corpus(small, EmbedJob(str(src), str(out), request), log=lambda m: None)
    expected = small.encode_chunks(texts, chunks="tokens:4", empty_documents="whole")
    assert np.array_equal(np.load(out), expected.vectors)
