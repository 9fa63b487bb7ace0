"""Stop 64's evaluation hunt: each test checks documented behaviour (the stop-63 rule that an empty name inside
a list is refused everywhere, `core/strategies.split_names`; what the other paths do with the same input)
against a reference written here, not against the code under test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line, tiny_beir

from tokenpool.errors import OptionError
from tokenpool.evaluation.lexical import BM25Settings
from tokenpool.evaluation.modes import plan_modes
from tokenpool.evaluation.precision import parse_precisions
from tokenpool.evaluation.sts import read_pairs, strategy_labels


@pytest.mark.parametrize(
    ("parse", "spec"),
    [(plan_modes, "truncate,,bm25"), (plan_modes, "bm25,"), (BM25Settings.parse, "k1=1.2,,b=0.3"),
     (BM25Settings.parse, "k1=1.2,"), (parse_precisions, "int8,,binary"), (parse_precisions, "binary,")],
)  # fmt: skip
def test_an_empty_name_in_an_evaluation_list_is_refused_as_pooling_refuses_it(parse, spec):
    """modes="truncate,,bm25", bm25="k1=1.2,,b=0.3" and precisions "int8,,binary" dropped the empty item and ran
    the rest without a word, where pooling "mean,,cls" is refused (stop 63: one rule, `split_names`)."""
    with pytest.raises(ValueError, match="empty strategy name"):
        strategy_labels("mean,,cls")  # the reference: what the pooling list does
    with pytest.raises(OptionError, match=f"empty .* name in {spec!r}"):
        parse(spec)


@pytest.mark.parametrize(
    "flags",
    [["--modes", "truncate,,bm25"], ["--modes", "bm25", "--bm25", "k1=1.2,,b=0.5"],
     ["--precision", "int8,,binary"], ["--precision", "int8", "--rescore", "40,,100"]],
)  # fmt: skip
def test_the_command_line_refuses_an_empty_item_before_the_model_loads(run, tmp_path, flags):
    """`evaluate FOLDER --modes truncate,,bm25` (and --bm25, --precision, --rescore 40,,100) ran the other items
    with exit 0; now one error line naming the value, exit 2, before any model loads (the folder named by
    --model does not exist: a load would fail with another message)."""
    folder = tiny_beir(tmp_path / "set")
    model = [] if "bm25" in flags else ["--model", str(tmp_path / "no-model")]  # (bm25 alone refuses --model)
    code, _, err = run("evaluate", folder, *model, *flags)
    assert_one_error_line(code, err, repr(flags[-1]))


def test_mode_names_are_read_in_any_case_as_pooling_names_are():
    """`--modes Truncate` was "unknown document mode 'Truncate'" while `--pooling MEAN` reads as mean; a mode
    name is now read in any case, the rows named as the lower-case modes are."""
    assert strategy_labels("MEAN,Cls") == ["mean", "cls"]  # the reference: pooling names
    for spec, names in (("Truncate,BM25", ["truncate", "bm25"]), (["HYBRID:Late-128"], ["hybrid:late-128"])):
        assert plan_modes(spec).order == plan_modes(names).order
    with pytest.raises(OptionError, match="unknown document mode 'Bogus'"):  # named as given
        plan_modes("truncate,Bogus")


def test_evaluate_dash_reads_stdin_even_beside_a_folder_named_dash(run, tmp_path, monkeypatch):
    """``evaluate - < pairs.tsv`` read a BEIR folder named '-' in the working directory instead of the piped
    pairs (``embed -`` reads stdin whatever the folder holds), and the table's heading named the pairs ``-``
    where every message names them ``<stdin>``. Reference: the same file given by name."""
    import io
    import json
    import sys

    sample = Path(__file__).parents[1] / "examples" / "sts-sample.tsv"
    monkeypatch.chdir(tmp_path)
    tiny_beir(tmp_path / "-")
    code, want, err = run("evaluate", sample, "--pooling", "mean", "--json")
    assert code == 0, err
    for flags in (["--json"], []):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(sample.read_bytes())))
        code, out, err = run("evaluate", "-", "--pooling", "mean", *flags)
        assert code == 0, err
        if flags:
            assert json.loads(out)["spearman_x100"] == json.loads(want)["spearman_x100"]
        else:
            assert out.splitlines()[0].endswith(" pairs from <stdin>"), out


def test_the_runtime_table_heading_names_the_model_as_the_other_tables_do(run, tmp_path, monkeypatch):
    """`evaluate PAIRS --onnx-file A --onnx-file B` headed its table "N pairs from PAIRS (...)" with no model (only
    --json named it), where the STS and retrieval tables start "FOLDER/NAME: ". The runtimes are stood in for
    (no model loads): the heading is what is checked, against the form of `evaluate PAIRS`' own heading."""
    from tokenpool.evaluation import runtimes

    sample = Path(__file__).parents[1] / "examples" / "sts-sample.tsv"
    row = runtimes.RuntimeRow("onnx:a.onnx", {"Spearman": 80.0}, dict.fromkeys(runtimes.COSINE_NAMES, 1.0), 10.0)
    monkeypatch.setattr(runtimes, "compare_pairs", lambda loaders, pairs, **options: [row, row])
    model = tmp_path / "org" / "my-model"
    code, out, err = run("evaluate", sample, "--model", model, "--runtime", "onnx", "--onnx-file", "a.onnx",
                         "--onnx-file", "b.onnx")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"org/my-model: {len(read_pairs(str(sample)))} pairs from {sample}"), out


@pytest.mark.parametrize(("mlm", "pooling"), [(True, "mean"), (True, "splade,max"), (False, "splade")])
def test_a_pooling_the_model_cannot_take_is_refused_before_the_model_runs(tmp_path, monkeypatch, mlm, pooling):
    """A SPLADE model scored with pooling "mean" (and a dense model with "splade") ran the model over the first
    batch before the refusal; now the same refusal as `Encoder.check_pooling` (the reference: the encoder's own
    check of that strategy), with no forward pass, for STS pairs and retrieval alike."""
    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.core.strategies import parse_strategies
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.retrieval import evaluate_retrieval
    from tokenpool.evaluation.sts import Pairs, evaluate_pairs

    encoder = Encoder(bert_folder(tmp_path / "m", mlm=mlm), device="cpu")
    bad = next(name for name in pooling.split(",") if name != ("splade" if mlm else "mean"))
    with pytest.raises(ValueError) as want:
        encoder.check_pooling(parse_strategies(bad))
    batches = []
    monkeypatch.setattr(encoder, "iter_token_batches", lambda *a, **k: batches.append(1) or iter(()))
    pairs = Pairs(["a cat", "a dog"], ["a cat sleeps", "stocks fell"], np.array([4.0, 0.5]))
    data = RetrievalSet(["d1", "d2"], ["a cat", "a dog"], ["q1"], ["cat"], {"q1": {"d1": 1}})
    for call in (lambda: evaluate_pairs(encoder, pairs, pooling), lambda: evaluate_retrieval(data, encoder, pooling=pooling)):
        with pytest.raises(ValueError) as got:
            call()
        assert str(got.value) == str(want.value)
    assert not batches


@pytest.mark.parametrize("grades", [np.array([True]), np.array(["1"]), np.array([1 + 0j])])
def test_relevance_grades_that_are_no_numbers_are_refused_naming_their_type(grades):
    """`metrics_per_query` with a boolean relevance mask as grades raised "OverflowError: Python int too large to
    convert to C long" (a string grade numpy's "ufunc 'greater' did not contain a loop"), naming nothing of the
    input; `RetrievalSet` refuses a bool grade ("a grade must be an integer"). Now a ValueError naming the dtype."""
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.retrieval import metrics_per_query

    with pytest.raises(ValueError, match="a grade must be an integer"):  # the reference: the set's own rule
        RetrievalSet(["a"], ["x"], ["q"], ["y"], {"q": {"a": True}})
    with pytest.raises(ValueError, match=f"the grades numbers; got .* {grades.dtype} \\(1,\\)"):
        metrics_per_query(np.array([[0, 1]]), (np.array([0]), np.array([1]), grades), 2)


def test_a_run_is_refused_when_the_query_ids_are_not_one_per_ranked_query():
    """`Ranking.run(query_ids, doc_ids)` with fewer ids than ranked queries returned a run of those queries only
    (the others' lists dropped without a word: pytrec_eval then averaged over fewer queries); more ids were an
    IndexError. The reference: a run holds every ranked query, as `exact_search` ranked them."""
    from tokenpool.evaluation.search import exact_search

    ranking = exact_search(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), k=2)
    docs = ["d0", "d1", "d2"]
    assert list(ranking.run(["q0", "q1", "q2"], docs)) == ["q0", "q1", "q2"]
    for ids in (["q0", "q1"], ["q0", "q1", "q2", "q3"]):
        with pytest.raises(ValueError, match=f"3 queries, got {len(ids)} query ids"):
            ranking.run(ids, docs)
