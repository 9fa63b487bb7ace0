"""Stop 45's evaluation bug hunt: options nothing reads are refused, figures checked against independent references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line
from test_retrieval import write_beir

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT.parent / "shared" / "data" / "stsb" / "sts-test.csv"
IR = ROOT.parent / "shared" / "data" / "ir"
CORPUS = [{"_id": "d1", "text": "cats sit on mats"}, {"_id": "d2", "text": "dogs chase cats"},
          {"_id": "d3", "text": "birds fly high"}]  # fmt: skip
QUERIES = [{"_id": "q1", "text": "cats"}, {"_id": "q2", "text": "birds fly"}]
QRELS = [("q1", "d1", 1), ("q1", "d2", 2), ("q2", "d3", 1)]


@pytest.fixture
def folder(tmp_path):
    return write_beir(tmp_path / "beir", CORPUS, QUERIES, QRELS)


@pytest.mark.parametrize(
    "options",
    [["--model", "no-such-model"], ["--prompt", "query: "], ["--prompt-name", "query"], ["--max-length", "9"],
     ["--dtype", "float16"], ["--batch-size", "3"], ["--max-batch-tokens", "99"], ["--trust-remote-code"]],
)  # fmt: skip
def test_model_options_are_refused_when_only_bm25_runs(run, folder, options):
    """`evaluate FOLDER --modes bm25` loads no model: --model, the prompts and the batching were taken and
    silently ignored (exit 0, a BM25 table for a run that named a model); --pooling was already refused."""
    code, out, err = run("evaluate", folder, "--modes", "bm25", *options)
    assert_one_error_line(code, err, options[0], "only bm25")
    assert out == ""


@pytest.mark.parametrize("modes", [["--modes", "truncate", "--pooling", "mean"], ["--modes", "bm25"]])
def test_window_stride_is_refused_where_no_mode_reads_windows(run, folder, tmp_path, modes):
    """--window-stride sets the stride of the windows and late-N modes only: with truncate, bm25 or a pairs file
    it changed nothing and the run went on, exit 0."""
    code, out, err = run("evaluate", folder, *modes, "--window-stride", "5")
    assert_one_error_line(code, err, "--window-stride", "windows or a late-N mode")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1.0\ta\tb\n2.0\tc\td\n", encoding="utf-8")
    code, out, err = run("evaluate", pairs, "--window-stride", "5")
    assert_one_error_line(code, err, "--window-stride", "pairs file")


def test_bm25_with_its_defaults_and_a_windows_stride_still_run(run, folder):
    code, _, err = run("evaluate", folder, "--modes", "bm25", "--no-trust-remote-code", "--batch-size", "64")
    assert code == 0, err
    code, _, err = run("evaluate", folder, "--modes", "windows", "--pooling", "mean", "--window-stride", "5")
    assert code == 0, err


# ------------------------------------------------------------- the starred row of a model with a Dense module


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    """A tiny BERT whose sentence-transformers pipeline ends in a Dense module (32 → 8), and that pipeline."""
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tinymodels import HIDDEN, bert_weights

    root = tmp_path_factory.mktemp("dense")
    bert_weights(root / "bert")
    torch.manual_seed(0)
    modules = [Transformer(str(root / "bert"), max_seq_length=48), Pooling(HIDDEN, "mean"), Dense(HIDDEN, 8)]
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(root / "st"))
    return root / "st", model


def _cosines(model, first, second):
    a, b = (model.encode(list(texts), convert_to_numpy=True).astype(np.float64) for texts in (first, second))
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_configured_pooling_row_is_the_models_own_vectors(dense_model):
    """`evaluate` marks the row of the model's strategy ("mean *") as the model's configured pooling, but pooled
    that strategy raw: a folder's Dense module was left out, so the starred figure was not the model's (here
    14.79 against sentence-transformers' 15.49). It is the model's vectors now, Dense module included."""
    from scipy.stats import spearmanr

    from tokenpool import Encoder
    from tokenpool.evaluation.sts import Pairs, evaluate_pairs, read_pairs

    folder, model = dense_model
    pairs = read_pairs(str(STSB))
    pairs = Pairs(pairs.first[:200], pairs.second[:200], pairs.scores[:200])
    reference = 100 * spearmanr(_cosines(model, pairs.first, pairs.second), pairs.scores).statistic
    scores = evaluate_pairs(Encoder(str(folder)), pairs, "all")
    raw = evaluate_pairs(Encoder(str(folder), pooling="mean"), pairs, "mean")["mean"]  # the strategy alone
    assert abs(raw - reference) > 0.3  # (what the starred row showed)
    assert scores["mean"] == pytest.approx(reference, abs=0.05)


def test_the_configured_retrieval_row_matches_pytrec_eval_on_the_models_vectors(dense_model):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from tokenpool import Encoder
    from tokenpool.evaluation.beir import RetrievalSet, read_beir
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    folder, model = dense_model
    full = read_beir(IR / "cisi")
    docs = set(full.doc_ids[:300])
    judged = {q: {d: g for d, g in full.qrels[q].items() if d in docs} for q in full.query_ids}
    queries = [i for i, q in enumerate(full.query_ids) if any(g > 0 for g in judged[q].values())]
    data = RetrievalSet(full.doc_ids[:300], full.doc_texts[:300], [full.query_ids[i] for i in queries],
                        [full.query_texts[i] for i in queries], {full.query_ids[i]: judged[full.query_ids[i]] for i in queries})  # fmt: skip
    result = evaluate_retrieval(data, Encoder(str(folder)), pooling="mean,cls")
    q = model.encode(data.query_texts, convert_to_numpy=True, normalize_embeddings=True)
    d = model.encode(data.doc_texts, convert_to_numpy=True, normalize_embeddings=True)
    scores = q @ d.T
    run = {qid: {data.doc_ids[j]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]}
           for i, qid in enumerate(data.query_ids)}  # fmt: skip
    per_query = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10"}).evaluate(run)
    reference = np.mean([per_query[qid]["ndcg_cut_10"] for qid in data.query_ids])
    assert result.configured == "mean"
    assert result.scores("mean").ndcg_at_10 == pytest.approx(reference, abs=2e-3)
    windows = evaluate_retrieval(data, Encoder(str(folder)), pooling="mean,cls", modes="windows")
    own = evaluate_retrieval(data, Encoder(str(folder)), modes="windows")  # pooling=None: the model's own
    assert windows.scores("mean", "windows") == own.scores(mode="windows")


def test_the_configured_rows_int8_ranges_are_the_models_vectors_and_fit_the_model(dense_model):
    """The int8 ranges of the starred row come from the model's vectors (Dense module, normalisation): they
    were recorded as not normalised, so the calibration the report gives was refused by --calibration for
    the same model (a normalisation mismatch)."""
    from tokenpool import Encoder
    from tokenpool.evaluation.precision import evaluate_precisions
    from tokenpool.evaluation.sts import Pairs, read_pairs

    folder, model = dense_model
    pairs = read_pairs(str(STSB))
    pairs = Pairs(pairs.first[:40], pairs.second[:40], pairs.scores[:40])
    encoder = Encoder(str(folder), normalize=True)
    _, _, calibrations = evaluate_precisions(encoder, pairs, "mean,cls", ["int8"], calibration_size=30)
    first = list(dict.fromkeys([*pairs.first, *pairs.second]))[:30]
    reference = model.encode(first, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(calibrations["mean"].minimum, reference.min(axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(calibrations["mean"].maximum, reference.max(axis=0), rtol=0, atol=1e-5)
    calibrations["mean"].check_encoder(encoder)  # what --calibration checks


@pytest.mark.parametrize("score", ["3,2", "", "n/a", "nan", "4.0.1"])
def test_a_malformed_first_score_of_an_stsb_file_is_refused_not_taken_for_a_header(tmp_path, score):
    """An STS-B layout file (no header) whose first pair had a malformed score was read as having a header:
    that pair was dropped unread and the Spearman computed on the rest (the csv module reads every line)."""
    import csv

    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text(f"g\tf\t2012\t1\t{score}\tA b.\tC d.\ng\tf\t2012\t2\t3.2\tE f.\tG h.\n", encoding="utf-8")
    rows = list(csv.reader(path.open(encoding="utf-8"), delimiter="\t"))
    assert len(rows) == 2  # the pairs the file holds
    with pytest.raises(CorpusError, match=f"line 1: score {score!r} is not a number"):
        read_pairs(str(path))


def test_an_stsb_header_is_still_skipped(tmp_path):
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text("genre\tfile\tyear\tid\tgold score\ts1\ts2\ng\tf\t2012\t2\t3.2\tE f.\tG h.\n", encoding="utf-8")
    assert read_pairs(str(path)).scores.tolist() == [3.2]


# ------------------------------------------------------------------------------------------------ LlamaIndex


@pytest.mark.parametrize(("name", "value"), [("truncate_dim", 8), ("pooling", "mean"), ("normalize", False),
                                             ("max_length", 4), ("model", "elsewhere")])  # fmt: skip
def test_llama_index_encoder_options_cannot_be_changed_after_the_encoder_is_built(name, value):
    """`emb.truncate_dim = 8` was taken: the vectors stayed 384-dimensional (the Encoder is built once) while
    to_dict() said 8, so the rebuilt embedding (from_dict, as LlamaIndex stores it) gave other vectors."""
    pytest.importorskip("llama_index.core")
    from pydantic import ValidationError

    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    embedding = TokenPoolEmbedding(pooling="cls", embed_batch_size=2)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(embedding, name, value)
    restored = TokenPoolEmbedding.from_dict(embedding.to_dict())
    np.testing.assert_allclose(restored.get_text_embedding("a cat"), embedding.get_text_embedding("a cat"), atol=1e-6)
    embedding.embed_batch_size, embedding.query_prompt = 3, "query: "  # read at each call: still settable
    assert restored.get_query_embedding("a cat") != embedding.get_query_embedding("a cat")


def test_the_scores_of_a_bm25_only_evaluation_need_no_mode_name():
    """`evaluate_retrieval(folder, modes="bm25").scores()` was a KeyError (the default mode was truncate, which
    this evaluation has no row of); the only mode is the default now. Figures as pytrec_eval gives them."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    pytest.importorskip("bm25s")
    from tokenpool.evaluation.beir import read_beir
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    data = read_beir(IR / "cisi")
    result = evaluate_retrieval(data, modes="bm25")
    run = result.rows[0].ranking.run(data.query_ids, data.doc_ids)
    per_query = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    scores = result.scores()
    assert scores.ndcg_at_10 == pytest.approx(np.mean([per_query[q]["ndcg_cut_10"] for q in data.query_ids]))
    assert scores.recall_at_100 == pytest.approx(np.mean([per_query[q]["recall_100"] for q in data.query_ids]))
    assert result.row().mode == "bm25"


def test_a_retrieval_set_refuses_judgements_of_a_query_it_does_not_hold():
    """RetrievalSet(..., qrels={"q": ..., "zz": ...}) with no query "zz" dropped zz's judgements silently (a
    smaller set than the one given); read_beir refuses the same qrels line (unknown query id)."""
    from tokenpool.evaluation.beir import RetrievalSet

    with pytest.raises(ValueError, match="qrels judge query 'zz'"):
        RetrievalSet(["a", "b"], ["x", "y"], ["q"], ["t"], {"q": {"a": 1}, "zz": {"b": 1}})
    assert RetrievalSet(["a", "b"], ["x", "y"], ["q"], ["t"], {"q": {"a": 1}}).relevance()[2].tolist() == [1.0]


def _prompted(folder: Path) -> Path:
    """``folder`` with a query prompt that is also its default prompt (a document has none of its own)."""
    from tinymodels import edit_json

    edit_json(folder / "config_sentence_transformers.json", prompts={"query": "query: "}, default_prompt_name="query")
    return folder


def test_retrieval_encodes_each_side_as_encode_queries_and_encode_documents_do(tmp_path):
    """A folder whose default prompt is its query prompt: `encode_documents` uses no prompt (as
    sentence-transformers 6.3's encode_document), but retrieval evaluation still gave documents the default
    (query) prompt. Its run's scores are now the cosines of encode_queries / encode_documents vectors."""
    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    encoder = Encoder(_prompted(bert_folder(tmp_path / "m", normalize=True)), device="cpu")
    docs = ["a cat sat on the mat", "stock markets fell", "the dog barked", "rain in spain", "cats and dogs"]
    data = RetrievalSet([f"d{k}" for k in range(5)], docs, ["q0", "q1"], ["where is the cat", "finance news"],
                        {"q0": {"d0": 1}, "q1": {"d1": 1}})  # fmt: skip
    result = evaluate_retrieval(data, encoder)
    run = result.row().ranking.run(data.query_ids, data.doc_ids)
    cosines = encoder.encode_queries(data.query_texts) @ encoder.encode_documents(docs).T
    for i, qid in enumerate(data.query_ids):
        got = np.array([run[qid][d] for d in data.doc_ids])
        np.testing.assert_allclose(got, cosines[i], rtol=1e-5, atol=1e-6)


def test_llama_index_sparse_functions_use_the_sides_prompts_as_encode_documents(tmp_path):
    """sparse_functions' document function gave documents the folder's default (query) prompt; it now encodes
    them as `encode_documents` does (no prompt here), and queries with the query prompt."""
    pytest.importorskip("llama_index.core")
    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.integrations.llama_index import sparse_functions

    encoder = Encoder(_prompted(bert_folder(tmp_path / "s", mlm=True)), device="cpu")
    texts = ["a cat sat on the mat", "stock markets fell"]
    documents, queries = sparse_functions(encoder)
    for function, prompt in ((documents, ""), (queries, "query: ")):
        indices, values = function(texts)
        want = encoder.encode_sparse(texts, prompt=prompt)
        for row, (ids, vals) in enumerate(zip(indices, values, strict=True)):
            start, stop = want.indptr[row], want.indptr[row + 1]
            assert ids == want.indices[start:stop].tolist()
            np.testing.assert_allclose(vals, want.data[start:stop], rtol=1e-6)


def _starred(table: str) -> list[str]:
    """The rows the text table marks with ``*`` (the model's configured pooling), as ``pooling`` labels."""
    marked = []
    for line in table.splitlines():
        cells = line.split()
        if "*" in cells[1:] and not line.startswith("*"):
            marked.append(cells[cells.index("*") - 1])
    return marked


def test_json_reports_name_the_configured_row_the_table_stars(run, folder, tmp_path):
    """The text tables star the model's own row; --json said nothing of it, so a script could not find the
    model's figure among the strategies. Now `configured` names the row the table stars (null where none)."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1.0\ta cat\tthe dog\n3.0\tsun\tsunny day\n5.0\train\train\n", encoding="utf-8")
    for target, extra in ((pairs, []), (folder, ["--modes", "truncate"])):
        code, text, err = run("evaluate", target, "--pooling", "mean,cls", *extra)
        assert code == 0, err
        code, out, err = run("evaluate", target, "--pooling", "mean,cls", *extra, "--json")
        assert code == 0, err
        assert [json.loads(out)["configured"]] == _starred(text) == ["mean"]
        code, out, err = run("evaluate", target, "--pooling", "cls", *extra, "--json")
        assert code == 0 and json.loads(out)["configured"] is None, err
