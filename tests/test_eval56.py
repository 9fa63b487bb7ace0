"""Stop 56, evaluation: duplicate documents in tie order, int8 calibrations, messages, metric references."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.evaluation.search import exact_search, tie_ranks


@pytest.mark.parametrize("dimension", [384, 37])
def test_duplicate_documents_score_alike_and_follow_tie_rank(dimension):
    """Equal document vectors anywhere in the corpus get bit-equal scores, so equal documents rank by id in
    descending byte order (trec_eval's order, as the docstring promises), whatever their place in the block."""
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((3000, dimension)).astype(np.float32)
    copies = np.arange(0, 3000, 37)
    docs[(copies + 1500) % 3000] = docs[copies]
    queries = rng.standard_normal((200, dimension)).astype(np.float32)
    ids = [f"doc-{i:05d}" for i in range(3000)]
    ranking = exact_search(queries, docs, tie_rank=tie_ranks(ids), k=3000)
    score_of = np.empty((200, 3000), dtype=np.float32)
    np.put_along_axis(score_of, ranking.indices, ranking.scores, axis=1)
    position = np.argsort(ranking.indices, axis=1)
    for a in copies:
        b = (a + 1500) % 3000
        assert (score_of[:, a] == score_of[:, b]).all()
        first, second = (a, b) if ids[a].encode() > ids[b].encode() else (b, a)
        assert (position[:, first] < position[:, second]).all()
    # the rest of the order: float64 scores of the float32 vectors agree up to float32 rounding
    exact = queries.astype(np.float64) @ docs.astype(np.float64).T
    assert np.allclose(score_of, exact, rtol=0, atol=1e-4)


def test_the_encoders_own_pooling_is_named_so_in_precision_messages(small):
    """``evaluate_precisions(labels=[None])`` (None: the encoder's own pooling, as `evaluate_pairs` reads it)
    said "pooling None" in its errors and its table heading; they name the encoder's own pooling now."""
    from tokenpool.errors import CorpusError, OptionError
    from tokenpool.evaluation.precision import evaluate_precisions, format_precision_table
    from tokenpool.evaluation.sts import Pairs, evaluate_pairs

    same = Pairs(["apple pie", "river bank"], ["apple pie", "river bank"], np.array([1.0, 2.0]))
    for call in (lambda: evaluate_pairs(small, same, [None]),
                 lambda: evaluate_precisions(small, same, [None], ["float32"])):  # fmt: skip
        with pytest.raises(CorpusError, match="the encoder's own pooling") as raised:
            call()
        assert "None" not in str(raised.value)
    one = Pairs(["apple pie", "apple pie"], ["apple pie", "apple pie"], np.array([1.0, 2.0]))  # (1 distinct sentence)
    with pytest.raises(OptionError, match="cannot calibrate the encoder's own pooling on the first 1 sentences"):
        evaluate_precisions(small, one, [None], ["int8"], calibration_size=2)
    pairs = Pairs(["apple pie", "river bank"], ["a pie", "a bank"], np.array([1.0, 2.0]))
    _, table, _ = evaluate_precisions(small, pairs, [None], ["float32"])
    heading = format_precision_table(None, table[None], "test").splitlines()[0]
    assert heading == "precisions for the encoder's own pooling (test)"
    assert format_precision_table("mean", table[None], "test").startswith("precisions for pooling mean (test)")


def test_duplicate_documents_stay_within_the_byte_budget():
    """The repeated rows are scored in pieces no larger than the block: a corpus of one vector repeated, one
    query and wide vectors copied every repeated row of a block (columns × dimension) beyond ``max_bytes``."""
    import tracemalloc

    rng = np.random.default_rng(1)
    docs = np.repeat(rng.standard_normal((1, 768)).astype(np.float32), 20000, axis=0)
    query = rng.standard_normal((1, 768)).astype(np.float32)
    exact_search(query[:, :4], docs[:3, :4])  # first-call allocations out of the way
    budget = 1 << 20
    tracemalloc.start()
    try:
        ranking = exact_search(query, docs, k=10, max_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ranking.indices[0].tolist() == list(range(10)) and len(set(ranking.scores[0].tolist())) == 1
    assert peak < budget + 20000 * 8 * 3 + (128 << 10), peak  # the block, per-unit hashes, slack


def test_fusion_names_a_lone_ranking_or_weight():
    """``reciprocal_rank_fusion(ranking, ...)`` (one Ranking, not a list) and ``interpolate(rankings, 0.5, ...)``
    failed inside Python ("object of type 'Ranking' has no len()", "'float' has no len()"); they name the
    argument now, and an array of weights still counts as a list."""
    from tokenpool.evaluation.fusion import interpolate, reciprocal_rank_fusion
    from tokenpool.evaluation.search import Ranking

    ranking = Ranking(np.array([[0, 1, 2]]), np.array([[3.0, 2.0, 1.0]], np.float32))
    ties = np.arange(3)
    for call in (lambda: reciprocal_rank_fusion(ranking, ties), lambda: interpolate(ranking, [1.0], ties)):
        with pytest.raises(TypeError, match="rankings must be a list of Rankings, got Ranking"):
            call()
    with pytest.raises(ValueError, match="one weight per ranking: 1 rankings, got 0.5"):
        interpolate([ranking], 0.5, ties)
    assert interpolate([ranking], np.array([1.0]), ties, depth=3).indices.tolist() == [[0, 1, 2]]


def test_sentence_pairs_of_unequal_lengths_or_none_are_refused(small):
    """``Pairs(["a", "b"], ["c"], [1, 2])`` scored -100: the one second sentence was broadcast against both
    first ones, a silent figure from a pair list that does not exist. ``Pairs([], [], [])`` was a KeyError
    'mean' after the model ran. Both are refused now, naming the counts."""
    from tokenpool.evaluation.precision import evaluate_precisions
    from tokenpool.evaluation.sts import Pairs, evaluate_pairs

    with pytest.raises(ValueError, match="2 first sentences, 1 second sentences and 2 scores"):
        Pairs(["apple pie", "river bank"], ["a pie"], np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="2 first sentences, 2 second sentences and 3 scores"):
        Pairs(["apple pie", "river bank"], ["a pie", "a bank"], np.array([1.0, 2.0, 3.0]))
    empty = Pairs([], [], np.array([]))
    for call in (lambda: evaluate_pairs(small, empty, "mean"), lambda: evaluate_precisions(small, empty, "mean", "int8")):
        with pytest.raises(ValueError, match="no sentence pairs to score"):
            call()


@pytest.mark.parametrize("precision", ["float32", "int8", "ubinary"])
def test_similarity_rows_refuses_code_arrays_of_other_shapes(precision):
    """`similarity_rows` (row-wise, "two equal-length code arrays") broadcast 3 rows against 1: three figures of
    pairs that do not exist. It names both shapes now."""
    from tokenpool.core.quantize import code_dtype
    from tokenpool.evaluation.precision import similarity_rows

    width = 1 if precision == "ubinary" else 8
    a, b = np.ones((3, width), code_dtype(precision)), np.ones((1, width), code_dtype(precision))
    with pytest.raises(ValueError, match=r"one shape, got \(3, \d\) and \(1, \d\)"):
        similarity_rows(a, b, precision, 8)
    assert similarity_rows(a, a, precision, 8).shape == (3,)


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    from tinymodels import bert_folder

    from tokenpool import Encoder

    return Encoder(bert_folder(tmp_path_factory.mktemp("splade56"), mlm=True), device="cpu")


def test_precision_tables_refuse_a_sparse_model_as_the_command_line_does(splade):
    """`evaluate_retrieval_precisions` / `evaluate_precisions` took a SPLADE encoder: its rows were made dense
    (vocabulary-wide), int8 then failed with "3354 dimension(s) have no spread" and binary packed a sign per
    vocabulary entry. They refuse it now as ``evaluate --precision`` does, before the model runs; float32 alone
    still runs."""
    from tokenpool.errors import OptionError
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.precision import evaluate_precisions, evaluate_retrieval_precisions
    from tokenpool.evaluation.sts import Pairs

    pairs = Pairs(["apple pie", "river bank", "x y"], ["a pie", "a bank", "z"], np.array([1.0, 2.0, 3.0]))
    data = RetrievalSet(["a", "b", "c"], ["apple pie", "river bank", "banana"], ["q1"], ["apple"], {"q1": {"a": 1}})
    calls = []
    splade.iter_token_batches = lambda *a, **k: calls.append(a)  # (instance attribute: this module's encoder)
    for call in (lambda: evaluate_precisions(splade, pairs, "splade", "int8"),
                 lambda: evaluate_retrieval_precisions(data, splade, ["binary"])):  # fmt: skip
        with pytest.raises(OptionError, match=r"^precision (int8|binary) is for dense models; .* is a sparse \(SPLADE\) model"):
            call()
    assert not calls
    del splade.iter_token_batches
    rows, _ = evaluate_retrieval_precisions(data, splade, ["float32"])
    assert [row.precision for row in rows] == ["float32"]
