"""Stop 59, corpus jobs, readers/writers and evaluation: a SPLADE model's precision rows give the bytes its
sparse rows are stored in, ..."""

from __future__ import annotations

import numpy as np
import pytest

# ------------------------------------------------------------------------------ sparse models' bytes per vector


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    """A tiny SparseEncoder folder that keeps 6 non-zeros per row (its saved max_active_dims)."""
    pytest.importorskip("sentence_transformers")
    from tinymodels import bert_folder, edit_json

    folder = bert_folder(tmp_path_factory.mktemp("splade59") / "splade", mlm=True)
    edit_json(folder / "config_sentence_transformers.json", max_active_dims=6)
    return folder


def _npz_bytes_per_row(run, folder, texts, tmp_path) -> int:
    """The mean bytes of a row in the .npz `tokenpool embed` writes for ``texts`` (its indices, values and row
    pointers; the leading 0 pointer left out), rounded: the independent reference."""
    source, out = tmp_path / "in.txt", tmp_path / "out.npz"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert run("embed", source, "-o", out, "--model", folder)[0] == 0
    with np.load(out) as data:
        stored = data["indices"].nbytes + data["data"].nbytes + data["indptr"][1:].nbytes
        assert len(data["indptr"]) - 1 == len(texts)
    return round(stored / len(texts))


def test_sts_precision_row_of_a_sparse_model_gives_its_stored_csr_bytes(splade_folder, run, tmp_path):
    """The STS precision table of a SPLADE model said 4 × vocabulary bytes per vector (122,088 for BERT's
    30,522 tokens) where its rows are stored as CSR: 6 non-zeros here, 56 bytes a row in the .npz that
    `tokenpool embed` writes. The row gives those bytes now (the mean over the pairs' distinct sentences)."""
    from tokenpool import Encoder
    from tokenpool.evaluation.precision import evaluate_precisions
    from tokenpool.evaluation.sts import Pairs

    first, second = ["a cat sleeps", "a dog barks", "red cars race"], ["the cat naps", "blue sky", "green car"]
    pairs = Pairs(first, second, np.array([4.0, 1.0, 3.0]))
    want = _npz_bytes_per_row(run, splade_folder, first + second, tmp_path)
    _, table, _ = evaluate_precisions(Encoder(splade_folder, device="cpu"), pairs, [None], ["float32"])
    assert [row.bytes for row in table[None]] == [want] and want < 100


def test_retrieval_precision_row_of_a_sparse_model_gives_its_stored_csr_bytes(splade_folder, run, tmp_path):
    """Likewise the retrieval precision row of a SPLADE model (4 × vocabulary): the mean .npz bytes of the
    documents' rows now, as `tokenpool embed` stores the corpus."""
    from tokenpool import Encoder
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions

    docs = ["doc about cats and dogs", "red car blue", "green fish swim", "tall tree old", "owl"]
    ids = [f"d{i}" for i in range(len(docs))]
    data = RetrievalSet(ids, docs, ["q0", "q1"], ["cat", "car"], {"q0": {"d0": 1}, "q1": {"d1": 1}})
    want = _npz_bytes_per_row(run, splade_folder, docs, tmp_path)
    (row,), _ = evaluate_retrieval_precisions(data, Encoder(splade_folder, device="cpu"), ["float32"])
    assert row.bytes == want and row.as_dict()["bytes_per_vector"] == want and want < 100
