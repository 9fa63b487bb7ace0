"""``evaluate_retrieval(max_batch_tokens=...)`` / ``tokenpool evaluate FOLDER --max-batch-tokens``: the token
budget reaches the queries and every document mode (truncate, windows, late and naive chunks), bounds every
forward pass, and changes no vector and no figure.

The references are the same evaluations without a budget, on a tiny random BERT with max_length 16 (14 text
tokens per window) and window stride 5, so that documents run to several windows and chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_one_error_line

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_batching import OomAbove  # noqa: E402  (records every forward pass's shape; fails above a size)
from test_encoder import _bert_weights  # noqa: E402
from test_retrieval import write_beir  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.evaluation.modes import DOCUMENT_MODES  # noqa: E402
from tokenpool.evaluation.retrieval import evaluate_retrieval  # noqa: E402
from tokenpool.evaluation.sts import Pairs, evaluate_pairs, pool_pairs  # noqa: E402

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "quietly", "hex", "one", "jovial", "bank", "clerk"]  # fmt: skip
MODE_NAMES = ("truncate", "windows", "late-128", "naive-128")
BATCH = 8
BUDGET = 40  # two full windows (16 tokens) per forward pass


def _text(n_words: int, seed: int) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, size=n_words))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert-retrieval-budget")
    _bert_weights(folder)
    return Encoder(folder, pooling="mean", max_length=16, normalize=False, window_stride=5, device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Nine documents of 1 to 60 words (up to a dozen windows), six queries of 2 to 12 words, graded qrels."""
    lengths = (60, 3, 35, 1, 52, 9, 24, 44, 14)
    corpus = [
        {"_id": f"d{i}", "title": "T" if i % 2 else "", "text": _text(n, i)} for i, n in enumerate(lengths)
    ]
    queries = [{"_id": f"q{i}", "text": _text(n, 100 + i)} for i, n in enumerate((2, 12, 5, 8, 3, 10))]
    qrels = [
        ("q0", "d0", 1),
        ("q0", "d4", 2),
        ("q1", "d2", 1),
        ("q2", "d7", 1),
        ("q3", "d1", 2),
        ("q3", "d8", 1),
    ]
    qrels += [("q4", "d6", 1), ("q5", "d3", 1), ("q5", "d5", 1), ("q1", "d5", 0)]
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny", corpus, queries, qrels)


@pytest.fixture(scope="module")
def reference(folder, encoder):
    """The unbudgeted evaluation every budgeted run must equal."""
    return evaluate_retrieval(folder, encoder, pooling="mean,max", modes=MODE_NAMES, batch_size=BATCH)


@pytest.fixture
def recorder(encoder, monkeypatch):
    """The encoder's runner wrapped to record every forward pass's (rows, width), never failing."""
    wrapped = OomAbove(encoder.runner, limit=10**9)
    monkeypatch.setattr(encoder, "runner", wrapped)
    return wrapped


def _assert_same_rows(got, want) -> None:
    assert [(r.mode, r.pooling) for r in got.rows] == [(r.mode, r.pooling) for r in want.rows]
    for g, w in zip(got.rows, want.rows, strict=True):
        assert g.scores == w.scores, (g.mode, g.pooling)
        assert g.units == w.units
        for name in w.per_query:
            np.testing.assert_array_equal(g.per_query[name], w.per_query[name])
        np.testing.assert_array_equal(g.ranking.indices, w.ranking.indices)
        np.testing.assert_allclose(g.ranking.scores, w.ranking.scores, rtol=0, atol=1e-6)


def test_the_fixture_exercises_long_documents(reference):
    """The documents really are split (else the window modes would test nothing) and the figures are not
    trivial (else equal figures would prove little)."""
    units = {row.mode: row.units for row in reference.rows}
    assert units["truncate"] == units["windows"] == 9
    assert units["late-128"] == units["naive-128"] > 9
    assert any(0 < row.scores.ndcg_at_10 < 1 for row in reference.rows)


def test_a_budget_keeps_every_figure_and_bounds_every_forward_pass(folder, encoder, reference, recorder):
    evaluate_retrieval(folder, encoder, pooling="mean,max", modes=MODE_NAMES, batch_size=BATCH)
    unbudgeted = list(recorder.shapes)
    recorder.shapes.clear()
    budgeted = evaluate_retrieval(
        folder, encoder, pooling="mean,max", modes=MODE_NAMES, batch_size=BATCH, max_batch_tokens=BUDGET
    )
    _assert_same_rows(budgeted, reference)
    assert max(rows * width for rows, width in unbudgeted) > BUDGET  # without it, passes are larger
    for rows, width in recorder.shapes:
        assert rows <= BATCH
        assert rows * width <= BUDGET or rows == 1  # a single over-long row still runs, alone
    # every query, document, window and chunk ran exactly once either way: the budget only regroups them
    assert sum(r for r, _ in recorder.shapes) == sum(r for r, _ in unbudgeted)
    assert len(recorder.shapes) > len(unbudgeted)


@pytest.mark.parametrize("mode", MODE_NAMES)
@pytest.mark.parametrize("budget", [16, 23])  # one full window per pass; a budget no width divides
def test_each_mode_gives_the_same_unit_vectors_under_a_budget(folder, encoder, recorder, mode, budget):
    """The units themselves (not only the rankings they give): every pooling, every document, in order."""
    from tokenpool.evaluation.beir import read_beir

    texts = read_beir(folder).doc_texts
    call = {"batch_size": BATCH, "prompt": None, "prompt_name": None, "progress": False}
    want = DOCUMENT_MODES[mode](encoder, texts, [None, "max", "mean+max"], **call)
    recorder.shapes.clear()
    got = DOCUMENT_MODES[mode](encoder, texts, [None, "max", "mean+max"], max_batch_tokens=budget, **call)
    assert all(rows * width <= budget or rows == 1 for rows, width in recorder.shapes)
    assert recorder.shapes
    for label, units in want.items():
        np.testing.assert_array_equal(got[label].doc_index, units.doc_index)
        assert got[label].vectors.shape == units.vectors.shape and got[label].vectors.dtype == np.float32
        np.testing.assert_allclose(got[label].vectors, units.vectors, rtol=0, atol=1e-6)


def test_queries_are_budgeted_too(folder, encoder, recorder):
    """A custom mode that runs no model: every forward pass recorded is a query batch, within the budget."""
    from tokenpool.evaluation.units import DocumentUnits

    seen = {}

    def no_model(encoder, texts, labels, **options):
        seen.update(options)
        return {
            label: DocumentUnits(np.arange(len(texts)), np.eye(len(texts), 32, dtype=np.float32))
            for label in labels
        }

    evaluate_retrieval(folder, encoder, modes={"fixed": no_model}, batch_size=BATCH, max_batch_tokens=9)
    assert seen["max_batch_tokens"] == 9
    assert recorder.shapes and all(rows * width <= 9 or rows == 1 for rows, width in recorder.shapes)
    assert sum(r for r, _ in recorder.shapes) == 6  # the six queries, each once
    seen.clear()
    evaluate_retrieval(folder, encoder, modes={"fixed": no_model}, batch_size=BATCH)
    assert "max_batch_tokens" not in seen  # a mode written without the option still works unbudgeted


def test_out_of_memory_batches_split_and_keep_the_figures(folder, encoder, reference, monkeypatch):
    flaky = OomAbove(encoder.runner, limit=3 * 16)
    monkeypatch.setattr(encoder, "runner", flaky)
    got = evaluate_retrieval(folder, encoder, pooling="mean,max", modes=MODE_NAMES, batch_size=BATCH)
    assert flaky.failures > 0
    _assert_same_rows(got, reference)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_a_bad_budget_is_refused_before_the_model_runs(folder, bad):
    never = object()  # not an encoder: any use of it would fail differently
    with pytest.raises(OptionError, match=f"max_batch_tokens must be a positive int or None, got {bad!r}"):
        evaluate_retrieval(folder, never, max_batch_tokens=bad)


# ---------------------------------------------------------------------------------------------- command line


def test_cli_passes_the_budget(folder, encoder, reference, recorder, monkeypatch, capsys):
    from tokenpool import cli

    monkeypatch.setattr(cli.common, "build_encoder", lambda options: encoder)
    args = ["evaluate", str(folder), "--pooling", "mean,max", "--modes", "truncate,late-128", "--json"]
    code = cli.main([*args, "--batch-size", str(BATCH), "--max-batch-tokens", str(BUDGET)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    wanted = [r for r in reference.rows if r.mode in ("truncate", "late-128")]
    assert [(r["mode"], r["pooling"]) for r in summary["rows"]] == [(r.mode, r.pooling) for r in wanted]
    for row, want in zip(summary["rows"], wanted, strict=True):
        assert row["scores_x100"] == want.scores.as_dict(100.0)
        assert row["units"] == want.units
    assert recorder.shapes and all(rows * width <= BUDGET or rows == 1 for rows, width in recorder.shapes)
    assert max(rows for rows, width in recorder.shapes if width == 16) == 2  # 40 // 16 full windows


@pytest.mark.parametrize("bad", ["0", "-5", "many", "2.5"])
def test_cli_bad_budget_is_one_line_exit_2(folder, run, bad):
    code, out, err = run("evaluate", folder, "--max-batch-tokens", bad)  # refused before any model loads
    assert_one_error_line(code, err, "--max-batch-tokens", repr(bad))
    assert out == ""


# ---------------------------------------------------------------------------------------------- STS, shared loop


def test_sts_pairs_share_the_loop_and_the_budget(encoder, recorder):
    """`pool_pairs` (STS) runs the same one-pass-pooled-every-way loop: its vectors equal `Encoder.encode` with
    the matching pooling, with or without a budget, and a windows-mode encoder is refused with a clear error."""
    first = [_text(n, n) for n in (3, 9, 5, 12)]
    second = [_text(n, 50 + n) for n in (4, 2, 11, 6)]
    pairs = Pairs(first, second, np.array([1.0, 2.0, 3.0, 4.0]))
    vectors, i1, i2 = pool_pairs(encoder, pairs, [None, "max"], batch_size=3)
    assert max(rows * width for rows, width in recorder.shapes) > 12
    recorder.shapes.clear()
    budgeted, j1, j2 = pool_pairs(encoder, pairs, [None, "max"], batch_size=3, max_batch_tokens=12)
    assert recorder.shapes and all(rows * width <= 12 or rows == 1 for rows, width in recorder.shapes)
    np.testing.assert_array_equal(i1, j1)
    np.testing.assert_array_equal(i2, j2)
    texts = first + second
    np.testing.assert_allclose(vectors[None], encoder.encode(texts), rtol=0, atol=1e-6)
    max_encoder = Encoder(encoder.model_path, pooling="max", max_length=16, normalize=False, device="cpu")
    np.testing.assert_allclose(vectors["max"], max_encoder.encode(texts), rtol=0, atol=1e-6)
    for label in (None, "max"):
        np.testing.assert_allclose(budgeted[label], vectors[label], rtol=0, atol=1e-6)
    windows = Encoder(
        encoder.model_path, pooling="mean", max_length=16, long_documents="windows", device="cpu"
    )
    with pytest.raises(OptionError, match="needs an encoder with long_documents='truncate' .got 'windows'"):
        evaluate_pairs(windows, pairs, ["mean"])


# ---------------------------------------------------------------------------------------------- --precision


def test_retrieval_precisions_take_the_budget(folder, encoder, recorder, monkeypatch, capsys):
    """``evaluate FOLDER --precision`` used to refuse --max-batch-tokens."""
    from tokenpool import cli
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions

    options = {"calibration_size": 5, "rescore": [3], "batch_size": BATCH}
    want, _ = evaluate_retrieval_precisions(folder, encoder, ["int8", "ubinary"], **options)
    assert max(rows * width for rows, width in recorder.shapes) > BUDGET
    recorder.shapes.clear()
    got, _ = evaluate_retrieval_precisions(
        folder, encoder, ["int8", "ubinary"], max_batch_tokens=BUDGET, **options
    )
    assert [row.as_dict() for row in got] == [row.as_dict() for row in want]
    assert sum(r for r, _ in recorder.shapes) == 6 + 9  # queries and documents, each once
    assert all(rows * width <= BUDGET or rows == 1 for rows, width in recorder.shapes)
    with pytest.raises(OptionError, match="max_batch_tokens must be a positive int or None, got 0"):
        evaluate_retrieval_precisions(folder, object(), ["int8"], max_batch_tokens=0)
    monkeypatch.setattr(cli.common, "build_encoder", lambda options: encoder)
    recorder.shapes.clear()
    args = ["--precision", "int8,ubinary", "--calibration-size", "5", "--rescore", "3", "--json"]
    assert (
        cli.main(
            ["evaluate", str(folder), *args, "--batch-size", str(BATCH), "--max-batch-tokens", str(BUDGET)]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)["precision"]
    assert report == {row.name: row.as_dict() for row in want}
    assert all(rows * width <= BUDGET or rows == 1 for rows, width in recorder.shapes)


def test_sts_precisions_take_the_budget(encoder, recorder):
    """``evaluate PAIRS --precision`` used to drop --max-batch-tokens silently."""
    from tokenpool.evaluation.precision import evaluate_precisions

    pairs = Pairs(
        [_text(n, n) for n in (3, 9, 5, 12)], [_text(n, 50 + n) for n in (4, 2, 11, 6)], np.arange(4.0)
    )
    want = evaluate_precisions(
        encoder, pairs, ["mean", "max"], ["int8", "binary"], calibration_size=6, batch_size=4
    )
    recorder.shapes.clear()
    got = evaluate_precisions(
        encoder,
        pairs,
        ["mean", "max"],
        ["int8", "binary"],
        calibration_size=6,
        batch_size=4,
        max_batch_tokens=12,
    )
    assert recorder.shapes and all(rows * width <= 12 or rows == 1 for rows, width in recorder.shapes)
    assert got[0] == want[0]
    assert {k: [r.as_dict() for r in v] for k, v in got[1].items()} == {
        k: [r.as_dict() for r in v] for k, v in want[1].items()
    }
