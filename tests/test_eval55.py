"""Defects found in the evaluation layer (stop 55), each test failing before its fix."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tokenpool.errors import OptionError
from tokenpool.evaluation.beir import RetrievalSet

LONG = " ".join(f"word{i} apple." for i in range(60))  # many windows of the tiny model's 14 text tokens


@pytest.fixture(scope="module")
def tiny_set() -> RetrievalSet:
    docs = ["apple pie", LONG, "banana split", "cherry " * 30]
    return RetrievalSet(["a", "b", "c", "d"], docs, ["q1", "q2"], ["apple", "cherry"],
                        {"q1": {"a": 1, "b": 1}, "q2": {"d": 1}})  # fmt: skip


def test_retrieval_precisions_refuse_a_windows_encoder_as_evaluate_retrieval_does(tiny_bert_folder, tiny_set):
    """`evaluate_retrieval_precisions` promises truncated documents, but with an encoder built with
    ``long_documents="windows"`` its ``encode_documents`` pooled every window of a long document: a table of
    other vectors than the one claimed, where `evaluate_retrieval` (and the STS evaluations) refuse that encoder.
    It is refused the same way now, before the model runs."""
    from tokenpool import Encoder
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    windows = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu", long_documents="windows")
    truncate = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    # the two encoders' document vectors differ on the long document: the mode matters
    assert np.abs(windows.encode_documents([LONG]) - truncate.encode_documents([LONG])).max() > 1e-3
    with pytest.raises(OptionError, match="long_documents='truncate' \\(got 'windows'\\)") as reference:
        evaluate_retrieval(tiny_set, windows)

    calls = []
    windows.encode_documents = lambda *a, **k: calls.append(a) or truncate.encode_documents(*a, **k)
    with pytest.raises(OptionError) as raised:
        evaluate_retrieval_precisions(tiny_set, windows, ["float32", "int8"])
    assert str(raised.value) == str(reference.value) and not calls
    rows, _ = evaluate_retrieval_precisions(tiny_set, truncate, ["float32"])
    assert rows[0].scores == evaluate_retrieval(tiny_set, truncate).scores()


def _beir_folder(folder, docs: dict[str, str]) -> None:
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "apple trees"}\n{"_id": "q2", "text": "bananas"}\n')
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")


def test_the_precision_tables_name_the_texts_the_ranges_came_from(run, tmp_path):
    """``evaluate --precision int8`` headed its table "int8/uint8 ranges from the first 1000 sentences" (or
    documents) on a file of 6 distinct sentences / a folder of 5 documents: the ranges came from those 6 / 5, as
    its --json said ("texts"). The heading names the count the ranges were taken from now."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("score,s1,s2\n4.5,A man plays a guitar.,A man is playing a guitar.\n"
                     "0.5,A cat sleeps.,Stocks fell sharply.\n2.0,Two dogs run.,A dog sleeps.\n")  # fmt: skip
    folder = tmp_path / "beir"
    _beir_folder(folder, {"d1": "apple trees in bloom", "d2": "bananas are yellow", "d3": "stock markets",
                          "d4": "guitar lessons", "d5": "a cat on a sofa"})  # fmt: skip
    for data, what, count, pooling in ((pairs, "sentences", 6, ["--pooling", "mean"]), (folder, "documents", 5, [])):
        code, out, err = run("evaluate", data, *pooling, "--precision", "int8", "--json")
        assert code == 0, err
        calibrations = json.loads(out)["calibration"]
        calibrations = calibrations.values() if what == "sentences" else [calibrations]  # (STS: one per pooling)
        assert [cal["texts"] for cal in calibrations] == [count]
        for size, shown in ((None, count), ("3", 3)):
            code, out, err = run("evaluate", data, *pooling, "--precision", "int8",
                                 *(["--calibration-size", size] if size else []))  # fmt: skip
            assert code == 0, err
            assert f"int8/uint8 ranges from the first {shown} {what}" in out, out


@pytest.mark.parametrize("option", [{"pooling": "mean,cls"}, {"pooling": ["cls"]}, {"query_prompt": "query: "},
                                    {"document_prompt": ""}, {"max_batch_tokens": 512}])  # fmt: skip
def test_model_options_are_refused_when_only_bm25_runs(option):
    """``evaluate_retrieval(data, pooling="mean,cls", modes="bm25")`` gave the BM25 row alone without a word (no
    mean or cls row; ``scores("mean")`` a KeyError later), and the prompts and token budget were dropped too,
    where ``evaluate --modes bm25`` refuses ``--pooling``, ``--prompt`` and ``--max-batch-tokens`` and the library
    refuses ``bm25=`` / ``rrf_k=`` settings that no mode reads. Refused now, naming the option and the modes."""
    pytest.importorskip("bm25s")
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    data = RetrievalSet(["d1", "d2"], ["cat", "dog"], ["q1"], ["cat"], {"q1": {"d1": 1}})
    (name, value), = option.items()
    message = f"{name}={value!r} is read by the model, and modes ['bm25'] run none"
    with pytest.raises(OptionError, match="^" + re.escape(message)):
        evaluate_retrieval(data, modes="bm25", **option)
    unread = {"pooling": None, "query_prompt": None, "document_prompt": None, "max_batch_tokens": None}
    assert evaluate_retrieval(data, modes=["bm25"], **unread).scores().ndcg_at_10 == 1.0
