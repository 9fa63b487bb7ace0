"""Options of the LlamaIndex embedding, Ray jobs and ``tokenpool embed``: round trips, refusals of unread or
coerced options, never replacing a foreign file — against `Encoder` and the docs."""

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


# embed_parquet's encode_batch_size: test_integration_ray.test_embed_parquet_writes_vectors_every_row_once


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


# ------------------------------------------------------------------------------------------ tokenpool embed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chunking", "naive"], "--chunking is not supported without --chunks"),
        (["--spans-field", "marks"], "--spans-field is not supported without --chunks spans"),
        (["--chunks", "tokens:8", "--spans-field", "marks"], "--spans-field is not supported without --chunks spans"),
        (["--id-field", "_id"], "--id-field is not supported without --chunks or --token-vectors"),
        (["--calibration-size", "5"], "--calibration-size is not supported without --precision int8 or uint8"),
        (["--precision", "binary", "--calibration-size", "5"], "--calibration-size is not supported without"),
        (["--precision", "int8", "--calibration", "CAL", "--calibration-size", "5"],
         "--calibration-size is not supported with --calibration"),
    ],
)
def test_embed_refuses_options_nothing_reads(run, tmp_path, flags, message):
    """These options were accepted and ignored (exit 0), where --window-stride without windows is refused:
    --chunking and --spans-field without the chunks that read them, --id-field without chunk or token rows,
    --calibration-size without a calibration to compute. Now one line on stderr, exit 2, nothing written."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a first text", "_id": "a", "marks": [[0, 1]]}\n{"text": "second", "_id": "b"}\n')
    calibration = tmp_path / "cal.json"
    flags = [str(calibration) if flag == "CAL" else flag for flag in flags]
    for ray in ([], ["--ray"]):
        if ray and flags[0] == "--id-field":
            continue  # --ray refuses --id-field itself (test_cli)
        out = tmp_path / ("out" if ray else "out.npy")
        code, _, err = run("embed", source, "-o", out, *flags, *ray)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (ray, err)
        assert "Traceback" not in err and not out.exists()


def test_embed_reads_the_chunk_options_it_is_given(run, tmp_path):
    """The refusals above leave --chunking / --spans-field / --id-field working with the chunks that read them."""
    from tokenpool import Encoder

    texts = ["a first text of some words", "second one"]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(
        f'{{"text": "{t}", "_id": "r{i}", "marks": [[0, {len(t) // 2}], [{len(t) // 2}, {len(t)}]]}}\n'
        for i, t in enumerate(texts)
    ))  # fmt: skip
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", source, "-o", out, "--chunks", "spans", "--spans-field", "marks", "--chunking",
                       "naive", "--id-field", "_id", "-q")  # fmt: skip
    assert code == 0, err
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pydict()
    spans = [[[0, len(t) // 2], [len(t) // 2, len(t)]] for t in texts]
    want = Encoder().encode_chunks(texts, chunks="spans", spans=spans, chunking="naive")
    assert table["id"] == ["r0", "r0", "r1", "r1"] and table["start"] == want.start.tolist()
    np.testing.assert_allclose(np.array(table["embedding"]), want.vectors, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("option", "value"),
    [("trust_remote_code", "yes"), ("normalize", "no"), ("truncate_dim", True), ("add_eos", 1),
     ("max_length", 12.0), ("embed_batch_size", "8")],
)
def test_llama_index_options_are_not_coerced(option, value):
    """pydantic's lax mode read trust_remote_code="yes" as True (security.md: a truthy non-bool is refused),
    normalize="no" as False and truncate_dim=True as 1; the Encoder refuses each of these."""
    from pydantic import ValidationError

    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    with pytest.raises(ValidationError, match=option):
        TokenPoolEmbedding(**{option: value})


def test_ray_column_errors_list_only_the_callers_columns():
    """`--ray --field body` on .jsonl said "columns: ['text', '__tokenpool_doc']": the row number tokenpool adds
    for chunk rows was listed as if the input had it."""
    import pyarrow as pa

    from tokenpool.integrations.ray import DOC_SOURCE, EmbedBatch
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    embed = EmbedBatch("body", "embedding", EncoderOptions(), EncodeRequest(chunks="tokens:8", batch_size=4))
    batch = pa.table({"text": ["a b c"], DOC_SOURCE: [0]})
    with pytest.raises(ValueError, match=r"column 'body' not in the dataset; columns: \['text'\]$"):
        embed(batch)
