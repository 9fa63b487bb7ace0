"""Stop 35, evaluation: numpy numbers as fusion / BM25 options, SPLADE through compare_retrieval, BM25
against a float64 loop of its documented formula."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tokenpool.errors import OptionError
from tokenpool.evaluation.fusion import interpolate, reciprocal_rank_fusion
from tokenpool.evaluation.lexical import BM25Settings
from tokenpool.evaluation.retrieval import check_fusion
from tokenpool.evaluation.search import Ranking

# ------------------------------------------------------------------------------------------ numbers


def _rankings() -> list[Ranking]:
    first = Ranking(np.array([[0, 1, 2], [2, -1, -1]]), np.array([[3.0, 2.0, 1.0], [5.0, -np.inf, -np.inf]], np.float32))
    second = Ranking(np.array([[2, 0, -1], [1, 2, 0]]), np.array([[0.9, 0.1, -np.inf], [0.8, 0.7, 0.2]], np.float32))
    return [first, second]


def _loop_rrf(rankings: list[Ranking], k: float) -> list[dict[int, float]]:
    out: list[dict[int, float]] = [{} for _ in range(rankings[0].indices.shape[0])]
    for ranking in rankings:
        for q, row in enumerate(ranking.indices.tolist()):
            for rank, doc in enumerate(row, 1):
                if doc >= 0:
                    out[q][doc] = out[q].get(doc, 0.0) + 1.0 / (k + rank)
    return out


@pytest.mark.parametrize("k", [np.int64(60), np.int32(1), np.float32(0.5), np.float64(2.5), np.uint8(0)])
def test_rrf_takes_a_numpy_k_as_its_value(k):
    fused = reciprocal_rank_fusion(_rankings(), np.arange(3), k=k, depth=3)
    expected = _loop_rrf(_rankings(), float(k))
    for q, want in enumerate(expected):
        got = {d: s for d, s in zip(fused.indices[q].tolist(), fused.scores[q].tolist(), strict=True) if d >= 0}
        assert got.keys() == want.keys()
        assert all(math.isclose(got[d], want[d], rel_tol=1e-6) for d in want)


def test_interpolation_takes_numpy_weights_as_their_values():
    plain = interpolate(_rankings(), [0.5, 0.25], np.arange(3), depth=3)
    numpy = interpolate(_rankings(), [np.float32(0.5), np.float16(0.25)], np.arange(3), depth=3)
    np.testing.assert_array_equal(numpy.indices, plain.indices)
    np.testing.assert_array_equal(numpy.scores, plain.scores)


@pytest.mark.parametrize("bad", [True, np.bool_(True), np.float32("nan"), np.float64("inf"), np.int64(-1), -0.5, "60"])
def test_fusion_refuses_what_is_no_finite_number_at_least_0_naming_it(bad):
    with pytest.raises(ValueError, match="RRF constant k must be .*got " + re.escape(repr(bad))):
        reciprocal_rank_fusion(_rankings(), np.arange(3), k=bad)
    with pytest.raises(ValueError, match="weight 1 must be .*got " + re.escape(repr(bad))):
        interpolate(_rankings(), [0.5, bad], np.arange(3))
    with pytest.raises(OptionError, match="rrf_k must be"):
        check_fusion(bad, 0.5)


def test_check_fusion_and_bm25_settings_take_numpy_numbers_as_plain_floats():
    assert check_fusion(np.int64(60), np.float32(0.5)) == {"rrf_k": 60.0, "weight": 0.5}
    settings = BM25Settings(k1=np.float32(1.5), b=np.int64(1))
    assert settings == BM25Settings(k1=1.5, b=1.0)
    assert type(settings.k1) is float and settings.label().startswith("k1=1.5 b=1 ")
    with pytest.raises(OptionError, match="BM25 b must be a number with 0 <= b <= 1, got np.float64\\(1.5\\)"):
        BM25Settings(b=np.float64(1.5))
    with pytest.raises(OptionError, match="BM25 k1 must be .*got np.float32\\(nan\\)"):
        BM25Settings(k1=np.float32("nan"))
