"""``tokenpool evaluate --onnx-file A --onnx-file B``: one row per runtime, side by side — each row's scores equal
that runtime's own evaluation, and its cosines equal a float64 loop over the two runtimes' vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from clitools import assert_one_error_line
from test_retrieval import write_beir

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tokenpool import Encoder  # noqa: E402
from tokenpool.evaluation.beir import read_beir  # noqa: E402
from tokenpool.evaluation.retrieval import evaluate_retrieval  # noqa: E402
from tokenpool.evaluation.runtimes import compare_retrieval  # noqa: E402
from tokenpool.evaluation.sts import evaluate_pairs, read_pairs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "examples" / "sts-sample.tsv"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random BERT folder (mean, Normalize) and two ONNX files of it, made by ``tokenpool export-onnx``."""
    from tinymodels import bert_folder

    from tokenpool import cli

    folder = bert_folder(tmp_path_factory.mktemp("tiny-onnx"))
    first = folder.parent / "a.onnx"
    assert cli.main(["export-onnx", str(folder), "--output", str(first)]) == 0
    second = folder.parent / "b.onnx"
    shutil.copyfile(first, second)
    return folder, first, second


def float64_cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    values = [float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a.astype(np.float64), b.astype(np.float64), strict=True)]
    return {"min": min(values), "median": float(np.median(values)), "p1": float(np.percentile(values, 1))}


def test_pairs_side_by_side(run, exported):
    folder, first, second = exported
    code, out, err = run("evaluate", PAIRS, "--model", folder, "--onnx-file", first, "--onnx-file", second, "--json")
    assert code == 0, err
    rows = json.loads(out)["runtimes"]
    assert [row["runtime"] for row in rows] == ["torch", f"onnx:{first}", f"onnx:{second}"]
    pairs = read_pairs(str(PAIRS))
    sentences = list(dict.fromkeys([*pairs.first, *pairs.second]))
    torch_encoder = Encoder(folder)
    reference = torch_encoder.encode(sentences)
    for row, onnx_file in zip(rows, [None, first, second], strict=True):
        encoder = torch_encoder if onnx_file is None else Encoder(folder, runtime="onnx", onnx_file=onnx_file)
        own = "+".join(encoder.strategies)
        assert row["scores_x100"]["Spearman"] == pytest.approx(evaluate_pairs(encoder, pairs, [own])[own], abs=1e-9)
        want = float64_cosines(encoder.encode(sentences), reference)
        assert row["cosine_vs_first"] == pytest.approx(want, abs=1e-6)
    assert rows[0]["cosine_vs_first"]["min"] == pytest.approx(1.0, abs=1e-6)
    assert rows[1]["cosine_vs_first"]["p1"] > 0.9999  # an fp32 export keeps the vectors
    code, out, _ = run("evaluate", PAIRS, "--model", folder, "--onnx-file", first)
    assert code == 0
    lines = out.splitlines()
    assert lines[2].split() == ["runtime", "Spearman", "cos", "min", "cos", "median", "cos", "p1", "texts/s"]
    assert lines[4].split()[0] == "torch" and lines[5].split()[0] == f"onnx:{first}"


def test_json_names_the_bundled_model_when_no_model_is_given(run, encoders, exported, monkeypatch):
    # the report said "model": null without --model
    from tokenpool.model import folders

    folder, first, _ = exported
    monkeypatch.setattr(folders, "bundled_model_path", lambda: folder)  # the tiny folder stands in for it
    cached = dict(encoders)  # an Encoder of the real bundled model built by an earlier test must not answer here
    encoders.clear()
    try:
        code, out, err = run("evaluate", PAIRS, "--onnx-file", first, "--json")
    finally:
        encoders.clear()
        encoders.update(cached)
    assert code == 0, err
    assert json.loads(out)["model"] == str(folder)


def test_beir_folder_side_by_side(run, exported, tmp_path):
    folder, first, _ = exported
    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(["cats sleep a lot", "stock markets fell", "rust is a language", "dogs bark"])]  # fmt: skip
    queries = [{"_id": "q1", "text": "sleeping cats"}, {"_id": "q2", "text": "programming languages"}]
    beir = write_beir(tmp_path / "beir", corpus, queries, [("q1", "d0", 1), ("q2", "d2", 1)])
    code, out, err = run("evaluate", beir, "--model", folder, "--onnx-file", first, "--json")
    assert code == 0, err
    rows = json.loads(out)["runtimes"]
    texts = [c["text"] for c in corpus]
    torch_encoder, onnx_encoder = Encoder(folder), Encoder(folder, runtime="onnx", onnx_file=first)
    for row, encoder in zip(rows, [torch_encoder, onnx_encoder], strict=True):
        assert row["scores_x100"] == pytest.approx(evaluate_retrieval(beir, encoder).scores().as_dict(100.0), abs=1e-9)
        assert row["cosine_vs_first"] == pytest.approx(float64_cosines(encoder.encode(texts), torch_encoder.encode(texts)), abs=1e-6)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--pooling", "mean"], "--pooling is not supported when comparing runtimes"),
        (["--modes", "bm25"], "--modes is not supported"),
        (["--precision", "int8"], "--precision is not supported"),
    ],
)
def test_comparison_refuses_what_it_cannot_compare_before_loading(run, exported, extra, needle):
    folder, first, second = exported
    code, _, err = run("evaluate", PAIRS, "--model", folder, "--onnx-file", first, "--onnx-file", second, *extra)
    assert_one_error_line(code, err, needle)


def test_one_onnx_file_with_runtime_onnx_is_a_plain_evaluation(run, exported):
    folder, first, _ = exported
    code, out, err = run("evaluate", PAIRS, "--model", folder, "--runtime", "onnx", "--onnx-file", first, "--pooling", "mean")
    assert code == 0, err
    assert out.splitlines()[1].split() == ["pooling", "Spearman", "x100"]


def test_compare_retrieval_reads_a_beir_folder(tmp_path):
    """compare_retrieval(loaders, folder) ran every runtime's evaluation, then failed with AttributeError
    ('str' object has no attribute 'doc_ids'); a folder is read once, as the RetrievalSet it holds."""
    docs = {"d1": "cats purr on the sofa", "d2": "stock markets fell today", "d3": "a kitten sleeps"}
    queries = {"q1": "feline pets", "q2": "finance news"}
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t1\n")
    loaders = [("torch", lambda: Encoder(device="cpu"))]
    want = compare_retrieval(loaders, read_beir(tmp_path), batch_size=8)
    got = compare_retrieval(loaders, str(tmp_path), batch_size=8)
    assert [row.scores for row in got] == [row.scores for row in want]


class _TableEncoder:
    """An encoder whose own pooling of each text is a fixed vector (the `pool_pairs` side of one)."""

    long_documents = "truncate"

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def iter_token_batches(self, texts, **_):
        yield SimpleNamespace(indices=np.arange(len(texts)), texts=list(texts))

    def pool_batch(self, batch, strategy):
        return np.array([self.table[text] for text in batch.texts], dtype=np.float32)


def test_zero_rows_compare_as_the_export_guard_compares_them():
    """Two runtimes that both give a text a zero vector agree on it (cosine 1.0, as `cosine_summary` counts
    it: the first runtime against itself read min 0.0 here); a zero vector against a non-zero one is 0.0."""
    from tokenpool.evaluation.runtimes import compare_pairs
    from tokenpool.evaluation.sts import Pairs
    from tokenpool.model.onnx_export import cosine_summary

    reference = {"a": [0, 0], "b": [0, 0], "c": [1, 2], "d": [2, 1],
                 "e": [3, 1], "f": [1, 3], "g": [1, 1], "h": [4, 1]}  # fmt: skip
    candidate = {**reference, "b": [1, 0], "c": [2, 4.5]}  # b: zero against non-zero; a: zero against zero
    pairs = Pairs(first=list("abcd"), second=list("efgh"), scores=np.array([1.0, 2.0, 3.0, 4.0]))
    loaders = [("ref", lambda: _TableEncoder(reference)), ("cand", lambda: _TableEncoder(candidate))]
    rows = compare_pairs(loaders, pairs)
    assert rows[0].cosine == pytest.approx({"min": 1.0, "median": 1.0, "p1": 1.0}, abs=1e-12)
    texts = list("abcdefgh")
    want = cosine_summary(np.array([reference[t] for t in texts]), np.array([candidate[t] for t in texts]))
    assert want["min"] == 0.0 and want["median"] == pytest.approx(1.0, abs=1e-12)
    assert rows[1].cosine == {name: want[name] for name in ("min", "median", "p1")}
