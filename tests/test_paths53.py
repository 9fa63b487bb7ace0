"""Entry points that should give the same vectors for the same texts and options (stop 53's hunt): the Python
`Encoder`, `tokenpool embed`, `tokenpool serve` (in-process on 127.0.0.1, a free port, stopped by the test) and
the integrations, each compared with an independent reference (sentence-transformers) or with one another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sentence_transformers")
httpx = pytest.importorskip("httpx")

from serve_fakes import post  # noqa: E402
from tinymodels import bert_weights  # noqa: E402

from tokenpool import Encoder  # noqa: E402

TEXTS = ["a cat sat on the mat", "Hello World, A LONGER sentence with MANY words.", "x", ""]


@pytest.fixture(scope="module")
def normalized_splade(tmp_path_factory) -> Path:
    """A SparseEncoder folder (MLMTransformer → SpladePooling max → Normalize) saving max_active_dims=5, written
    by sentence-transformers: its rows are normalised, then cut to their 5 largest values."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Normalize
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    folder = bert_weights(tmp_path_factory.mktemp("p53") / "splade", mlm=True)
    modules = [MLMTransformer(str(folder), max_seq_length=48), SpladePooling(pooling_strategy="max"), Normalize()]
    SparseEncoder(modules=modules, device="cpu", max_active_dims=5).save(str(folder))
    return folder


def _sparse_answer(rows: list, width: int) -> np.ndarray:
    """/embed_sparse's ``[[{"index", "value"}, ...], ...]`` as dense rows."""
    dense = np.zeros((len(rows), width), dtype=np.float32)
    for row, entries in zip(dense, rows, strict=True):
        indices = [entry["index"] for entry in entries]
        assert indices == sorted(indices)
        row[indices] = [entry["value"] for entry in entries]
    return dense


def test_served_sparse_rows_are_normalised_before_max_active_dims(normalized_splade):
    """A normalising SPLADE folder with max_active_dims: sentence-transformers (and `Encoder.encode`, the command
    line, LlamaIndex's sparse functions) normalise each row, then keep its 5 largest values (norms well below 1
    on a random model). The server kept the 5 largest first and normalised those, so its /embed_sparse and
    /embed rows had norm 1: other vectors than every other entry point's."""
    from sentence_transformers import SparseEncoder

    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    theirs = SparseEncoder(str(normalized_splade), device="cpu").encode(TEXTS, convert_to_tensor=True)
    theirs = theirs.to_dense().numpy()
    assert (np.count_nonzero(theirs, axis=1) == 5).all() and (np.linalg.norm(theirs, axis=1) < 0.5).all()
    encoder = Encoder(normalized_splade, device="cpu")
    np.testing.assert_allclose(encoder.encode(TEXTS), theirs, rtol=1e-5, atol=1e-7)
    with start_server(EncoderRunner(encoder, name="splade")) as server:
        sparse = post(server, "/embed_sparse", {"inputs": TEXTS})
        assert sparse.status_code == 200, sparse.text
        np.testing.assert_allclose(_sparse_answer(sparse.json(), theirs.shape[1]), theirs, rtol=1e-5, atol=1e-7)
        dense = post(server, "/embed", {"inputs": TEXTS})
        assert dense.status_code == 200, dense.text
        np.testing.assert_allclose(np.asarray(dense.json(), dtype=np.float32), theirs, rtol=1e-5, atol=1e-7)
        raw = post(server, "/embed", {"inputs": TEXTS, "normalize": False})  # the 5 largest, as they are
        np.testing.assert_allclose(raw.json(), encoder.encode(TEXTS, normalize=False), rtol=1e-5, atol=1e-7)
        said = post(server, "/embed", {"inputs": TEXTS, "normalize": True})  # the model's own step, said again
        np.testing.assert_allclose(said.json(), theirs, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def left_truncating(tmp_path_factory) -> tuple[Path, Path]:
    """(a dense BERT folder that truncates on the right, as usual; the same folder whose tokenizer_config.json
    says truncation_side "left", as some decoder embedders' do)."""
    import shutil

    from tinymodels import bert_folder, edit_json

    root = tmp_path_factory.mktemp("p53-side")
    right = bert_folder(root / "right", pooling="mean", normalize=True)
    left = Path(shutil.copytree(right, root / "left"))
    edit_json(left / "tokenizer_config.json", truncation_side="left")
    return right, left


def test_served_inputs_are_truncated_on_the_models_side(left_truncating):
    """A folder whose tokenizer truncates on the left: `Encoder.encode`, `tokenpool embed` and
    sentence-transformers keep each long text's last tokens, while the server cut OpenAI inputs and TEI
    ``"truncate": true`` inputs on the right (TEI's default direction) and answered other vectors. A request
    without ``truncation_direction`` now truncates on the model's side; one that sends it gets that side."""
    from sentence_transformers import SentenceTransformer

    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    right, left = left_truncating
    texts = ["first words then " + "many middle words " * 30 + "and the last words", "short"]
    theirs = SentenceTransformer(str(left), device="cpu")
    theirs.max_seq_length = 16
    expected = theirs.encode(texts)
    encoder = Encoder(left, device="cpu", max_length=16)
    np.testing.assert_allclose(encoder.encode(texts), expected, rtol=1e-5, atol=1e-6)
    cut_right = Encoder(right, device="cpu", max_length=16).encode(texts)
    assert np.abs(cut_right[0] - expected[0]).max() > 1e-2  # (the two sides differ on this text)
    with start_server(EncoderRunner(encoder, name="left")) as server:
        openai = post(server, "/v1/embeddings", {"input": texts})
        assert openai.status_code == 200, openai.text
        vectors = [item["embedding"] for item in openai.json()["data"]]
        np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
        tei = post(server, "/embed", {"inputs": texts, "truncate": True})
        np.testing.assert_allclose(tei.json(), expected, rtol=1e-5, atol=1e-6)
        for side, want in (("Right", cut_right), ("Left", expected)):  # as the request says
            tei = post(server, "/embed", {"inputs": texts, "truncate": True, "truncation_direction": side})
            np.testing.assert_allclose(tei.json(), want, rtol=1e-5, atol=1e-6)
