"""BM25, hybrid fusion and sparse (SPLADE) retrieval in `evaluate_retrieval` / ``tokenpool evaluate FOLDER``.

References written here, independently of the code under test: BM25 as the published formulas in plain Python
(Kamphuis et al. 2020, over scikit-learn's token pattern), reciprocal-rank fusion and min–max interpolation
as dictionary loops, and sparse search against the dense exact search of the same vectors."""

from __future__ import annotations

import json
import math
import re
import tracemalloc
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from clitools import assert_one_error_line
from hypothesis import given, settings
from hypothesis import strategies as st
from test_retrieval import write_beir

from tokenpool.core.sparse import sparsify
from tokenpool.errors import OptionError
from tokenpool.evaluation.beir import RetrievalSet
from tokenpool.evaluation.fusion import interpolate, reciprocal_rank_fusion
from tokenpool.evaluation.lexical import BM25Settings, bm25_rows
from tokenpool.evaluation.retrieval import evaluate_retrieval
from tokenpool.evaluation.search import BYTES_PER_SCORE, Ranking, exact_search, tie_ranks

bm25s = pytest.importorskip("bm25s")
pytest.importorskip("scipy")

WORDS = ["cat", "dog", "fish", "bird", "tree", "river", "stone", "cloud"]  # none is an English stop word
STOP = ["the", "and", "of", "a"]  # each one is


def reference_bm25(docs: list[str], queries: list[str], k1: float, b: float, method: str, stop: set) -> np.ndarray:
    """Queries × documents BM25 (float64) from the formulas, over lower-cased words of 2+ word characters."""

    def tokens(text: str) -> list[str]:
        return [t for t in re.findall(r"(?u)\b\w\w+\b", text.lower()) if t not in stop]

    doc_tokens = [tokens(d) for d in docs]
    n = len(docs)
    avgdl = sum(map(len, doc_tokens)) / n
    df = Counter(t for d in doc_tokens for t in set(d))
    out = np.zeros((len(queries), n))
    for qi, query in enumerate(queries):
        for di, terms in enumerate(doc_tokens):
            tf = Counter(terms)
            for term in tokens(query):
                if tf[term] == 0:
                    continue
                inner = (n - df[term] + 0.5) / (df[term] + 0.5)
                idf = {"lucene": math.log(1 + inner), "robertson": math.log(max(1.0, inner)), "atire": math.log(n / df[term])}[method]  # fmt: skip
                norm = k1 * (1 - b + b * len(terms) / avgdl)
                out[qi, di] += idf * (k1 + 1) * tf[term] / (tf[term] + norm)
    return out


texts = st.lists(st.sampled_from(WORDS + STOP + ["Cat", "DOG!", "x", ""]), max_size=12).map(" ".join)


def test_the_test_vocabulary_is_what_it_claims():
    from bm25s.stopwords import STOPWORDS_EN

    assert not set(WORDS) & set(STOPWORDS_EN) and set(STOP) <= set(STOPWORDS_EN)


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(texts, min_size=1, max_size=8),
    queries=st.lists(texts, min_size=1, max_size=4),
    k1=st.sampled_from([0.0, 0.9, 1.5]),
    b=st.sampled_from([0.0, 0.4, 0.75, 1.0]),
    method=st.sampled_from(["lucene", "robertson", "atire"]),
    stopwords=st.sampled_from(["en", "none"]),
)
def test_bm25_scores_equal_the_formulas(docs, queries, k1, b, method, stopwords):
    counts, weights = bm25_rows(docs, queries, BM25Settings(k1=k1, b=b, method=method, stopwords=stopwords))
    ours = (counts @ weights.T).toarray().astype(np.float64)
    want = reference_bm25(docs, queries, k1, b, method, set(STOP) if stopwords == "en" else set())
    # bm25s leaves out the constant factor k1 + 1 of Lucene's and Robertson's term weight (it ranks the same)
    scale = k1 + 1 if method in ("lucene", "robertson") else 1.0
    np.testing.assert_allclose(ours * scale, want, rtol=2e-6, atol=1e-6)


def test_stemming_matches_word_forms():
    docs, queries = ["the runner runs", "cats sleep"], ["running cat"]
    plain = (lambda q, d: (q @ d.T).toarray())(*bm25_rows(docs, queries, BM25Settings()))
    stemmed = (lambda q, d: (q @ d.T).toarray())(*bm25_rows(docs, queries, BM25Settings.parse("stemmer=english")))
    assert (plain == 0).all() and (stemmed > 0).all()


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("k1=fast", "k1 must be a number"),
        ("b=1.5", "0 <= b <= 1"),
        ("method=bm25l", "method must be one of"),
        ("stemmer=klingon", "unknown stemmer 'klingon'"),
        ("tokenizer=x", "unknown BM25 setting 'tokenizer'"),
        ("k1", "name=value pairs"),
        ("stopwords=fr", "stopwords must be 'en' or 'none'"),
    ],
)
def test_bad_bm25_settings_are_refused(spec, needle):
    with pytest.raises(OptionError, match=needle):
        BM25Settings.parse(spec).libraries()


# ---------------------------------------------------------------------------------------------- fusion


def reference_fusion(runs, tie_rank, depth, *, k=None, weights=None):
    """[(doc, score)] per query: RRF when ``k`` is given, else min–max interpolation with ``weights``; in
    exact fractions (weights as written in decimal), so that equal sums tie, whatever float rounding does."""
    out = []
    for q in range(len(runs[0])):
        fused: dict[int, Fraction] = {}
        for r, run in enumerate(runs):
            listed = run[q]
            if not listed:
                continue
            low, high = min(Fraction(s) for _, s in listed), max(Fraction(s) for _, s in listed)
            for rank, (doc, score) in enumerate(listed, start=1):
                if k is not None:
                    add = 1 / (Fraction(k) + rank)
                else:
                    add = Fraction(str(weights[r])) * ((Fraction(score) - low) / (high - low) if high > low else 1)
                fused[doc] = fused.get(doc, Fraction(0)) + add
        ordered = sorted(fused, key=lambda d: (-fused[d], -tie_rank[d]))[:depth]
        out.append([(d, float(fused[d])) for d in ordered])
    return out


@st.composite
def runs_to_fuse(draw):
    n_docs = draw(st.integers(1, 12))
    n_queries = draw(st.integers(1, 4))
    depth = draw(st.integers(1, 8))
    runs = []
    for _ in range(draw(st.integers(1, 3))):
        run = []
        for _ in range(n_queries):
            docs = draw(st.lists(st.integers(0, n_docs - 1), unique=True, max_size=min(depth, n_docs)))
            scores = sorted(draw(st.lists(st.integers(-3, 3), min_size=len(docs), max_size=len(docs))), reverse=True)
            run.append(list(zip(docs, [float(s) for s in scores], strict=True)))
        runs.append(run)
    tie_rank = np.array(draw(st.permutations(range(n_docs))), dtype=np.int64)
    return runs, tie_rank, depth


def as_ranking(run, depth):
    indices = np.full((len(run), depth), -1, dtype=np.int64)
    scores = np.full((len(run), depth), -np.inf, dtype=np.float32)
    for q, listed in enumerate(run):
        for r, (doc, score) in enumerate(listed):
            indices[q, r], scores[q, r] = doc, score
    return Ranking(indices, scores)


@settings(max_examples=80, deadline=None)
@given(runs_to_fuse(), st.sampled_from([0, 1, 60]), st.lists(st.sampled_from([0.0, 0.3, 0.5, 1.0]), min_size=3, max_size=3))
def test_fusion_equals_a_dictionary_loop(case, k, weights):
    runs, tie_rank, depth = case
    rankings = [as_ranking(run, depth) for run in runs]
    for got, want in (
        (reciprocal_rank_fusion(rankings, tie_rank, k=k, depth=depth), reference_fusion(runs, tie_rank, depth, k=k)),
        (
            interpolate(rankings, weights[: len(runs)], tie_rank, depth=depth),
            reference_fusion(runs, tie_rank, depth, weights=weights[: len(runs)]),
        ),
    ):
        for q, listed in enumerate(want):
            assert got.indices[q, : len(listed)].tolist() == [d for d, _ in listed]
            np.testing.assert_allclose(got.scores[q, : len(listed)], [s for _, s in listed], rtol=1e-6)
            assert (got.indices[q, len(listed) :] == -1).all()


# ---------------------------------------------------------------------------------------------- sparse search


@st.composite
def sparse_corpora(draw):
    n_docs = draw(st.integers(1, 7))
    counts = draw(st.lists(st.integers(1, 4), min_size=n_docs, max_size=n_docs))
    dim = draw(st.integers(1, 6))
    n_queries = draw(st.integers(1, 5))
    ints = st.sampled_from([0, 0, 0, 1, 2, 3])  # mostly zeros; small integers, so products are exact
    units = np.array(draw(st.lists(ints, min_size=sum(counts) * dim, max_size=sum(counts) * dim)), np.float32)
    queries = np.array(draw(st.lists(ints, min_size=n_queries * dim, max_size=n_queries * dim)), np.float32)
    doc_index = np.repeat(np.arange(n_docs), counts)
    perm = np.array(draw(st.permutations(range(len(doc_index)))), dtype=np.int64)
    tie_rank = np.array(draw(st.permutations(range(n_docs))), dtype=np.int64)
    max_bytes = draw(st.integers(BYTES_PER_SCORE, 48 * BYTES_PER_SCORE))
    return queries.reshape(n_queries, dim), units.reshape(-1, dim)[perm], doc_index[perm], n_docs, tie_rank, max_bytes


@settings(max_examples=60, deadline=None)
@given(sparse_corpora(), st.integers(1, 9))
def test_sparse_search_equals_dense_search_of_the_same_vectors(case, k):
    queries, units, doc_index, n_docs, tie_rank, max_bytes = case
    options = {"tie_rank": tie_rank, "n_docs": n_docs, "k": k, "max_bytes": max_bytes}
    dense = exact_search(queries, units, doc_index, **options)
    sparse = exact_search(sparsify(queries), sparsify(units), doc_index, **options)
    np.testing.assert_array_equal(sparse.indices, dense.indices)
    np.testing.assert_array_equal(sparse.scores, dense.scores)


def test_sparse_and_dense_cannot_be_mixed():
    with pytest.raises(ValueError, match="both dense arrays or both sparse rows"):
        exact_search(np.ones((1, 3), np.float32), sparsify(np.ones((2, 3), np.float32)))


def test_sparse_score_blocks_stay_within_the_byte_budget():
    import scipy.sparse

    rng = np.random.default_rng(0)
    queries = scipy.sparse.random(200, 5000, density=0.004, format="csr", dtype=np.float32, random_state=rng)
    units = scipy.sparse.random(30000, 5000, density=0.004, format="csr", dtype=np.float32, random_state=rng)
    queries.data[:] = rng.integers(1, 9, queries.nnz)  # small integers: exact sums whatever the order
    units.data[:] = rng.integers(1, 9, units.nnz)
    doc_index = np.arange(30000) // 3
    budget = 1 << 20
    exact_search(queries[:2], units[:6], doc_index[:6] % 2)  # first-call allocations out of the way
    tracemalloc.start()
    try:
        small = exact_search(queries, units, doc_index, k=100, max_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = exact_search(queries.toarray(), units.toarray(), doc_index, k=100)
    np.testing.assert_array_equal(small.indices, whole.indices)
    np.testing.assert_array_equal(small.scores, whole.scores)
    state = 3 * 200 * 100 * 8 + 2 * 10000 * 8  # running top-k keys, merged candidates, outputs; counts
    copies = 2 * queries.nnz * 8  # a query block transposed once; unit blocks are sliced without copies
    assert peak < budget + state + copies + (128 << 10), peak


# ---------------------------------------------------------------------------------------------- end to end


CORPUS = [
    {"_id": "cats", "title": "Cats", "text": "Cats sleep for most of the day, cats purr."},
    {"_id": "rust", "title": "", "text": "Rust is a systems programming language."},
    {"_id": "market", "title": "Markets", "text": "Stocks fell sharply on Monday as markets slid."},
    {"_id": "dogs", "title": "Dogs", "text": "Dogs bark and sleep at night."},
    {"_id": "empty", "title": "", "text": ""},
]
QUERIES = [
    {"_id": "q1", "text": "How long do cats sleep?"},
    {"_id": "q2", "text": "share prices dropped"},
    {"_id": "q3", "text": "which programming language is fast"},
]
QRELS = [("q1", "cats", 1), ("q2", "market", 2), ("q3", "rust", 1), ("q1", "dogs", 0)]


@pytest.fixture
def folder(tmp_path):
    return write_beir(tmp_path / "tiny", CORPUS, QUERIES, QRELS)


def test_bm25_row_ranks_by_the_reference_scores_and_needs_no_model(folder):
    result = evaluate_retrieval(folder, object(), modes="bm25")  # not an Encoder: never looked at
    (row,) = result.rows
    data = result.data
    assert (row.mode, row.pooling) == ("bm25", "k1=1.5 b=0.75 lucene stop=en stem=none")
    assert row.settings == {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "en", "stemmer": "none"}
    want = reference_bm25(data.doc_texts, data.query_texts, 1.5, 0.75, "lucene", set(bm25s.stopwords.STOPWORDS_EN))
    ties = tie_ranks(data.doc_ids)
    for q, scores in enumerate(want):
        matched = [d for d in sorted(range(len(scores)), key=lambda d: (-scores[d], -ties[d])) if scores[d] > 0]
        assert row.ranking.indices[q, : len(matched)].tolist() == matched
        assert (row.ranking.indices[q, len(matched) :] == -1).all()  # documents without a query term: not retrieved
    assert row.per_query["nDCG@10"].tolist() == [1.0, 0.0, 1.0]  # "share prices dropped": no shared word
    assert result.model == ""


@pytest.fixture(scope="module")
def short_encoder():
    from tokenpool import Encoder

    return Encoder(max_length=32)


def test_hybrid_rows_fuse_the_runs_without_a_second_model_pass(folder, short_encoder, monkeypatch):
    passes = []
    original = short_encoder.iter_token_batches
    monkeypatch.setattr(short_encoder, "iter_token_batches", lambda texts, **kw: passes.append(len(texts)) or original(texts, **kw))
    result = evaluate_retrieval(
        folder, short_encoder, pooling="mean,cls", modes=["hybrid:truncate"], rrf_k=10, hybrid_weight=0.3
    )
    assert passes == [3, 5]  # the queries once, the corpus once: fusion reads the two runs' rankings
    names = [(row.mode, row.pooling) for row in result.rows]
    assert names == [
        ("truncate", "mean"), ("truncate", "cls"), ("bm25", "k1=1.5 b=0.75 lucene stop=en stem=none"),
        ("hybrid:truncate", "mean, rrf k=10"), ("hybrid:truncate", "mean, bm25 weight 0.3"),
        ("hybrid:truncate", "cls, rrf k=10"), ("hybrid:truncate", "cls, bm25 weight 0.3"),
    ]  # fmt: skip
    data, ties = result.data, tie_ranks(result.data.doc_ids)

    def listed(ranking):
        return [[(int(d), float(s)) for d, s in zip(i, sc, strict=True) if d >= 0] for i, sc in zip(ranking.indices, ranking.scores, strict=True)]

    lexical = listed(result.row("k1=1.5 b=0.75 lucene stop=en stem=none", mode="bm25").ranking)
    for pooling in ("mean", "cls"):
        dense = listed(result.row(pooling).ranking)
        rrf = reference_fusion([lexical, dense], ties, 100, k=10)
        mixed = reference_fusion([lexical, dense], ties, 100, weights=[0.3, 0.7])
        for want, name in ((rrf, f"{pooling}, rrf k=10"), (mixed, f"{pooling}, bm25 weight 0.3")):
            row = result.row(name, mode="hybrid:truncate")
            assert [[d for d, _ in q] for q in listed(row.ranking)] == [[d for d, _ in q] for q in want]
            assert row.settings["dense"] == f"truncate/{pooling}" and row.units == len(data.doc_ids)


def test_cli_bm25_table_json_and_plot_load_no_model(folder, monkeypatch, capsys, tmp_path):
    from tokenpool import cli

    def refuse(options):
        raise AssertionError("bm25 alone must not load a model")

    monkeypatch.setattr(cli.common, "build_encoder", refuse)
    assert cli.main(["evaluate", str(folder), "--modes", "bm25", "--bm25", "k1=1.2,stopwords=none"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bm25: 5 documents, 3 queries")
    assert out[3].split()[:6] == ["bm25", "k1=1.2", "b=0.75", "lucene", "stop=none", "stem=none"]
    plot = tmp_path / "bm25.png"
    assert cli.main(["evaluate", str(folder), "--modes", "bm25", "--json", "--plot", str(plot)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "bm25" and summary["rows"][0]["settings"]["k1"] == 1.5
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--modes", "bm25", "--bm25", "b=2"], "0 <= b <= 1"),
        (["--modes", "hybrid:truncate", "--hybrid-weight", "1.5"], "--hybrid-weight must be a number in [0, 1]"),
        (["--modes", "hybrid:bogus"], "unknown document mode 'hybrid:bogus'"),
        (["--modes", "hybrid:truncate", "--rrf-k", "-1"], "--rrf-k must be a finite number >= 0"),
    ],
)
def test_cli_bad_hybrid_options_are_one_line_before_the_model(folder, monkeypatch, capsys, argv, needle):
    from tokenpool import cli

    monkeypatch.setattr(cli.common, "build_encoder", lambda options: pytest.fail("loaded the model"))
    assert_one_error_line(cli.main(["evaluate", str(folder), *argv]), capsys.readouterr().err, needle)


# ---------------------------------------------------------------------------------------------- SPLADE


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    from tinymodels import bert_folder

    from tokenpool import Encoder

    return Encoder(bert_folder(tmp_path_factory.mktemp("splade"), mlm=True), max_length=24, window_stride=6)


def test_splade_searches_csr_rows_by_dot_product(folder, splade):
    """Sparse rows all the way (never N × vocabulary dense), ranked as the dense exact search of the same
    vectors by dot product, documents sharing no term with a query left out."""
    from tokenpool.evaluation.modes import truncate_mode

    kept = {}

    def recording(encoder, texts, labels, **options):
        kept.update(truncate_mode(encoder, texts, labels, **options))
        return kept

    result = evaluate_retrieval(folder, splade, modes={"truncate": recording}, max_bytes=64)
    from tokenpool.core.sparse import SparseRows

    assert isinstance(kept[None].vectors, SparseRows)
    data = result.data
    docs, queries = splade.encode(data.doc_texts), splade.encode(data.query_texts)
    dense = exact_search(queries, docs, tie_rank=tie_ranks(data.doc_ids), k=100).matched()
    np.testing.assert_array_equal(result.row().ranking.indices, dense.indices)
    np.testing.assert_allclose(result.row().ranking.scores, dense.scores, rtol=1e-5)
    longer = RetrievalSet(data.doc_ids, [" ".join([t] * 4) for t in data.doc_texts], data.query_ids, data.query_texts, data.qrels)
    late = evaluate_retrieval(longer, splade, modes=["late-128", "hybrid:late-128"], max_bytes=64)
    assert [row.mode for row in late.rows] == ["late-128", "bm25", "hybrid:late-128", "hybrid:late-128"]
    assert late.rows[0].units > len(data.doc_ids)  # chunks of 22 tokens (128 capped at the window), CSR rows


def test_sparse_rows_with_nan_are_refused_by_row():
    from tokenpool.evaluation.units import search_form

    rows = sparsify(np.array([[0, 1, 0], [0, 0, 2], [3, 0, 0]], np.float32))
    rows.values[2] = np.nan
    with pytest.raises(ValueError, match="vector 2 holds NaN"):
        search_form(rows)


def test_a_retrieval_set_of_stop_words_scores_nothing():
    data = RetrievalSet(["a", "b"], ["the", ""], ["q"], ["of the"], {"q": {"a": 1}})
    (row,) = evaluate_retrieval(data, None, modes="bm25").rows
    assert (row.ranking.indices == -1).all() and row.scores.ndcg_at_10 == 0.0
