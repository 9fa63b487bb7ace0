"""Bug hunt: the LlamaIndex embedding, Ray jobs and ``tokenpool embed`` against `Encoder` and the docs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

TEXTS = ["A man is playing a guitar.", "Two dogs run through a field.", "Hi"]


# ------------------------------------------------------------------------------------------ LlamaIndex


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory) -> Path:
    """A tiny BERT whose sentence-transformers pipeline ends in a Dense module (32 → 8)."""
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tinymodels import HIDDEN, bert_weights

    root = tmp_path_factory.mktemp("dense")
    bert_weights(root / "bert")
    torch.manual_seed(0)
    modules = [Transformer(str(root / "bert"), max_seq_length=48), Pooling(HIDDEN, "mean"), Dense(HIDDEN, 8)]
    SentenceTransformer(modules=modules, device="cpu").save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="module")
def qwen2_lasttoken(tmp_path_factory) -> Path:
    """A tiny last-token Qwen2 whose tokenizer has an EOS it does not append (so add_eos matters)."""
    pytest.importorskip("sentence_transformers")
    from test_encoder import _qwen2_weights, _save_sentence_transformer

    folder = tmp_path_factory.mktemp("qwen2-last")
    _qwen2_weights(folder, padding_side="left")
    return _save_sentence_transformer(folder, "lasttoken")


def _round_trips(embedding):
    """The embedding rebuilt by LlamaIndex's three ways: from_dict(to_dict()), from_json(to_json()), pickle."""
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    yield "dict", TokenPoolEmbedding.from_dict(embedding.to_dict())
    yield "json", TokenPoolEmbedding.from_json(embedding.to_json())
    yield "pickle", pickle.loads(pickle.dumps(embedding))


def test_llama_index_wrapped_encoder_round_trips_with_its_dense_modules(dense_folder):
    """An auto-pooling encoder wrapped with encoder= was saved as its strategy names; rebuilding from them
    dropped the folder's Dense module (8-dim vectors came back 32-dim)."""
    pytest.importorskip("llama_index.core")
    from tokenpool import Encoder
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    encoder = Encoder(dense_folder)
    expected = encoder.encode_documents(TEXTS)
    assert expected.shape == (3, 8)
    embedding = TokenPoolEmbedding(encoder=encoder)
    for how, rebuilt in _round_trips(embedding):
        got = np.asarray(rebuilt.get_text_embedding_batch(TEXTS))
        assert got.shape == expected.shape, how
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=how)


def test_llama_index_add_eos_is_an_option_and_survives_round_trips(qwen2_lasttoken):
    """add_eos was no field: ``add_eos=False`` was dropped silently, and a wrapped encoder's was lost."""
    pytest.importorskip("llama_index.core")
    from tokenpool import Encoder
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    without = Encoder(qwen2_lasttoken, add_eos=False)
    expected = without.encode_documents(TEXTS)
    assert Encoder(qwen2_lasttoken).add_eos  # the default appends EOS: different vectors
    assert np.abs(Encoder(qwen2_lasttoken).encode_documents(TEXTS) - expected).max() > 1e-3
    direct = TokenPoolEmbedding(str(qwen2_lasttoken), add_eos=False)
    wrapped = TokenPoolEmbedding(encoder=without)
    for how, embedding in [("direct", direct), ("wrapped", wrapped), *_round_trips(wrapped)]:
        got = np.asarray(embedding.get_text_embedding_batch(TEXTS))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=how)


@pytest.mark.parametrize("option", [{"normalise": False}, {"poolng": "cls"}, {"batch_size": 8}])
def test_llama_index_unknown_option_is_refused(option):
    """pydantic ignores unknown keywords: a typo such as normalise=False gave normalised vectors silently."""
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    (name,) = option
    with pytest.raises(TypeError, match=repr(name)):
        TokenPoolEmbedding(**option)


# ------------------------------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def local_ray(ray_session):
    """The session's local Ray (conftest.ray_session)."""
    yield ray_session


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_embed_parquet_takes_encode_batch_size(local_ray, tmp_path):
    """docs/integrations.md calls ``embed_parquet(..., encode_batch_size=256)``, but it was no parameter: it fell
    into the Encoder options and failed with "EncoderOptions got an unexpected keyword argument"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenpool import Encoder
    from tokenpool.integrations.ray import embed_parquet

    texts = [f"row {i}: " + "word " * (i % 7) for i in range(9)]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts}), source)
    with pytest.raises(ValueError, match="encode_batch_size"):  # checked before Ray reads anything
        embed_parquet(str(source), str(tmp_path / "bad"), encode_batch_size=0)
    assert not (tmp_path / "bad").exists()
    embed_parquet(str(source), str(tmp_path / "out"), batch_size=4, encode_batch_size=2)
    table = pq.read_table(tmp_path / "out")
    assert table.column("text").to_pylist() == texts
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(vectors, Encoder().encode(texts), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_embed_parquet_never_replaces_a_foreign_calibration_file(local_ray, tmp_path):
    """An int8 job wrote ``OUT.calibration.json`` over whatever was there (the plain ``tokenpool embed`` refuses a
    file that is not a tokenpool calibration); an earlier run's calibration is still replaced."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenpool import Encoder
    from tokenpool.core.quantize import Calibration, quantize
    from tokenpool.integrations.ray import embed_parquet

    texts = [f"text number {i} " + "word " * i for i in range(6)]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts}), source)
    encoder = Encoder()
    calibration = encoder.calibrate(texts)
    reused = calibration.save(tmp_path / "reused.json")

    mine = tmp_path / "out.calibration.json"
    mine.write_text('{"my": "notes"}\n')
    with pytest.raises(FileExistsError, match="out.calibration.json exists and is not a tokenpool calibration"):
        embed_parquet(str(source), str(tmp_path / "out"), precision="int8", calibration=str(reused))
    assert mine.read_text() == '{"my": "notes"}\n' and not (tmp_path / "out").exists()

    encoder.calibrate(["an earlier run", "of other texts"]).save(mine)  # an earlier run's: replaced
    embed_parquet(str(source), str(tmp_path / "out"), precision="int8", calibration=str(reused))
    assert Calibration.load(mine).to_dict() == calibration.to_dict()
    codes = np.stack(pq.read_table(tmp_path / "out").column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(codes, quantize(encoder.encode(texts), "int8", calibration))
