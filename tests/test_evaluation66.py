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


# Bad option values of `tokenpool evaluate FOLDER --modes hybrid:truncate`, in the order the command checks them
# (cli/evaluate._evaluate_folder: --pooling, --modes, the refusals of unread flags, --bm25's value and stemmer,
# the fusion numbers, --plot), all before the model loads.
BAD_FOLDER_OPTIONS = (
    ("--pooling", "bogus"), ("--modes", "truncate,bogus"), ("--window-stride", "8"), ("--bm25", "k1=x"),
    ("--bm25", "stemmer=klingon"), ("--rrf-k", "-1"), ("--hybrid-weight", "2"), ("--plot", "chart.xyz"),
)  # fmt: skip


def test_evaluate_folder_reports_the_first_of_any_two_bad_options_in_its_order(tmp_path, tiny, capsys):
    """Of every two bad options the command names the one it checks first, whatever else is wrong (the
    fusion and BM25 checks are `evaluation/retrieval.check_lexical_options`' alone, called before the model)."""
    from itertools import combinations

    from tokenpool import cli

    folder = tiny_beir(tmp_path / "set")

    def error(*options: tuple[str, str]) -> str:
        argv = ["evaluate", str(folder), "--model", str(tiny), "--modes", "hybrid:truncate"]
        code = cli.main([*argv, *(part for option in options for part in option)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    alone = {option: error(option) for option in BAD_FOLDER_OPTIONS}
    assert len(set(alone.values())) == len(alone)
    for first, second in combinations(BAD_FOLDER_OPTIONS, 2):
        if first[0] != second[0]:
            assert error(second, first) == alone[first], (first, second)


def test_evaluate_retrieval_checks_bm25_before_the_fusion_options_as_the_command_line_does(tmp_path):
    """`evaluate_retrieval` and `tokenpool evaluate` share one check of the BM25 and fusion options: an unknown
    stemmer is named before a fusion option, by either (the library named the fusion option first)."""
    from tokenpool.errors import OptionError
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    folder = tiny_beir(tmp_path / "set")
    for modes, rrf_k in (("bm25", 5), ("hybrid:truncate", -1)):
        with pytest.raises(OptionError, match="unknown stemmer 'klingon'"):
            evaluate_retrieval(folder, modes=modes, bm25="stemmer=klingon", rrf_k=rrf_k)


def test_result_rows_are_found_by_a_pooling_name_as_pooling_reads_it(tmp_path, tiny):
    """``pooling="MEAN,Mean+Max"`` runs rows named "mean" and "mean+max" (strategy names in any case, as
    `strategy_labels` reads them); `RetrievalResult.row` finds them by those names as given too (KeyError)."""
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    folder = tiny_beir(tmp_path / "set")
    result = evaluate_retrieval(folder, str(tiny), pooling="MEAN,Mean+Max", modes="truncate")
    assert [row.pooling for row in result.rows] == ["mean", "mean+max"]
    assert result.row("MEAN") is result.rows[0]
    assert result.scores(" Mean+MAX ") == result.rows[1].scores
    with pytest.raises(KeyError, match="pooling 'CLS'"):
        result.row("CLS")
