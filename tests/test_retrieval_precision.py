"""`tokenpool evaluate FOLDER --precision`: retrieval with compact codes, checked against pytrec_eval on rankings
computed here independently (numpy similarities, Python sorting in trec_eval's tie order)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_one_error_line
from tinymodels import bert_folder

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, quantize, unpack_signs
from tokenpool.evaluation.beir import read_beir
from tokenpool.evaluation.precision import evaluate_retrieval_precisions, similarity_matrix
from tokenpool.evaluation.retrieval import evaluate_retrieval

pytrec_eval = pytest.importorskip("pytrec_eval")

WORDS = [
    "cell",
    "protein",
    "gene",
    "virus",
    "brain",
    "heart",
    "cancer",
    "drug",
    "blood",
    "immune",
    "bone",
    "lung",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small BEIR folder: 60 documents of 3–12 words, 20 queries with 1–2 relevant documents (grades 1–2)."""
    root = tmp_path_factory.mktemp("beir")
    rng = np.random.default_rng(5)
    docs = {f"d{i:02d}": " ".join(rng.choice(WORDS, size=3 + i % 10)) for i in range(60)}
    with open(root / "corpus.jsonl", "w") as fh:
        for doc_id, text in docs.items():
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as fh, open(root / "qrels.tsv", "w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for q in range(20):
            fh.write(json.dumps({"_id": f"q{q}", "text": " ".join(docs[f"d{3 * q:02d}"].split()[:3])}) + "\n")
            qrels.write(f"q{q}\td{3 * q:02d}\t2\n")
            if q % 2:
                qrels.write(f"q{q}\td{3 * q + 1:02d}\t1\n")
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return Encoder(bert_folder(tmp_path_factory.mktemp("dense")))


def _ndcg(run, qrels) -> float:
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    return float(np.mean([v["ndcg_cut_10"] for v in evaluator.evaluate(run).values()]))


def _top(scores: np.ndarray, doc_ids: list[str], k: int) -> list[int]:
    """trec_eval's order: score descending, then document id descending."""
    return sorted(range(len(doc_ids)), key=lambda d: (-scores[d], [-b for b in doc_ids[d].encode()]))[:k]


def test_each_precision_equals_an_independent_ranking(folder, encoder):
    data = read_beir(folder)
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in _qrels(folder).items()}
    rows, calibration = evaluate_retrieval_precisions(
        data, encoder, ["int8", "ubinary"], calibration_size=30, rescore=[5]
    )
    by_name = {row.name: row for row in rows}
    assert list(by_name) == [
        "float32",
        "int8 (cosine of the codes)",
        "int8 + float32 rescoring of the top 5",
        "ubinary (Hamming distance)",
        "ubinary + float32 rescoring of the top 5",
    ]
    queries = encoder.encode_queries(data.query_texts, batch_size=64)
    documents = encoder.encode_documents(data.doc_texts, batch_size=64)
    np.testing.assert_array_equal(calibration.minimum, documents[:30].min(axis=0))

    # float32: the retrieval module's own path gives the same nDCG@10
    reference = evaluate_retrieval(data, encoder).rows[0].scores.ndcg_at_10
    assert by_name["float32"].scores.ndcg_at_10 == pytest.approx(reference, abs=1e-12)

    def run_of(scores: np.ndarray, k: int = 100) -> dict:
        return {
            q: {data.doc_ids[d]: float(scores[i, d]) for d in _top(scores[i], data.doc_ids, k)}
            for i, q in enumerate(data.query_ids)
        }

    dim = documents.shape[1]
    int8 = similarity_matrix(
        quantize(queries, "int8", calibration), quantize(documents, "int8", calibration), "int8", dim
    )
    assert by_name["int8 (cosine of the codes)"].scores.ndcg_at_10 == pytest.approx(
        _ndcg(run_of(int8), qrels), abs=1e-9
    )
    codes = quantize(documents, "ubinary")
    hamming = similarity_matrix(quantize(queries, "ubinary"), codes, "ubinary", dim)
    assert by_name["ubinary (Hamming distance)"].scores.ndcg_at_10 == pytest.approx(
        _ndcg(run_of(hamming), qrels), abs=1e-9
    )
    signs = unpack_signs(codes, dimension=dim).astype(np.float64)
    rescored = np.full(hamming.shape, -np.inf)
    for i in range(len(queries)):
        shortlist = _top(hamming[i], data.doc_ids, 5)
        rescored[i, shortlist] = signs[shortlist] @ queries[i].astype(np.float64)
    run = {q: {d: s for d, s in r.items() if np.isfinite(s)} for q, r in run_of(rescored, 5).items()}
    assert by_name["ubinary + float32 rescoring of the top 5"].scores.ndcg_at_10 == pytest.approx(
        _ndcg(run, qrels), abs=1e-9
    )
    assert (
        by_name["ubinary (Hamming distance)"].bytes == 4 and by_name["int8 (cosine of the codes)"].bytes == 32
    )


def _qrels(folder) -> dict:
    out: dict = {}
    for line in (folder / "qrels.tsv").read_text().splitlines()[1:]:
        q, d, g = line.split("\t")
        out.setdefault(q, {})[d] = int(g)
    return out


def test_cli(run, folder, encoder, tmp_path):
    model = str(encoder.model_path)
    code, out, err = run(
        "evaluate", folder, "--model", model, "--precision", "int8,binary", "--rescore", "5,10", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert list(report["precision"]) == [
        "float32",
        "int8 (cosine of the codes)",
        "int8 + float32 rescoring of the top 5",
        "int8 + float32 rescoring of the top 10",
        "binary (Hamming distance)",
    ]
    assert report["precision"]["float32"]["kept"] == 1.0 and report["calibration"]["texts"] == 60
    code, out, err = run("evaluate", folder, "--model", model, "--precision", "ubinary")
    assert code == 0, err
    assert "ubinary + float32 rescoring of the top 40" in out and "nDCG@10" in out and "kept" in out
    calibration = Calibration.from_dict(report["calibration"])
    calibration.save(tmp_path / "cal.json")
    code, out, err = run(
        "evaluate", folder, "--model", model, "--precision", "int8", "--calibration", tmp_path / "cal.json"
    )
    assert code == 0, err
    assert f"calibration {tmp_path / 'cal.json'}" in out
    for extra, needles in [
        (["--precision", "int8", "--pooling", "cls"], ["--pooling is not supported with --precision"]),
        (["--precision", "int8", "--rescore", "0"], ["--rescore takes positive integers"]),
        (["--precision", "int8", "--rescore", "x"], ["--rescore takes comma-separated positive integers"]),
        (
            ["--precision", "binary", "--calibration", tmp_path / "cal.json"],
            ["--calibration is for --precision int8"],
        ),
    ]:
        code, _, err = run("evaluate", folder, "--model", model, *extra)
        assert_one_error_line(code, err, *needles)
