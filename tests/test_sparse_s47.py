"""SPLADE rows and compact codes (stop 47's hunt): each case compares tokenpool with sentence-transformers'
SparseEncoder on a tiny random SPLADE folder, or checks a clear refusal naming the value."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("sentence_transformers")
from tinymodels import bert_folder  # noqa: E402
from tinymodels import edit_json as edit  # noqa: E402

from tokenpool import Encoder  # noqa: E402

TEXTS = ["a cat sat on the mat " * 6, "Hello World, A LONGER sentence with MANY words.", "x", ""]


@pytest.fixture(scope="module")
def splade(tmp_path_factory) -> Path:
    """A SparseEncoder folder (MLMTransformer → SpladePooling max) saved by sentence-transformers."""
    return bert_folder(tmp_path_factory.mktemp("s47") / "splade", mlm=True)


@pytest.fixture
def limited(splade, tmp_path) -> Path:
    """``splade`` saving max_active_dims=7, as a SparseEncoder trained with a limit does."""
    folder = Path(shutil.copytree(splade, tmp_path / "limited"))
    edit(folder / "config_sentence_transformers.json", max_active_dims=7)
    return folder


@pytest.mark.parametrize("long_documents", ["truncate", "windows"])
def test_streamed_rows_keep_max_active_dims_as_encode_does(limited, long_documents):
    """iter_vector_batches ("stream encode") gave a max_active_dims=7 folder's rows with every non-zero
    (thousands on a random model) while encode kept 7, as sentence-transformers does."""
    from sentence_transformers import SparseEncoder

    theirs = SparseEncoder(str(limited), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    encoder = Encoder(limited, device="cpu", long_documents=long_documents)
    streamed = np.zeros_like(theirs)
    for indices, rows in encoder.iter_vector_batches(TEXTS, batch_size=2):
        streamed[indices] = rows
    assert (np.count_nonzero(streamed, axis=1) == 7).all()
    np.testing.assert_allclose(streamed, encoder.encode(TEXTS), rtol=1e-6, atol=1e-7)  # (other batches)
    np.testing.assert_array_equal(streamed != 0, theirs != 0)
    np.testing.assert_allclose(streamed, theirs, rtol=1e-5, atol=1e-6)


def test_a_dense_request_keeps_max_active_dims(limited):
    """Encoder.run of an EncodeRequest(dense=True) (the N × V rows of a corpus job's --dense) kept every
    non-zero of a max_active_dims=7 folder: the folder's limit was read only for sparse rows."""
    from tokenpool.jobs import EncodeRequest

    encoder = Encoder(limited, device="cpu")
    rows = encoder.run(EncodeRequest(dense=True), TEXTS)
    assert (np.count_nonzero(rows, axis=1) == 7).all()
    np.testing.assert_array_equal(rows, encoder.encode(TEXTS))


def test_embed_dense_keeps_max_active_dims(run, limited, tmp_path):
    """`tokenpool embed --dense` wrote a max_active_dims=7 folder's N × V rows with every non-zero; the
    library's encode (and the sparse outputs) keep 7 per row."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    code, _, err = run("embed", corpus, "-o", tmp_path / "out.npy", "--model", limited, "--dense")
    assert code == 0, err
    written = np.load(tmp_path / "out.npy")
    assert (np.count_nonzero(written, axis=1) == 7).all()
    np.testing.assert_allclose(written, Encoder(limited, device="cpu").encode(TEXTS[:3]), rtol=1e-6, atol=1e-7)


def test_tokens_past_the_tokenizers_vocabulary_are_null(run, tmp_path):
    """A SPLADE model whose MLM head is wider than its tokenizer (logits padded to 30528 for 30522 tokens, as
    ModernBERT pads 50280 to 50368) wrote the string "None" as the token of every padded column — a real token
    of cased vocabularies; sentence-transformers' decode gives None, and the row now holds null there."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling
    from tinymodels import minilm_tokenizer
    from transformers import BertConfig, BertForMaskedLM

    folder, tokenizer = tmp_path / "padded", minilm_tokenizer()
    torch.manual_seed(0)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    BertForMaskedLM(BertConfig(vocab_size=30528, **sizes)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    modules = [MLMTransformer(str(folder), max_seq_length=48), SpladePooling(pooling_strategy="max")]
    SparseEncoder(modules=modules, device="cpu").save(str(folder))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a cat sat on the mat\n", encoding="utf-8")
    code, _, err = run("embed", corpus, "-o", tmp_path / "out.jsonl", "--model", folder, "--tokens")
    assert code == 0, err
    row = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert max(row["indices"]) >= 30522  # a random head: padded columns are non-zero too
    assert row["tokens"] == tokenizer.convert_ids_to_tokens(row["indices"])
    assert None in row["tokens"] and "None" not in row["tokens"]


@pytest.mark.parametrize("given", ["corpus.calibration.json", {"minimum": [0.0], "maximum": [1.0]}])
def test_dequantize_names_a_calibration_that_is_not_one(given):
    """dequantize(codes, "int8", "corpus.calibration.json") raised AttributeError: 'str' object has no
    attribute 'check' (quantize, and Encoder.encode taking a path, name the type)."""
    from tokenpool.core.quantize import dequantize

    with pytest.raises(TypeError, match=f"Calibration.load.*got {type(given).__name__}"):
        dequantize(np.zeros((1, 3), np.int8), "int8", given)


@given(
    st.lists(st.floats(0, 4, width=32), min_size=1, max_size=12),
    st.integers(0, 11),
    st.sampled_from([-1e-9, -1e-12, 0.0, 1e-12]),
    st.one_of(st.none(), st.integers(1, 12)),
)
def test_threshold_keeps_exactly_the_values_above_it(values, pick, offset, top_k):
    """threshold was compared in float32 (numpy's rule for a Python float against a float32 array): a value
    0.3 (float32: 0.30000001192...) was dropped with threshold=0.30000001, below it."""
    from tokenpool.core.sparse import sparsify

    row = np.asarray(values, dtype=np.float32)
    threshold = max(0.0, float(row[pick % row.size]) * (1 + offset))
    kept = sparsify(row[None, :], threshold=threshold, top_k=top_k)
    above = [j for j, v in enumerate(row.tolist()) if v > threshold]
    if top_k is not None:
        above = sorted(sorted(above, key=lambda j: (-row[j], j))[:top_k])
    assert kept.indices.tolist() == above


@given(st.integers(1, 5), st.integers(-7, 7))
def test_a_row_counted_from_the_end_is_that_row(rows, i):
    """SparseRows.row(-1) gave an empty row (indptr[-1]..indptr[0]) and row(-2) the last one; row(-n-1) gave
    row 0 instead of an IndexError."""
    from tokenpool.core.sparse import sparsify

    dense = np.arange(1, rows * 3 + 1, dtype=np.float32).reshape(rows, 3) * (np.arange(3) != 1)
    sparse = sparsify(dense)
    if -rows <= i < rows:
        indices, values = sparse.row(i)
        assert indices.tolist() == [0, 2] and values.tolist() == dense[i][[0, 2]].tolist()
    else:
        with pytest.raises(IndexError, match=f"row {i} is not one of the {rows} rows"):
            sparse.row(i)


@pytest.mark.parametrize("normalize", [None, True])
def test_late_chunks_keep_max_active_dims(splade, limited, normalize):
    """Late chunks of a max_active_dims=7 folder came out with every non-zero (naive chunks kept 7): each chunk
    row is now the unlimited folder's row (normalised first if asked, as sentence-transformers normalises before it
    keeps max_active_dims; stop 53) with only its 7 largest values kept."""
    doc = "a cat sat on the mat. " * 12
    options = {"chunks": "tokens:16:0", "chunking": "late", "normalize": normalize}
    ours = Encoder(limited, device="cpu").encode_chunks([doc], **options).vectors
    full = Encoder(splade, device="cpu").encode_chunks([doc], **{**options, "normalize": None}).vectors
    if normalize:
        full /= np.linalg.norm(full, axis=1, keepdims=True)
    expected = np.zeros_like(full)
    for i, row in enumerate(full):  # a plain loop: the 7 largest of each row
        top = np.argsort(-row, kind="stable")[:7]
        expected[i, top] = row[top]
    assert (np.count_nonzero(ours, axis=1) == 7).all()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)


def test_evaluation_pools_keep_max_active_dims(limited):
    """STS / retrieval evaluation pooled a max_active_dims=7 folder with every non-zero (its scores were not those
    of the model's encode): each way of pooling now keeps the folder's limit, as encode does."""
    from tokenpool.evaluation.common import encode_every_way

    encoder = Encoder(limited, device="cpu")
    pooled = encode_every_way(encoder, TEXTS, [None, "splade"])
    np.testing.assert_allclose(pooled[None], encoder.encode(TEXTS), rtol=1e-6, atol=1e-7)
    assert (np.count_nonzero(pooled["splade"], axis=1) == 7).all()
    rows = encode_every_way(encoder, TEXTS, [None], sparse_rows=True)[None]
    assert [len(rows.row(i)[0]) for i in range(len(TEXTS))] == [7] * len(TEXTS)


@pytest.mark.parametrize("threshold", [10**400, -(10**400)])
def test_a_threshold_past_floats_range_is_refused_as_not_finite(threshold):
    """check_sparse_options(3, 10**400) raised numpy's "ufunc 'isfinite' not supported" TypeError."""
    from tokenpool.core.sparse import check_sparse_options

    with pytest.raises(ValueError, match="threshold must be a finite number ≥ 0"):
        check_sparse_options(3, threshold)
