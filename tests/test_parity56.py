"""Parity with sentence-transformers on tiny random pipelines saved by sentence-transformers itself (stop 56)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.errors import ConfigError

pytest.importorskip("sentence_transformers")

TEXTS = ["hello world", "a much longer sentence with many words in it", "", "x"]


@pytest.fixture(scope="module")
def dense_pipeline(tmp_path_factory) -> Path:
    """BERT → mean Pooling → Dense 32→32 (GELU, no bias) → Normalize, saved by sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from tinymodels import HIDDEN, bert_weights

    folder = bert_weights(tmp_path_factory.mktemp("dense-pipeline"))
    modules = [Transformer(str(folder), max_seq_length=48), Pooling(HIDDEN, "mean"),
               Dense(HIDDEN, HIDDEN, bias=False, activation_function=torch.nn.GELU()), Normalize()]  # fmt: skip
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def test_modules_sharing_a_name_are_refused_as_sentence_transformers_keeps_only_the_last(dense_pipeline):
    # sentence-transformers keys its modules by "name": a second "2" replaces the Dense at its place, so it runs
    # Transformer, Pooling, Normalize; tokenpool ran the Dense too, silently other vectors of the same width
    from sentence_transformers import SentenceTransformer

    file = dense_pipeline / "modules.json"
    saved = file.read_text(encoding="utf-8")
    modules = json.loads(saved)
    modules[3]["name"] = modules[2]["name"]
    try:
        file.write_text(json.dumps(modules), encoding="utf-8")
        assert len(SentenceTransformer(str(dense_pipeline), device="cpu")) == 3  # the Dense is gone there
        with pytest.raises(ConfigError, match=r"modules\.json.*name '2'"):
            Encoder(dense_pipeline, device="cpu")
    finally:
        file.write_text(saved, encoding="utf-8")
    reference = SentenceTransformer(str(dense_pipeline), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(Encoder(dense_pipeline, device="cpu").encode(TEXTS), reference, atol=2e-6)


def test_sum_splade_with_a_saved_max_active_dims_and_prompts_matches_sparse_encoder(tmp_path):
    # SpladePooling "sum" and config_sentence_transformers.json's max_active_dims and prompts, as SparseEncoder
    # reads them: the same non-zeros and values, with and without a prompt
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    from tinymodels import bert_weights

    folder = bert_weights(tmp_path / "sparse", mlm=True)
    modules = [MLMTransformer(str(folder), max_seq_length=48), SpladePooling(pooling_strategy="sum")]
    prompts = {"query": "query: ", "document": ""}
    SparseEncoder(modules=modules, device="cpu", max_active_dims=5, prompts=prompts).save(str(folder))
    reference, encoder = SparseEncoder(str(folder), device="cpu"), Encoder(folder, device="cpu")
    for options in ({}, {"prompt_name": "query"}, {"prompt": "find: "}):
        expected = reference.encode(TEXTS, convert_to_tensor=True, **options).to_dense().numpy()
        got = encoder.encode(TEXTS, output="sparse", **options).toarray()
        assert ((got != 0) == (expected != 0)).all() and (np.count_nonzero(got, axis=1) == 5).all()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_saving_a_config_names_every_module_once_whatever_names_the_folder_had(dense_pipeline, tmp_path):
    # PoolingConfig.save names the Transformer "0" and the pooling module "1" and kept the Dense's old name: a
    # Dense named "0" (names are any labels) then shared it, and sentence-transformers replaced the Transformer
    # by the Dense (its modules are keyed by name); every name is its module's index now, as a fresh save has
    from dataclasses import replace

    from sentence_transformers import SentenceTransformer

    from tokenpool import read_pooling_config

    folder = Path(shutil.copytree(dense_pipeline, tmp_path / "renamed"))
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    for module, name in zip(modules, ["encoder", "pool", "0", "norm"], strict=True):
        module["name"] = name
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    replace(read_pooling_config(dense_pipeline), strategies=("max",)).save(folder)
    saved = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in saved] == ["0", "1", "2", "3"]
    reference = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(Encoder(folder, device="cpu").encode(TEXTS), reference, atol=2e-6)
