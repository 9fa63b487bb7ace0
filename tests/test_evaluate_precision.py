"""`tokenpool evaluate --precision`: similarities of codes against float64 loops, scores against an independent
recomputation from `Encoder` vectors, and the command's output and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line
from hypothesis import given
from hypothesis import strategies as st

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, quantize
from tokenpool.evaluation.precision import (
    evaluate_precisions,
    parse_precisions,
    similarity_matrix,
    similarity_rows,
)
from tokenpool.evaluation.sts import Pairs, read_pairs, spearman

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sts-sample.tsv"


@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_similarities_equal_float64_loops(dim, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, 5, dim)).astype(np.float32)
    calibration = Calibration.from_vectors(rng.standard_normal((20, dim)))
    for precision in ("int8", "uint8"):
        ca, cb = quantize(a, precision, calibration), quantize(b, precision, calibration)
        shift = 128 if precision == "uint8" else 0
        for i in range(5):
            x = [int(v) - shift for v in ca[i]]
            y = [int(v) - shift for v in cb[i]]
            dot = sum(p * q for p, q in zip(x, y, strict=True))
            norm = (sum(p * p for p in x) * sum(q * q for q in y)) ** 0.5
            expected = dot / norm if norm else 0.0
            assert similarity_rows(ca[i : i + 1], cb[i : i + 1], precision, dim)[0] == pytest.approx(
                expected, abs=1e-12
            )
        dots = similarity_matrix(ca, cb, precision, dim, cosine=False)
        x = [int(p) - shift for p in ca[1]]
        y = [int(q) - shift for q in cb[2]]
        assert dots[1, 2] == sum(p * q for p, q in zip(x, y, strict=True))
        norm = (sum(p * p for p in x) * sum(q * q for q in y)) ** 0.5
        expected = dots[1, 2] / norm if norm else 0.0
        assert similarity_matrix(ca, cb, precision, dim)[1, 2] == pytest.approx(expected, abs=1e-12)
    for precision in ("binary", "ubinary"):
        ca, cb = quantize(a, precision), quantize(b, precision)
        signs_a, signs_b = np.where(a > 0, 1, -1), np.where(b > 0, 1, -1)
        np.testing.assert_array_equal(
            similarity_rows(ca, cb, precision, dim), (signs_a * signs_b).sum(axis=1)
        )
        np.testing.assert_array_equal(similarity_matrix(ca, cb, precision, dim), signs_a @ signs_b.T)


def test_parse_precisions():
    assert parse_precisions("all") == ["float32", "float16", "int8", "uint8", "binary", "ubinary"]
    assert parse_precisions("ubinary,INT8") == ["float32", "int8", "ubinary"]
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        parse_precisions("int8,int4")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def test_scores_equal_a_recomputation_from_encoder_vectors(encoder):
    full = read_pairs(str(SAMPLE))
    pairs = Pairs(full.first[:80], full.second[:80], full.scores[:80])
    scores, table, calibrations = evaluate_precisions(
        encoder, pairs, ["mean", "cls"], ["int8", "ubinary"], calibration_size=100
    )
    texts = list(dict.fromkeys([*pairs.first, *pairs.second]))
    first = np.array([texts.index(t) for t in pairs.first])
    second = np.array([texts.index(t) for t in pairs.second])
    vectors = {label: np.zeros((len(texts), 384), dtype=np.float32) for label in ("mean", "cls")}
    for batch in encoder.iter_token_batches(texts, batch_size=64):  # the same batches: bit-equal vectors
        for label in vectors:
            # the starred row (mean) holds the model's own vectors, normalised (docs/cli.md); cls the bare strategy
            vectors[label][batch.indices] = encoder.pool_batch(batch, None if label == "mean" else label)

    def cosine_spearman(x):
        cosine = np.sum(x[first] * x[second], axis=1) / (
            np.linalg.norm(x[first], axis=1) * np.linalg.norm(x[second], axis=1)
        )
        return 100 * spearman(cosine, pairs.scores)

    for label, floats in vectors.items():
        calibration = calibrations[label]
        np.testing.assert_array_equal(calibration.minimum, floats[:100].min(axis=0))
        np.testing.assert_array_equal(calibration.maximum, floats[:100].max(axis=0))
        rows = {row.precision: row for row in table[label]}
        assert list(rows) == ["float32", "int8", "ubinary"]
        assert rows["float32"].bytes == 1536 and rows["int8"].bytes == 384 and rows["ubinary"].bytes == 48
        assert (
            scores[label]
            == rows["float32"].score
            == pytest.approx(cosine_spearman(floats.astype(np.float64)), abs=1e-9)
        )
        codes = quantize(floats, "int8", calibration).astype(np.float64)
        assert rows["int8"].score == pytest.approx(cosine_spearman(codes), abs=1e-9)
        signs = np.where(floats > 0, 1.0, -1.0)
        assert rows["ubinary"].score == pytest.approx(
            100 * spearman(np.sum(signs[first] * signs[second], axis=1), pairs.scores), abs=1e-9
        )
        assert rows["int8"].kept == pytest.approx(rows["int8"].score / rows["float32"].score)


def test_cli_json_and_table(run, tmp_path):
    sample = tmp_path / "pairs.tsv"  # 60 of the sample's pairs keep the test short
    sample.write_text(
        "".join(SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)[:60]), encoding="utf-8"
    )
    code, out, err = run("evaluate", sample, "--pooling", "mean", "--precision", "int8,binary", "--json")
    assert code == 0, err
    report = json.loads(out)
    mean = report["precision"]["mean"]
    assert list(mean) == ["float32", "int8", "binary"]
    assert mean["float32"]["kept"] == 1.0 and mean["int8"]["bytes_per_vector"] == 384
    assert 0.97 < mean["int8"]["kept"] <= 1.01 and 0.9 < mean["binary"]["kept"] < 1.01
    pairs = read_pairs(str(sample))
    distinct = len(set(pairs.first) | set(pairs.second))  # fewer than 1000: all of them calibrate
    assert report["calibration"]["mean"]["texts"] == distinct

    # a calibration from `embed` scores the model's own pooling (normalised), with those ranges
    assert (
        run("embed", ROOT / "examples" / "corpus.txt", "-o", tmp_path / "c.npy", "--precision", "int8")[0]
        == 0
    )
    code, out, err = run(
        "evaluate", sample, "--precision", "int8", "--calibration", f"{tmp_path / 'c.npy'}.calibration.json"
    )
    assert code == 0, err
    assert "precisions for pooling mean (calibration " in out and "int8" in out and "384" in out
    # another pooling with it was dropped without a word (only the model's own, mean, was scored); its own is fine
    cal = f"{tmp_path / 'c.npy'}.calibration.json"
    code, _, err = run("evaluate", sample, "--pooling", "cls", "--precision", "int8", "--calibration", cal)
    assert_one_error_line(code, err, "--pooling cls cannot be used with --calibration", "own pooling (mean)")
    code, out, err = run("evaluate", sample, "--pooling", "mean", "--precision", "int8", "--calibration", cal)
    assert code == 0 and "precisions for pooling mean (calibration " in out, err


def test_cli_errors(run, tmp_path):
    for extra, needles in [
        (["--precision", "int4"], ["unknown precision 'int4'"]),
        (
            ["--precision", "binary", "--calibration", tmp_path / "x.json"],
            ["--calibration is for --precision int8"],
        ),
        (["--precision", "int8", "--calibration", tmp_path / "x.json"], ["x.json: no such calibration file"]),
        (["--precision", "int8", "--calibration-size", "0"], ["expected a positive integer, got '0'"]),
    ]:
        code, _, err = run("evaluate", SAMPLE, *extra)
        assert_one_error_line(code, err, *needles)
