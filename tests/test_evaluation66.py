"""Stop 66's evaluation items: each test checks documented behaviour against a reference written here."""

from __future__ import annotations

import pytest
from clitools import tiny_beir

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_result_rows_are_found_by_a_mode_name_in_any_case(tmp_path, tiny):
    """`evaluate_retrieval` reads mode names in any case ("Truncate" runs the truncate mode, docs/evaluation.md),
    so `RetrievalResult.row` / `.scores` find its rows by the name as it was given (it raised KeyError)."""
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    result = evaluate_retrieval(tiny_beir(tmp_path / "set"), str(tiny), pooling="mean", modes="Truncate,HYBRID:truncate")
    assert list(dict.fromkeys(row.mode for row in result.rows)) == ["truncate", "bm25", "hybrid:truncate"]
    for given, canonical in (("Truncate", "truncate"), ("BM25", "bm25"), ("Hybrid:Truncate", "hybrid:truncate")):
        expected = [row for row in result.rows if row.mode == canonical]
        assert result.row(expected[0].pooling, mode=given) is expected[0]
    assert result.scores(mode="TRUNCATE") == result.rows[0].scores
    with pytest.raises(KeyError, match="no row for mode 'windows'"):
        result.row(mode="windows")
