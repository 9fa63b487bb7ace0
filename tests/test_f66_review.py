"""Stop 66 review of evaluation, cli/serve and errors.shown_digits: each test fails on the merged code before
its fix."""

from __future__ import annotations

import numpy as np
import pytest
from clitools import tiny_beir


def _result(*names: tuple[str, str]):
    """A `RetrievalResult` of rows (mode, pooling) ``names``, in that order (as a caller may build one)."""
    from tokenpool.evaluation.retrieval import RetrievalResult, RetrievalRow, RetrievalScores
    from tokenpool.evaluation.search import Ranking

    ranking = Ranking(np.zeros((1, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.float32))
    rows = [RetrievalRow(mode, pooling, RetrievalScores(k / 10, 0.0, 0.0), {}, ranking, 1, 1.0, 1)
            for k, (mode, pooling) in enumerate(names)]  # fmt: skip
    return RetrievalResult(data=None, model="", rows=rows, query_seconds=0.0)


def test_row_of_a_pooling_given_as_a_row_names_it_is_that_row():
    """`RetrievalResult.row` also finds a pooling as `pooling=` reads it ("MEAN" → "mean"), but a row named
    exactly as asked is that row, as before: of rows "mean" and "MEAN", row("MEAN") gave the "mean" row."""
    result = _result(("truncate", "mean"), ("truncate", "MEAN"), ("truncate", "cls"))
    for asked in ("mean", "MEAN", "cls"):
        expected = next(row for row in result.rows if row.pooling == asked)  # (a plain loop: exact name)
        assert result.row(asked) is expected, asked
    assert result.row("Mean") is result.rows[0]  # (no row "Mean": as pooling="Mean" runs it, "mean")


def test_row_refuses_a_mode_name_that_several_modes_match_only_in_case(tmp_path, tiny):
    """Custom modes ``{"Late": f, "late": g}`` are two modes (`plan_modes` keeps a mapping's names as given):
    row(mode="LATE") returned the "late" row without a word, though it names "Late" as well; now KeyError
    naming both. Each name as written still finds its own row."""
    from tokenpool.evaluation.modes import truncate_mode
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    result = evaluate_retrieval(tiny_beir(tmp_path / "set"), str(tiny), pooling="mean",
                                modes={"Late": truncate_mode, "late": truncate_mode})  # fmt: skip
    assert [row.mode for row in result.rows] == ["Late", "late"]
    assert result.row(mode="Late") is result.rows[0]
    assert result.row(mode="late") is result.rows[1]
    with pytest.raises(KeyError, match=r"mode 'LATE'.*'Late', 'late'"):
        result.row(mode="LATE")
    with pytest.raises(KeyError, match=r"mode 'LaTe'.*'Late', 'late'"):
        result.scores(mode="LaTe")
