"""The evaluation API's checks: RetrievalSet ids and grades, ranked rows, exact search, option strings, counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool import Encoder
from tokenpool.errors import OptionError
from tokenpool.evaluation import precision as precision_module
from tokenpool.evaluation.beir import RetrievalSet
from tokenpool.evaluation.modes import plan_modes
from tokenpool.evaluation.precision import evaluate_precisions, evaluate_retrieval_precisions
from tokenpool.evaluation.retrieval import metrics_per_query
from tokenpool.evaluation.search import exact_search
from tokenpool.evaluation.sts import Pairs, evaluate_pairs


@pytest.mark.parametrize(
    "spec, names",
    [("truncate,bm25", ["truncate", "bm25"]), (" hybrid:truncate , windows", ["hybrid:truncate", "windows"]),
     ("bm25", ["bm25"])],
)  # fmt: skip
def test_modes_string_is_comma_separated_like_pooling(spec, names):
    """modes="truncate,bm25" (split like pooling="mean,cls" and the CLI's --modes) was refused as one unknown
    mode named 'truncate,bm25'."""
    assert plan_modes(spec).order == plan_modes(names).order


def test_mode_name_not_a_string_is_a_type_error_naming_it():
    """modes=[3] raised AttributeError ('int' object has no attribute 'removeprefix')."""
    with pytest.raises(TypeError, match="3"):
        plan_modes(["truncate", 3])


@pytest.mark.parametrize(
    ("doc_ids", "query_ids", "qrels"),
    [([1, 2], ["q"], {"q": {1: 1}}), (["1", 2], ["q"], {"q": {"1": 1}}), (["a", "b"], [7], {7: {"a": 1}})],
)
def test_retrieval_set_refuses_ids_that_are_not_strings(doc_ids: list, query_ids: list, qrels: dict) -> None:
    """A RetrievalSet built in Python with integer ids was accepted, then failed deep in the search with
    AttributeError ('int' object has no attribute 'encode'); [1, "1"]-like mixes even passed the duplicate check.
    Ids are strings (trec_eval orders ties by their bytes; read_beir turns JSON numbers into strings)."""
    with pytest.raises(ValueError, match="must be a string"):
        RetrievalSet(doc_ids, ["x"] * len(doc_ids), query_ids, ["y"] * len(query_ids), qrels)


@pytest.mark.parametrize("grade", ["1", 0.5, float("nan"), True, None])
def test_retrieval_set_refuses_a_grade_that_is_not_an_integer(grade):
    """RetrievalSet(qrels={"q": {"a": 0.5}}) scored a fractional gain, NaN was silently non-relevant, "1" raised
    TypeError('>' not supported) naming neither query nor document — trec_eval grades are integers."""
    with pytest.raises(ValueError, match=r"'q'.*'a'"):
        RetrievalSet(["a", "b"], ["x", "y"], ["q"], ["t"], {"q": {"a": grade}})


def test_retrieval_set_refuses_judgements_that_are_not_a_mapping():
    """qrels={"q": ["a"]} passed the check and failed later with AttributeError ('list' has no 'items')."""
    with pytest.raises(ValueError, match="'q'"):
        RetrievalSet(["a"], ["x"], ["q"], ["t"], {"q": ["a"]})


def test_retrieval_set_integer_grades_of_numpy_count_as_their_value():
    """An integer grade of any integer type is kept: the relevance arrays hold it (a positive one) as given."""
    data = RetrievalSet(["a", "b"], ["x", "y"], ["q"], ["t"], {"q": {"a": np.int64(2), "b": 0}})
    q_rows, d_rows, grades = data.relevance()
    assert (q_rows.tolist(), d_rows.tolist(), grades.tolist()) == ([0], [0], [2.0])


def loop_metrics(ranked: list[int], grades: dict[int, float]) -> tuple[float, float, float]:
    """nDCG@10, recall@100, MRR@10 of one query, trec_eval's definitions, one rank at a time in float64."""
    dcg = sum(grades.get(d, 0.0) / math.log2(r + 2) for r, d in enumerate(ranked[:10]))
    ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(grades.values(), reverse=True)[:10]))
    found = sum(1 for d in ranked[:100] if d in grades)
    first = next((r for r, d in enumerate(ranked[:10]) if d in grades), None)
    return (dcg / ideal if ideal else 0.0, found / len(grades) if grades else 0.0,
            0.0 if first is None else 1.0 / (first + 1))  # fmt: skip


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_metrics_per_query_match_a_loop_and_stay_within_one(data):
    """Any valid ranking scores as the per-query loop does, every figure in [0, 1]."""
    n_docs = data.draw(st.integers(1, 12))
    n_queries = data.draw(st.integers(1, 4))
    rows, relevance = [], []
    for q in range(n_queries):
        ranked = data.draw(st.permutations(range(n_docs)))[: data.draw(st.integers(0, n_docs))]
        rows.append(ranked + [-1] * (n_docs - len(ranked)))
        judged = data.draw(st.dictionaries(st.integers(0, n_docs - 1), st.integers(1, 3), max_size=n_docs))
        relevance += [(q, d, g) for d, g in judged.items()]
    arrays = tuple(np.array([r[i] for r in relevance], dtype=np.int64 if i < 2 else np.float64) for i in range(3))
    got = metrics_per_query(np.array(rows), arrays, n_docs)
    for q, row in enumerate(rows):
        grades = {d: float(g) for qq, d, g in relevance if qq == q}
        expected = loop_metrics([d for d in row if d >= 0], grades)
        assert [got[name][q] for name in ("nDCG@10", "recall@100", "MRR@10")] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "indices, relevance, match",
    [([[0, 1, 2], [0, 1, 2]], ([0], [3], [1.0]), "document row 3"),   # was query 1's document 0: MRR 1
     ([[0, 1, 2]], ([-1], [0], [1.0]), "query row -1"),              # was numpy's "no negative elements"
     ([[5, 0]], ([0], [0], [1.0]), r"indices\[0, 0\] is 5"),          # was scored as another query's document
     ([[0, 0]], ([0], [0], [1.0]), "document row 0 twice"),           # was nDCG 1.63, recall 2.0
     ([[0, 1]], ([0], [0], [float("nan")]), "positive grades")],      # was NaN nDCG
)  # fmt: skip
def test_metrics_per_query_refuse_rows_outside_the_corpus_and_repeats(indices, relevance, match):
    """Before: a document row past the corpus in the relevance or the ranking was read as another query's
    document (pair keys query·n_docs + document collide), and a document ranked twice counted twice."""
    arrays = tuple(np.asarray(a) for a in relevance)
    with pytest.raises(ValueError, match=match):
        metrics_per_query(np.array(indices), arrays, 3)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_exact_search_takes_any_distinct_tie_ranks(data):
    """tie_rank=[10, 5, 7] (distinct, in the documented 0..2**32-1, but not 0..n_docs-1) was an IndexError;
    the ranking is the loop's: by score, then tie rank, higher first."""
    n_docs = data.draw(st.integers(1, 8))
    ties = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n_docs, max_size=n_docs, unique=True))
    units = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=n_docs, max_size=n_docs)), np.float32)[:, None]
    query = np.ones((1, 1), np.float32)
    got = exact_search(query, units, tie_rank=ties, k=n_docs)
    expected = sorted(range(n_docs), key=lambda d: (-float(units[d, 0]), -ties[d]))
    assert got.indices[0].tolist() == expected


@pytest.mark.parametrize("row", [3, -2])
def test_exact_search_refuses_an_excluded_row_outside_the_corpus(row):
    """exclude=[3] with 3 documents (an id mapped to the wrong corpus) silently excluded nothing."""
    with pytest.raises(ValueError, match=f"exclude\\[0\\] is {row}"):
        exact_search(np.ones((1, 2), np.float32), np.eye(3, 2, dtype=np.float32), exclude=[row])


class _NoModel:
    """An encoder that must not be reached: every attribute read fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name}) before the options were checked")


@pytest.mark.parametrize("size", [-5, 0, True, 2.5])
def test_precision_evaluations_refuse_a_calibration_size_that_is_no_count(size):
    """calibration_size=-5 calibrated int8 on documents[:-5] (every document but the last 5) and named them
    'first -5 documents', after the whole corpus was encoded; now an OptionError naming it, before the model."""
    data = RetrievalSet(["a", "b"], ["x", "y"], ["q"], ["t"], {"q": {"a": 1}})
    with pytest.raises(OptionError, match="calibration_size"):
        evaluate_retrieval_precisions(data, _NoModel(), ["int8"], calibration_size=size)
    pairs = Pairs(["a", "b"], ["c", "d"], np.array([1.0, 2.0]))
    with pytest.raises(OptionError, match="calibration_size"):
        evaluate_precisions(_NoModel(), pairs, ["mean"], ["int8"], calibration_size=size)


class _FixedEncoder:
    """Vectors from a seeded generator, one per text (enough of an Encoder for the precision evaluations)."""

    strategies = ("mean",)
    normalize = False
    dimension = 8

    def encode(self, texts, **_options):
        seeds = [sum(map(ord, text)) for text in texts]
        return np.stack([np.random.default_rng(s).standard_normal(8).astype(np.float32) for s in seeds])

    encode_queries = encode_documents = encode


def _retrieval_data() -> RetrievalSet:
    docs = [f"document {i}" for i in range(6)]
    return RetrievalSet(docs, docs, ["q0", "q1"], ["query zero", "query one"], {"q0": {docs[1]: 1}, "q1": {docs[4]: 2}})


def test_precision_evaluations_read_a_precisions_string_and_one_rescore_depth():
    """precisions="int8,ubinary" (which parse_precisions reads) was split into characters by list(): "unknown
    precision 'i'"; rescore=5 was a TypeError ('int' object is not iterable). Same rows as the list forms."""
    data = _retrieval_data()
    want, _ = evaluate_retrieval_precisions(data, _FixedEncoder(), ["int8", "ubinary"], calibration_size=6, rescore=[5])
    got, _ = evaluate_retrieval_precisions(data, _FixedEncoder(), "int8,ubinary", calibration_size=6, rescore=5)
    assert [row.as_dict() for row in got] == [row.as_dict() for row in want]
    pairs = Pairs(["a b", "c d", "e f"], ["g h", "i j", "k l"], np.array([1.0, 2.0, 3.0]))
    pooled = {None: _FixedEncoder().encode(["a b", "c d", "e f", "g h", "i j", "k l"])}  # mean: its own pooling

    def fake_pool_pairs(*_args, **_kwargs):
        return pooled, np.arange(3), np.arange(3, 6)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision_module, "pool_pairs", fake_pool_pairs)
        want_sts = evaluate_precisions(_FixedEncoder(), pairs, ["mean"], ["float16", "ubinary"])[1]
        got_sts = evaluate_precisions(_FixedEncoder(), pairs, ["mean"], "float16,ubinary")[1]
    assert got_sts == want_sts


@pytest.mark.parametrize("spec, listed", [("mean", ["mean"]), ("mean, cls", ["mean", "cls"]), ("mean+max", ["mean+max"])])
def test_sts_evaluations_read_one_labels_string_as_pooling_does(spec, listed):
    """evaluate_pairs(encoder, pairs, "mean") pooled the strategies 'm', 'e', 'a', 'n' ("unknown pooling strategy
    'm'"); a string is read as --pooling reads it. Same scores as the list."""
    encoder = Encoder(device="cpu")
    pairs = Pairs(["a cat", "a dog", "stocks rose"], ["a kitten", "a car", "markets up"], np.array([4.0, 1.0, 3.0]))
    assert evaluate_pairs(encoder, pairs, spec) == evaluate_pairs(encoder, pairs, listed)
    got = evaluate_precisions(encoder, pairs, spec, ["float16"], calibration_size=2)[0]
    assert got == evaluate_precisions(encoder, pairs, listed, ["float16"], calibration_size=2)[0]


@pytest.mark.parametrize("rescore", [0, [3, -1], "40", 2.5])
def test_rescore_that_is_no_positive_int_is_an_option_error(rescore):
    with pytest.raises(OptionError, match="rescore"):
        evaluate_retrieval_precisions(_retrieval_data(), _NoModel(), ["ubinary"], rescore=rescore)
