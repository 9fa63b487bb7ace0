"""Corners of retrieval evaluation and of export-onnx: queries with nothing relevant are averaged as BEIR averages
them (pytrec_eval figures over every judged query), static calibration tokenises as encoding does, a refused
export leaves no folder behind, and every export records how it was made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytrec_eval = pytest.importorskip("pytrec_eval")

from tokenpool.evaluation.beir import read_beir  # noqa: E402
from tokenpool.evaluation.retrieval import evaluate_retrieval  # noqa: E402


def _write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple]) -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _beir_means(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """BEIR's `EvaluateRetrieval.evaluate`: pytrec_eval per query, summed and divided by the queries scored
    (every query of the qrels file: BEIR's loader keeps them all); MRR@10 = recip_rank over the top 10."""
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    assert set(per_query) == set(qrels)  # pytrec_eval scores the all-non-relevant queries too
    n = len(per_query)
    return {
        "nDCG@10": sum(m["ndcg_cut_10"] for m in per_query.values()) / n,
        "recall@100": sum(m["recall_100"] for m in per_query.values()) / n,
        "MRR@10": sum(m["recip_rank"] for m in rr.values()) / n,
    }


def test_queries_with_nothing_relevant_count_as_zero_as_in_beir(tmp_path):
    pytest.importorskip("bm25s")
    words = ["apple banana", "banana cherry", "cherry date", "date elder", "elder fig", "fig grape"]
    corpus = [{"_id": f"d{i}", "text": text} for i, text in enumerate(words)]
    queries = [{"_id": f"q{i}", "text": text} for i, text in enumerate(["apple", "cherry", "fig", "banana", "zzz"])]
    # q1: only a non-relevant judgement; q3: a negative one; q4: never judged (BEIR drops it too)
    qrels = [("q0", "d0", 1), ("q1", "d2", 0), ("q2", "d4", 2), ("q2", "d5", 1), ("q3", "d1", -1)]
    folder = _write_beir(tmp_path / "set", corpus, queries, qrels)
    result = evaluate_retrieval(folder, modes=["bm25"])
    assert result.query_ids == ["q0", "q1", "q2", "q3"]
    judged: dict[str, dict[str, int]] = {}
    for q, d, s in qrels:
        judged.setdefault(q, {})[d] = s
    row = result.row(mode="bm25")
    run = row.ranking.run(result.query_ids, read_beir(folder).doc_ids)
    expected = _beir_means(judged, run)
    for name, value in row.scores.as_dict().items():
        assert value == pytest.approx(expected[name], abs=1e-12), name
    assert row.per_query["nDCG@10"][1] == row.per_query["recall@100"][3] == 0.0
    assert np.isfinite(np.concatenate(list(row.per_query.values()))).all()


# ------------------------------------------------------------------------------------------ export-onnx

PROMPT = "query: "
TEXTS = ["A man is playing a guitar.", "Two dogs run in the park.", "", "Ünïcödé café", "x " * 60]


@pytest.fixture(scope="module")
def prompted(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder whose default prompt is ``PROMPT``."""
    pytest.importorskip("onnxruntime")
    from tinymodels import bert_folder

    folder = bert_folder(tmp_path_factory.mktemp("prompted") / "bert")
    config_file = folder / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.update(prompts={"query": PROMPT}, default_prompt_name="query")
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def prompted_onnx(prompted, tmp_path_factory) -> Path:
    from tokenpool.model.onnx import export_onnx

    return export_onnx(prompted, tmp_path_factory.mktemp("fp32") / "model.onnx")


def _unpadded(ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    """Each row's ids where the mask is 1."""
    return [row[keep == 1].tolist() for row, keep in zip(ids, mask, strict=True)]


def test_static_calibration_feeds_carry_the_default_prompt_as_encode_does(prompted, prompted_onnx, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    from sentence_transformers import SentenceTransformer

    from tokenpool.model import onnx_export

    seen: list[dict[str, np.ndarray]] = []
    original = onnx_export.quantize_onnx

    def spy(source, target, recipe, *, calibration=()):
        seen.extend(calibration)
        return original(source, target, recipe, calibration=calibration)

    monkeypatch.setattr(onnx_export, "quantize_onnx", spy)
    recipe = onnx_export.Recipe(quantize="int8", activations="static")
    onnx_export.make_variant(prompted, prompted_onnx, tmp_path / "s.onnx", recipe, texts=TEXTS, force=True)
    fed = sorted(row for feed in seen for row in _unpadded(feed["input_ids"], feed["attention_mask"]))
    model = SentenceTransformer(str(prompted), device="cpu")  # the reference: what it encodes, prompt and all
    assert model.default_prompt_name == "query"
    features = model.tokenize([PROMPT + text for text in TEXTS])
    expected = sorted(_unpadded(features["input_ids"].numpy(), features["attention_mask"].numpy()))
    assert fed == expected


@pytest.mark.parametrize("refusal", [["--min-cosine", "1"], ["--keep-fp32", "op:NoSuchOperator"]])
def test_a_refused_variant_leaves_no_folder_it_made_and_keeps_the_ones_it_found(run, prompted, prompted_onnx,
                                                                               tmp_path, refusal):  # fmt: skip
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS[:2]) + "\n", encoding="utf-8")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me", encoding="utf-8")
    for target in (tmp_path / "new" / "deeper" / "q.onnx", existing / "q.onnx", existing / "sub" / "q.onnx"):
        code, _, err = run("export-onnx", prompted, "--onnx-file", prompted_onnx, "--quantize", "int8",
                           "--calibration-texts", texts, "--output", target, *refusal)  # fmt: skip
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "existing", "existing/mine.txt", "texts.txt"
    ]  # fmt: skip


def test_a_plain_export_records_how_it_was_made_as_a_variant_does(run, prompted, tmp_path):
    import hashlib

    from tokenpool import Encoder
    from tokenpool.model.onnx_export import read_record, record_path

    target = tmp_path / "new" / "plain.onnx"
    code, out, err = run("export-onnx", prompted, "--output", target)
    assert code == 0, err
    assert out.splitlines()[0] == str(target)
    written = json.loads(record_path(target).read_text(encoding="utf-8"))
    weights = hashlib.sha256((prompted / "model.safetensors").read_bytes()).hexdigest()
    assert written["source"]["digests"]["model.safetensors"] == "sha256:" + weights
    assert [step["step"] for step in written["steps"]] == ["export"]
    assert written["file"]["digest"] == "sha256:" + hashlib.sha256(target.read_bytes()).hexdigest()
    stored = read_record(target)
    assert stored == {k: v for k, v in written.items() if k != "file"}
    assert Encoder(prompted, runtime="onnx", onnx_file=target).runner.record == stored
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    variant = tmp_path / "q.onnx"
    code, _, err = run("export-onnx", prompted, "--onnx-file", target, "--quantize", "int8", "--calibration-texts",
                       texts, "--output", variant, "--force")  # fmt: skip
    assert code == 0, err
    assert set(json.loads(record_path(variant).read_text(encoding="utf-8"))) == set(written)  # one record format


@pytest.mark.parametrize("option", [
    ["--min-cosine", "0.5"], ["--batch-size", "8"], ["--onnx-file", "m.onnx"], ["--activations", "static"],
    ["--calibration-texts", "t.txt"], ["--keep-fp32", "softmax"], ["--force"], ["--stsb", "s.tsv"], ["--beir", "b"],
])  # fmt: skip
def test_variant_options_are_refused_by_a_plain_export_not_ignored(run, prompted, tmp_path, option):
    target = tmp_path / "plain.onnx"
    code, out, err = run("export-onnx", prompted, "--output", target, *option)
    # stop 56: the verb agrees, and an option --optimize refuses too names --quantize int8 alone
    int8 = option[0] in ("--min-cosine", "--activations", "--keep-fp32")
    needs = "an int8 variant (--quantize int8)" if int8 else "a variant (--optimize or --quantize int8)"
    assert code == 2 and f"{option[0]} applies to {needs} only" in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ evaluate options

STSB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stsb" / "sts-test.csv"


def test_evaluate_split_with_a_pairs_file_is_refused_when_comparing_runtimes_too(run, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(STSB.read_text(encoding="utf-8").splitlines()[:20]) + "\n", encoding="utf-8")
    for extra in ([], ["--onnx-file", "a.onnx", "--onnx-file", "b.onnx"], ["--runtime", "torch", "--onnx-file", "a.onnx"]):
        code, _, err = run("evaluate", pairs, "--split", "dev", *extra)
        assert code == 2 and "--split applies to a BEIR folder" in err, (extra, err)
        assert len(err.strip().splitlines()) == 1


def test_evaluate_precision_plot_is_drawn_with_json_and_refused_on_a_folder(run, prompted, tmp_path):
    pytest.importorskip("matplotlib")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(STSB.read_text(encoding="utf-8").splitlines()[:20]) + "\n", encoding="utf-8")
    chart = tmp_path / "chart.png"
    code, out, err = run("evaluate", pairs, "--model", prompted, "--precision", "float16", "--json",
                         "--plot", chart, "--pooling", "mean")  # fmt: skip
    assert code == 0, err
    assert "precision" in json.loads(out) and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = _write_beir(tmp_path / "set", [{"_id": "d", "text": "x"}], [{"_id": "q", "text": "y"}], [("q", "d", 1)])
    code, _, err = run("evaluate", folder, "--precision", "float16", "--plot", tmp_path / "set.png")
    assert code == 2 and "--plot is not supported with --precision on a BEIR folder" in err, err
    assert not (tmp_path / "set.png").exists()


@pytest.mark.parametrize("docs, queries", [(["a"], []), ([], ["q"])])
def test_a_retrieval_set_without_queries_or_documents_is_refused_not_scored_nan(docs, queries):
    from tokenpool.evaluation.beir import RetrievalSet

    with pytest.raises(ValueError, match="needs documents and queries"):
        RetrievalSet(docs, ["x"] * len(docs), queries, ["y"] * len(queries), {q: {} for q in queries})
