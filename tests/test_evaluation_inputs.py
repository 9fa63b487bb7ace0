"""Corners of the evaluation's inputs and outputs, each checked against a reference written here (plain Python
computations of the documented behaviour), not against the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.evaluation.beir import read_beir


def _folder(root: Path, qrels_text: str) -> Path:
    """A BEIR folder of documents d1, d2 and query q1, with ``qrels_text`` as its qrels.tsv."""
    root.mkdir(parents=True, exist_ok=True)
    corpus = [{"_id": "d1", "text": "apple"}, {"_id": "d2", "text": "banana"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "apple"}\n', encoding="utf-8")
    (root / "qrels.tsv").write_text(qrels_text, encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------- qrels


@pytest.mark.parametrize("score", ["1.0", "x", "yes"])
def test_a_first_judgement_with_a_bad_score_is_refused_not_skipped_as_a_header(tmp_path, score):
    # no header; the first line judges a known (query, document) pair: it is data, so its score is an error
    # (it was read as the header and dropped, and q1 was scored against d2 alone)
    folder = _folder(tmp_path / "f", f"q1\td1\t{score}\nq1\td2\t1\n")
    with pytest.raises(CorpusError, match=f"qrels.tsv, line 1: score '{score}' is not an integer"):
        read_beir(folder)
    alone = _folder(tmp_path / "g", f"q1\td1\t{score}\n")  # was "no judgements"
    with pytest.raises(CorpusError, match=f"line 1: score '{score}' is not an integer"):
        read_beir(alone)


@pytest.mark.parametrize("header", ["query-id\tcorpus-id\tscore", "qid\tdocid\trel", "q\td\tscore"])
def test_a_header_line_is_still_skipped(tmp_path, header):
    data = read_beir(_folder(tmp_path / "f", f"{header}\nq1\td1\t1\nq1\td2\t0\n"))
    assert data.qrels == {"q1": {"d1": 1, "d2": 0}}


@pytest.mark.parametrize("score", ["1_0", "0_1", "٣"])
def test_a_score_is_ascii_digits_not_whatever_python_int_reads(tmp_path, score):
    # int() reads "1_0" as 10 and "٣" (Arabic-Indic three) as 3: trec_eval's atol reads neither as that grade
    folder = _folder(tmp_path / "f", f"query-id\tcorpus-id\tscore\nq1\td1\t{score}\n")
    with pytest.raises(CorpusError, match=f"line 2: score '{score}' is not an integer"):
        read_beir(folder)


@pytest.mark.parametrize("score, grade", [("2", 2), ("+2", 2), ("-1", -1), ("007", 7)])
def test_plain_integer_scores_are_read(tmp_path, score, grade):
    folder = _folder(tmp_path / "f", f"q1\td2\t1\nq1\td1\t{score}\n")
    assert read_beir(folder).qrels["q1"] == {"d2": 1, "d1": grade}


def test_invalid_utf8_in_a_qrels_file_with_a_bom_names_its_line(tmp_path):
    # utf-8-sig's error offset starts past the byte-order mark: a bad byte at most 3 bytes into a line was
    # named on the line before
    folder = _folder(tmp_path / "f", "")
    (folder / "qrels.tsv").write_bytes(b"\xef\xbb\xbfq1\td1\t1\nq1\xff\td2\t1\n")
    with pytest.raises(CorpusError, match="qrels.tsv, line 2: invalid UTF-8"):
        read_beir(folder)


# ---------------------------------------------------------------------------------------------- STS


def test_constant_similarities_are_an_error_not_a_nan_table(tmp_path, run, encoders):
    """max_length=2 keeps [CLS] [SEP] of every text: one vector for all, one cosine for every pair, so
    Spearman is undefined; it printed "nan" (and NaN, which is not JSON, with --json) and exited 0."""
    path = tmp_path / "pairs.csv"
    path.write_text("score,s1,s2\n1,a cat,a dog\n2,rain falls,it rains\n3,red,blue\n", encoding="utf-8")
    for flag in ("--json", None):
        code, out, err = run("evaluate", path, "--max-length", "2", "--pooling", "mean,cls", *[flag] * bool(flag))
        assert_one_error_line(code, err, "'mean'", "same similarity", "Spearman")
        assert "nan" not in out.lower()
    # the premise, checked independently: every text gets the same vector
    encoder = next(e for options, e in encoders.items() if options.max_length == 2)
    vectors = encoder.encode(["a cat", "a dog", "rain falls", "it rains", "red", "blue"])
    assert (vectors == vectors[0]).all()


# ---------------------------------------------------------------------------------------------- precisions


def _strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_no_kept_ratio_when_float32_retrieval_scores_zero(tmp_path, run):
    """nDCG@10 kept = codes / float32 is undefined when float32 scores 0: it was NaN ("nan%" in the table, NaN
    — not JSON — with --json), the float32 row's own ratio included."""
    corpus = [{"_id": f"c{i}", "text": f"cats and kittens purr, cat number {i}"} for i in range(11)]
    corpus.append({"_id": "fin", "text": "Stock markets fell sharply on Monday."})
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "cats"}\n', encoding="utf-8")
    (folder / "qrels.tsv").write_text("q1\tfin\t1\n", encoding="utf-8")
    code, out, err = run("evaluate", folder, "--precision", "int8", "--json")
    assert code == 0, err
    rows = _strict_json(out)["precision"]
    assert rows["float32"]["nDCG@10"] == 0.0  # the premise: the one relevant document ranks below 10
    assert all(row["kept"] is None for row in rows.values())
    code, out, err = run("evaluate", folder, "--precision", "int8")
    assert code == 0, err
    assert "nan" not in out.lower()
    assert out.splitlines()[-1].split()[-1] == "n/a"


def test_no_kept_ratio_when_float32_spearman_is_zero(tmp_path, run, encoders):
    """A float32 Spearman of exactly 0 made the STS precision table divide by zero (exit 1, "float division by
    zero"). Gold scores are set so that their ranks are orthogonal to the model's cosine ranks."""
    from tokenpool import Encoder

    sentences = [("a cat sleeps", "a kitten naps"), ("the sun is hot", "snow is cold"),
                 ("I like tea", "I enjoy tea"), ("buy stocks", "a red bicycle")]  # fmt: skip
    encoder = Encoder()
    cosines = [float(encoder.encode([a])[0] @ encoder.encode([b])[0]) for a, b in sentences]
    by_cosine = sorted(range(4), key=cosines.__getitem__)  # ranks 1..4 of the model's similarities
    gold = {pair: [2, 4, 1, 3][rank] for rank, pair in enumerate(by_cosine)}  # Σ centred rank products = 0
    path = tmp_path / "pairs.csv"
    path.write_text("score,s1,s2\n" + "".join(f"{gold[i]},{a},{b}\n" for i, (a, b) in enumerate(sentences)))
    code, out, err = run("evaluate", path, "--pooling", "mean", "--precision", "binary", "--json")
    assert code == 0, err
    report = _strict_json(out)
    assert report["spearman_x100"]["mean"] == 0.0
    assert report["precision"]["mean"]["float32"]["kept"] is None


# ---------------------------------------------------------------------------------------------- fusion


@pytest.mark.parametrize("first", [0, 1])
@pytest.mark.parametrize("ranks", [((36, 60), (20, 100)), ((59, 66), (42, 93)), ((24, 80), (45, 45))])
def test_rrf_ties_follow_the_tie_rank_not_float_rounding(ranks, first):
    """1/(60+36) + 1/(60+60) = 1/(60+20) + 1/(60+100) = 3/160 exactly, but float64 sums differ in the last bit:
    the rounding ordered the two documents (always document 1 first here), against the tie rule and against
    their equal float32 scores (pytrec_eval, reading the exported run, ranked them the other way). Reference:
    exact fractions, ties by tie rank."""
    from fractions import Fraction

    import numpy as np

    from tokenpool.evaluation.fusion import reciprocal_rank_fusion
    from tokenpool.evaluation.search import Ranking

    depth, k = 100, 60
    lists = []
    for run in range(2):  # documents 0 and 1 at the given ranks, documents 2, 3, ... filling the rest
        row, filler = np.full(depth, -1), iter(range(2, 3 * depth))
        row[ranks[0][run] - 1], row[ranks[1][run] - 1] = 0, 1
        lists.append([d if d >= 0 else next(filler) for d in row.tolist()])
    tie_rank = np.arange(3 * depth, dtype=np.int64)
    tie_rank[[0, 1]] = [1, 0] if first == 0 else [0, 1]  # the higher tie rank comes first
    rankings = [Ranking(np.asarray([run]), np.zeros((1, depth), np.float32)) for run in lists]
    got = reciprocal_rank_fusion(rankings, tie_rank, k=k, depth=depth)
    fused: dict[int, Fraction] = {}
    for run in lists:
        for rank, doc in enumerate(run, start=1):
            fused[doc] = fused.get(doc, Fraction(0)) + Fraction(1, k + rank)
    assert fused[0] == fused[1]
    want = sorted(fused, key=lambda d: (-fused[d], -tie_rank[d]))[:depth]
    assert got.indices[0].tolist() == want


@pytest.mark.parametrize("value", ["inf", "-1", "nan"])
def test_a_refused_rrf_constant_is_not_told_it_lies_in_the_allowed_range(run, tmp_path, value):
    # "rrf_k must be a number in [0, inf], got inf": the range named the value it refused
    code, _, err = run("evaluate", _folder(tmp_path / "f", "q1\td1\t1\n"), "--modes", "hybrid:truncate",
                       "--rrf-k", value, "--model", tmp_path / "no-model")  # fmt: skip
    assert_one_error_line(code, err, "--rrf-k must be a finite number >= 0", f"got {value}")


@pytest.mark.parametrize("score", ["4_5", "٣"])
def test_a_gold_score_is_a_decimal_number_not_whatever_python_float_reads(tmp_path, score):
    # float() reads "4_5" as 45.0 and "٣" (Arabic-Indic three) as 3.0
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.csv"
    path.write_text(f"score,s1,s2\n1,a,b\n{score},c,d\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"line 3: score '{score}' is not a number"):
        read_pairs(str(path))


def test_decimal_gold_scores_are_read(tmp_path):
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.csv"
    path.write_text("score,s1,s2\n1,a,b\n 2.5 ,c,d\n-.5,e,f\n+4.,g,h\n1e-1,i,j\n", encoding="utf-8")
    assert read_pairs(str(path)).scores.tolist() == [1.0, 2.5, -0.5, 4.0, 0.1]


@pytest.mark.parametrize(
    ("target", "options", "needles"),
    [
        ("pairs", ["--rrf-k", "3"], ("--rrf-k", "pairs file")),
        ("pairs", ["--modes", "bm25"], ("--modes", "pairs file")),
        ("pairs", ["--bm25", "k1=1"], ("--bm25", "pairs file")),
        ("folder", ["--hybrid-weight", "0.3"], ("--hybrid-weight", "hybrid:MODE")),
        ("folder", ["--modes", "bm25", "--rrf-k", "3"], ("--rrf-k", "hybrid:MODE")),
        ("folder", ["--bm25", "k1=1"], ("--bm25", "without bm25")),
        ("folder", ["--modes", "bm25", "--pooling", "cls"], ("--pooling", "only bm25")),
        ("folder", ["--precision", "int8", "--rrf-k", "3"], ("--rrf-k", "hybrid:MODE")),
    ],
)
def test_retrieval_options_that_would_be_ignored_are_refused(run, tmp_path, target, options, needles):
    """--rrf-k / --hybrid-weight without a hybrid: mode, --bm25 without BM25, --pooling when only BM25 runs and
    every retrieval option with a pairs file were silently ignored (the run went on, exit 0)."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1.0\ta\tb\n2.0\tc\td\n3.0\te\tf\n", encoding="utf-8")
    where = pairs if target == "pairs" else _folder(tmp_path / "f", "q1\td1\t1\n")
    code, _, err = run("evaluate", where, *options, "--model", tmp_path / "no-model")
    assert_one_error_line(code, err, *needles)


def test_fusion_options_are_taken_with_a_hybrid_mode(run, tmp_path):
    code, out, err = run("evaluate", _folder(tmp_path / "f", "q1\td1\t1\n"), "--modes", "hybrid:truncate",
                         "--pooling", "mean", "--rrf-k", "10", "--hybrid-weight", "0.25", "--json")  # fmt: skip
    assert code == 0, err
    names = {row["pooling"] for row in json.loads(out)["rows"]}
    assert any("rrf k=10" in name for name in names) and any("weight 0.25" in name for name in names), names


@pytest.mark.parametrize(("name", "needle"), [("missing/plot.png", "does not exist"), ("plot.xyz", "matplotlib writes")])
def test_an_unwritable_plot_is_refused_before_the_model_loads(run, tmp_path, name, needle):
    """--plot into a missing folder (or with a suffix matplotlib cannot write) failed only after the whole
    evaluation had run and printed its table; it is refused with the other options now (the model named here
    does not exist, so any later check would name it instead)."""
    pytest.importorskip("matplotlib")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("score\ts1\ts2\n1.0\ta\tb\n2.0\tc\td\n3.0\te\tf\n", encoding="utf-8")
    for where in (pairs, _folder(tmp_path / "f", "q1\td1\t1\n")):
        code, out, err = run("evaluate", where, "--plot", tmp_path / name, "--model", tmp_path / "no-model")
        assert_one_error_line(code, err, "--plot", needle)
        assert out == ""
