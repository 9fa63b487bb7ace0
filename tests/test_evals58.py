"""Stop 58, evaluation: RRF ranks like its float64 formula at any k, STS on a sparse model keeps CSR rows,
a precision's "kept" needs a positive float32 figure, ..."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.fusion import reciprocal_rank_fusion
from tokenpool.evaluation.search import Ranking


@pytest.mark.parametrize("k", [0, 60, 1e7, 1e8, 3e9])
def test_rrf_ranks_like_its_formula_at_any_k(k):
    """From k ≈ 1e7, 1 / (k + rank) of neighbouring ranks rounded to one float32 and fused documents tied,
    then ranked by id. The fused list is the formula's now: as the float64 loop ranks it where float64 can
    tell the sums apart (k up to 1e7 here), and always as exact fractions rank it (equal sums tie: 1/96 +
    1/120 = 1/80 + 1/160), with the exact sums rounded to float64 as scores."""
    from fractions import Fraction

    rng = np.random.default_rng(7)
    n_docs, depth = 400, 100
    tie_rank = rng.permutation(n_docs)
    lists = [np.stack([rng.permutation(n_docs)[:depth] for _ in range(3)]) for _ in range(2)]
    rankings = [Ranking(ix, np.zeros(ix.shape, np.float32)) for ix in lists]
    fused = reciprocal_rank_fusion(rankings, tie_rank, k=k, depth=depth)
    for q in range(3):
        loop: dict[int, float] = {}
        exact: dict[int, Fraction] = {}
        for ix in lists:
            for rank, doc in enumerate(ix[q].tolist(), start=1):
                loop[doc] = loop.get(doc, 0.0) + 1.0 / (k + rank)
                exact[doc] = exact.get(doc, Fraction(0)) + 1 / (Fraction(k) + rank)
        want = sorted(exact, key=lambda d: (-exact[d], -tie_rank[d]))[:depth]
        assert fused.indices[q].tolist() == want
        assert fused.scores[q].tolist() == [float(exact[d]) for d in want]
        if k <= 1e7:
            assert want == sorted(loop, key=lambda d: (-loop[d], -tie_rank[d]))[:depth]


# ------------------------------------------------------------------------------ STS on a sparse model


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    from tinymodels import bert_folder

    from tokenpool import Encoder

    return Encoder(bert_folder(tmp_path_factory.mktemp("splade"), mlm=True), device="cpu")


STS_PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", 4.8),
    ("A cat sleeps on the sofa.", "The stock market fell sharply.", 0.2),
    ("Two dogs run in a field.", "Dogs are running outside.", 3.9),
    ("She is cooking dinner.", "A woman prepares a meal.", 4.1),
    ("The train is late again.", "Rain falls over the mountains.", 0.6),
    ("Children play football.", "Kids are playing soccer in the park.", 4.3),
]


def test_sts_on_a_sparse_model_scores_csr_rows_without_densifying(splade):
    """`pool_pairs` pooled a SPLADE model's sentences into dense vocabulary-wide rows (~330 MB on STS-B);
    they stay CSR rows now, and the Spearman, the precision table and the runtime comparison are those of
    the model's own vectors (cosines in float64 of `encode`'s dense rows, an independent reference)."""
    from tokenpool.evaluation.precision import evaluate_precisions
    from tokenpool.evaluation.runtimes import compare_pairs
    from tokenpool.evaluation.sts import Pairs, evaluate_pairs, pool_pairs, spearman

    pairs = Pairs(*(list(column) for column in zip(*STS_PAIRS, strict=True)))
    vectors, i1, i2 = pool_pairs(splade, pairs, [None])
    assert hasattr(vectors[None], "tocsr") and vectors[None].shape[0] == 12
    a, b = (np.asarray(splade.encode(side), dtype=np.float64) for side in (pairs.first, pairs.second))
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    want = 100 * spearman(cosine, pairs.scores)
    assert evaluate_pairs(splade, pairs, [None])[None] == pytest.approx(want, abs=1e-9)
    scores, table, _ = evaluate_precisions(splade, pairs, ["splade"], ["float32"])
    assert scores["splade"] == pytest.approx(want, abs=1e-9) and table["splade"][0].kept == 1.0
    (row,) = compare_pairs([("torch", lambda: splade)], pairs)
    assert row.scores["Spearman"] == pytest.approx(want, abs=1e-9) and row.cosine["min"] == pytest.approx(1.0)


def test_retrieval_precision_float32_row_of_a_sparse_model_is_its_retrieval_row(splade):
    """`evaluate_retrieval_precisions(data, splade, ["float32"])` (the only precision a sparse model takes)
    ranked vocabulary-wide dense rows by cosine: nDCG@10 43.5 where `evaluate_retrieval` (CSR rows by dot
    product, as a SparseEncoder scores them) gives 27.9 on this set. Its row is `evaluate_retrieval`'s now."""
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    animals = ["cat", "dog", "fish", "bird", "cow", "pig", "hen", "fox", "owl", "bee"]
    colours = ["red", "blue", "green", "tall", "short", "wide", "thin", "old", "new", "big"]
    docs = [f"document {i} about {a} and {c}" for i, (a, c) in enumerate(zip(animals * 3, colours * 3, strict=True))]
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 10}": 1} for i in range(5)}
    queries = ["cat red", "dog blue", "fish green", "owl big", "bee new"]
    data = RetrievalSet([f"d{i}" for i in range(len(docs))], docs, list(qrels), queries, qrels)
    (row,), calibration = evaluate_retrieval_precisions(data, splade, ["float32"])
    assert row.scores == evaluate_retrieval(data, splade).rows[0].scores and calibration is None


# ------------------------------------------------------------------------------ precision "kept"


def test_kept_is_no_ratio_when_the_float32_spearman_is_negative(small):
    """"kept" divided a precision's Spearman by float32's: two negative figures made a worse code keep more
    than 100% (−20 of −10 is 200%). Without a positive float32 figure there is no ratio: None / null / n/a,
    as for a figure of 0 (docs/cli.md)."""
    from tokenpool.evaluation.precision import evaluate_precisions, format_precision_table
    from tokenpool.evaluation.sts import Pairs

    same = ["a cat on a mat", "dogs bark at night", "the sun is hot", "rain in spain"]
    other = ["stock prices fell", "a violin concerto", "quantum field theory", "green tea leaves"]
    pairs = Pairs(same + same, same + other, np.array([0.0] * 4 + [5.0] * 4))
    scores, table, _ = evaluate_precisions(small, pairs, ["mean"], ["int8", "ubinary"])
    assert scores["mean"] < 0
    assert [row.kept for row in table["mean"]] == [None, None, None]
    assert [line.split()[-1] for line in format_precision_table("mean", table["mean"], "x").splitlines()[3:]] == [
        "n/a"
    ] * 3


# ------------------------------------------------------------------------------ BM25 scores ≤ 0


def test_bm25_robertson_retrieves_nothing_for_a_term_in_exactly_half_the_documents():
    """docs/evaluation.md said a robertson term has idf ≤ 0 "in over half the documents": at exactly half,
    log((N − df + 0.5) / (df + 0.5)) is log 1 = 0 (bm25s scores those documents 0), so they are not retrieved
    either, where lucene (idf always > 0) and atire (≤ 0 only in every document) retrieve both."""
    pytest.importorskip("bm25s")
    import math

    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    docs = ["apple banana", "apple cherry", "grape melon", "kiwi lemon"]
    data = RetrievalSet([f"d{i}" for i in range(4)], docs, ["q"], ["apple"], {"q": {"d0": 1}})
    assert math.log((4 - 2 + 0.5) / (2 + 0.5)) == 0.0
    for method, found in (("robertson", []), ("lucene", [1, 0]), ("atire", [1, 0])):
        ranking = evaluate_retrieval(data, modes="bm25", bm25=f"method={method}").rows[0].ranking
        assert [d for d in ranking.indices[0].tolist() if d >= 0] == found  # (ties: larger id first)


# ------------------------------------------------------------------------------ late units of a sparse model


def test_late_and_windows_units_of_a_sparse_model_keep_its_max_active_dims(tmp_path):
    """A SparseEncoder folder saving max_active_dims keeps that many non-zeros in every row it encodes, late
    chunks included (`encode_chunks`), and the truncate and naive modes kept them; the windows and late-N
    modes kept every non-zero, so their rows were not the model's. They are `encode_chunks`' rows now."""
    pytest.importorskip("sentence_transformers")
    from tinymodels import bert_folder, edit_json

    from tokenpool import Encoder
    from tokenpool.evaluation.modes import DOCUMENT_MODES

    folder = bert_folder(tmp_path / "splade", mlm=True)
    edit_json(folder / "config_sentence_transformers.json", max_active_dims=5)
    encoder = Encoder(folder, max_length=24, device="cpu")
    texts = ["the cat sat on the mat " * 6, "a short one", "dogs bark at night and sleep all day " * 4]
    options = {"batch_size": 4, "prompt": None, "prompt_name": None, "progress": False}
    units = DOCUMENT_MODES["late-128"](encoder, texts, [None], **options)[None]
    late = encoder.encode_chunks(texts, chunks="tokens:22:0", chunking="late")
    assert units.doc_index.tolist() == late.doc.tolist()
    np.testing.assert_allclose(units.vectors.to_dense(), late.vectors, rtol=1e-6, atol=1e-7)
    windows = DOCUMENT_MODES["windows"](encoder, texts, [None], **options)[None].vectors.to_dense()
    assert ((windows != 0).sum(axis=1) <= 5).all()
    np.testing.assert_allclose(windows, encoder.encode(texts, long_documents="windows"), rtol=1e-6, atol=1e-7)
