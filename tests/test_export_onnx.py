"""`tokenpool export-onnx --optimize / --quantize int8`: fused and int8 variants of a tiny random BERT export,
their vectors against the torch runner and a float64 cosine loop, the record they carry, the quality guard,
the node choices of --keep-fp32, never overwriting, and a run with torch and transformers blocked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from test_onnx import BLOCK_TORCH  # noqa: E402

from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.model.onnx_export import (  # noqa: E402
    RECORD_KEY,
    Recipe,
    cosine_figures,
    cosine_summary,
    node_layers,
    read_record,
    record_path,
    select_nodes,
)

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT.parent / "shared" / "data" / "stsb" / "sts-test.csv"
TRICKY = ["", " ", "Hello, World!", "Ünïcödé Café 中文 🤗", "x " * 300, "[CLS] [SEP] [PAD]", "tab\tnew\nline"]


def stsb_sentences(n: int, skip: int = 0) -> list[str]:
    rows = [line.split("\t") for line in STSB.read_text(encoding="utf-8").splitlines()[skip : skip + n // 2]]
    return [row[5] for row in rows] + [row[6] for row in rows]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    file = tmp_path_factory.mktemp("texts") / "calibration.txt"
    file.write_text("\n".join(stsb_sentences(120, skip=600)) + "\n", encoding="utf-8")
    return file


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    file = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    file.write_text("\n".join(STSB.read_text(encoding="utf-8").splitlines()[:80]) + "\n", encoding="utf-8")
    return file


def _loop_cosines(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Row cosines by a float64 Python loop (the reference)."""
    out = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        dot = sum(p * q for p, q in zip(x, y, strict=True))
        nx, ny = sum(p * p for p in x) ** 0.5, sum(q * q for q in y) ** 0.5
        out.append(1.0 if nx == ny == 0 else 0.0 if nx == 0 or ny == 0 else dot / (nx * ny))
    return out


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile written out (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ops(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _encode(folder: Path, onnx_file: Path | None, texts: list[str]) -> np.ndarray:
    from tokenpool import Encoder

    encoder = Encoder(folder, device="cpu") if onnx_file is None else Encoder(folder, runtime="onnx", onnx_file=onnx_file)
    return encoder.encode(texts, batch_size=32)  # the batches the export measured with (dynamic int8 ranges are per batch)


# ------------------------------------------------------------------------------------------ optimize


def test_optimize_fuses_the_graph_and_keeps_the_vectors(run, tiny, tiny_onnx, tmp_path):
    target = tmp_path / "opt.onnx"
    code, out, err = run("export-onnx", tiny, "--onnx-file", tiny_onnx, "--optimize", "--output", target)
    assert code == 0, err
    assert out.splitlines()[0] == str(target)
    ops = _ops(target)
    assert ops["Attention"] == 2 and ops["SkipLayerNormalization"] == 4 and ops["Softmax"] == 0
    texts = stsb_sentences(60) + TRICKY
    assert min(_loop_cosines(_encode(tiny, None, texts), _encode(tiny, target, texts))) >= 0.99999
    record = read_record(target)
    assert record["recipe"]["optimize"] is True and record["recipe"]["quantize"] is None
    assert record["steps"][0]["fused"]["Attention"] == 2 and record["steps"][0]["num_heads"] == 4
    assert record["source"]["file"] == str(tiny_onnx)
    assert record["quality"]["optimize"]["cosine"]["min"] >= 0.99999
    beside = json.loads(record_path(target).read_text())
    assert {k: v for k, v in beside.items() if k != "file"} == record
    assert beside["file"]["bytes"] == target.stat().st_size


def _stsb_spearman(folder: Path, onnx_file: Path, pairs: Path) -> float:
    """STS Spearman ×100 of one file on ``pairs``: scipy's Spearman of float64 loop cosines (the reference)."""
    from scipy.stats import spearmanr

    rows = [line.split("\t") for line in pairs.read_text(encoding="utf-8").splitlines()]
    distinct = list(dict.fromkeys([r[5] for r in rows] + [r[6] for r in rows]))  # one pass, as evaluate does
    vectors = dict(zip(distinct, _encode(folder, onnx_file, distinct), strict=True))
    a, b = np.stack([vectors[r[5]] for r in rows]), np.stack([vectors[r[6]] for r in rows])
    return 100 * spearmanr(_loop_cosines(a, b), [float(r[4]) for r in rows]).statistic


def test_optimize_alone_scores_the_stsb_pairs_it_is_given(run, tiny, tiny_onnx, pairs, tmp_path):
    # --stsb with --optimize alone was read, then silently left out of the record and the printout
    target = tmp_path / "opt.onnx"
    code, out, err = run(
        "export-onnx", tiny, "--onnx-file", tiny_onnx, "--optimize", "--stsb", pairs, "--output", target
    )
    assert code == 0, err
    quality = read_record(target)["quality"]["optimize"]
    scores = quality["scores"]["stsb_spearman"]
    assert scores["fp32"] == pytest.approx(_stsb_spearman(tiny, tiny_onnx, pairs), abs=1e-6)
    assert scores["variant"] == pytest.approx(_stsb_spearman(tiny, target, pairs), abs=1e-6)
    assert quality["stsb"] == str(pairs) and "texts" not in quality
    assert "optimize: stsb_spearman fp32" in out


# ------------------------------------------------------------------------------------------ quantize


def test_dynamic_int8_record_matches_an_independent_measure(run, tiny, tiny_onnx, calibration, pairs, tmp_path):
    from scipy.stats import spearmanr

    target = tmp_path / "q.onnx"
    code, out, err = run(
        "export-onnx", tiny, "--onnx-file", tiny_onnx, "--quantize", "int8", "--calibration-texts", calibration,
        "--stsb", pairs, "--output", target, "--min-cosine", "0.5",
    )  # fmt: skip
    assert code == 0, err
    ops = _ops(target)
    assert ops["MatMul"] == 4  # the attention products of activations stay fp32 in dynamic mode
    graph = onnx.load(str(target)).graph
    dims = {i.name: list(i.dims) for i in graph.initializer}
    weights = [n.input[1] for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert len(weights) == 12  # q, k, v, attention output, two FFN products per layer
    for name in weights:  # one scale per output channel (column) of each int8 weight matrix
        assert dims[name.removesuffix("_quantized") + "_scale"] == [dims[name][1]]
    record = read_record(target)
    texts = calibration.read_text(encoding="utf-8").splitlines()
    fp32, int8 = _encode(tiny, tiny_onnx, texts), _encode(tiny, target, texts)
    cos = _loop_cosines(fp32, int8)
    measured = record["quality"]["quantize"]["cosine"]
    assert measured["texts"] == len(texts) == 120
    assert measured["min"] == pytest.approx(min(cos), abs=1e-9)
    assert measured["p1"] == pytest.approx(_percentile(cos, 1), abs=1e-9)
    assert measured["median"] == pytest.approx(_percentile(cos, 50), abs=1e-9)
    assert f"1st percentile {measured['p1']:.6f}" in out
    rows = [line.split("\t") for line in pairs.read_text(encoding="utf-8").splitlines()]
    gold = [float(r[4]) for r in rows]
    for name, onnx_file in (("fp32", tiny_onnx), ("variant", target)):
        distinct = list(dict.fromkeys([r[5] for r in rows] + [r[6] for r in rows]))  # one pass, as evaluate does
        vectors = dict(zip(distinct, _encode(tiny, onnx_file, distinct), strict=True))
        a, b = np.stack([vectors[r[5]] for r in rows]), np.stack([vectors[r[6]] for r in rows])
        expected = 100 * spearmanr(_loop_cosines(a, b), gold).statistic
        assert record["quality"]["quantize"]["scores"]["stsb_spearman"][name] == pytest.approx(expected, abs=1e-6)


def test_guard_refuses_a_model_below_the_threshold_unless_forced(run, tiny, tiny_onnx, calibration, tmp_path):
    target = tmp_path / "q.onnx"
    args = ["export-onnx", tiny, "--onnx-file", tiny_onnx, "--quantize", "int8", "--calibration-texts", calibration,
            "--output", target, "--min-cosine", "1"]  # fmt: skip
    code, out, err = run(*args)
    assert code == 2 and "1st-percentile cosine against its fp32 source is" in err and "below 1" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "1st percentile" in out  # the figures are still shown
    assert not target.exists() and not record_path(target).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tokenpool-export-")]  # no leftovers
    code, out, err = run(*args, "--force")
    assert code == 0, err
    assert read_record(target)["forced"] is True


def test_an_existing_file_or_record_is_never_replaced(run, tiny, tiny_onnx, calibration, tmp_path):
    target = tmp_path / "q.onnx"
    target.write_bytes(b"mine")
    args = ["export-onnx", tiny, "--onnx-file", tiny_onnx, "--quantize", "int8", "--calibration-texts", calibration,
            "--output", target]  # fmt: skip
    code, _, err = run(*args)
    assert code == 2 and "already exists" in err and target.read_bytes() == b"mine"
    target.unlink()
    record_path(target).write_text("{}")
    code, _, err = run(*args)
    assert code == 2 and "q.onnx.json already exists" in err and not target.exists()


def test_static_int8_with_the_softmax_path_kept(run, tiny, tiny_onnx, calibration, tmp_path):
    target = tmp_path / "s.onnx"
    code, out, err = run(
        "export-onnx", tiny, "--onnx-file", tiny_onnx, "--quantize", "int8", "--activations", "static",
        "--calibration-texts", calibration, "--keep-fp32", "softmax", "--output", target, "--force",
    )  # fmt: skip
    assert code == 0, err
    ops = _ops(target)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["DynamicQuantizeLinear"] == 0
    step = json.loads(record_path(target).read_text())["steps"][-1]  # the JSON lists the nodes kept fp32
    assert "calibrated" in step["activations"] and step["keep_fp32"] == {"softmax": 6}  # 2 layers x 3 nodes
    graph = onnx.load(str(target)).graph
    producers = {out: n for n in graph.node for out in n.output}
    for node in (n for n in graph.node if n.name in step["nodes_kept_fp32"] and n.op_type == "MatMul"):
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    vectors = _encode(tiny, target, TRICKY)
    assert vectors.shape == (len(TRICKY), 32) and np.isfinite(vectors).all()


def test_default_target_is_in_the_cache_and_found_by_name(run, tiny, tiny_onnx, calibration, tmp_path, monkeypatch):
    from tokenpool import Encoder
    from tokenpool.model.onnx import cached_export_path

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    code, out, err = run("export-onnx", tiny, "--onnx-file", tiny_onnx, "--optimize", "--quantize", "int8",
                         "--calibration-texts", calibration, "--min-cosine", "0.5")  # fmt: skip
    assert code == 0, err
    expected = cached_export_path(tiny).with_name("model_opt_qint8.onnx")
    assert out.splitlines()[0] == str(expected) and expected.is_file()
    encoder = Encoder(tiny, runtime="onnx", onnx_file="model_opt_qint8.onnx")
    assert encoder.runner.path == expected
    assert encoder.runner.record["recipe"] == {"optimize": True, "quantize": "int8", "activations": "dynamic",
                                               "keep_fp32": []}  # fmt: skip
    assert _ops(expected)["QAttention"] == 2


# ------------------------------------------------------------------------------------------ keep-fp32


def test_keep_fp32_specs_choose_the_right_nodes(tiny, tiny_onnx, tmp_path):
    from tokenpool.model.onnx import read_model_config
    from tokenpool.model.onnx_export import optimize_onnx

    graph = onnx.load(str(tiny_onnx)).graph
    chosen = select_nodes(graph, ["last:1", "first:1", "embeddings", "softmax", "op:Softmax", "*layer.0/*Mat*"])
    for spec, layer in (("last:1", "layer.1/"), ("first:1", "layer.0/")):
        named = {n.name for n in graph.node if layer in n.name}
        assert named <= set(chosen[spec])  # every node of the layer ...
        # ... and unnamed helpers (Identity, Constant) only when the layer's nodes read them
        assert all(layer in name or "layer." not in name for name in chosen[spec])
    assert all("embeddings" in name for name in chosen["embeddings"])
    by_name = {n.name: n for n in graph.node}
    assert Counter(by_name[n].op_type for n in chosen["softmax"]) == {"Softmax": 2, "MatMul": 4}
    assert len(chosen["op:Softmax"]) == 2
    assert chosen["*layer.0/*Mat*"] and all("layer.0/" in n and "Mat" in n for n in chosen["*layer.0/*Mat*"])
    fused = tmp_path / "fused.onnx"
    optimize_onnx(tiny_onnx, fused, read_model_config(tiny))
    fused_graph = onnx.load(str(fused)).graph
    layers = node_layers(fused_graph)
    attention = sorted(n.name for n in fused_graph.node if n.op_type == "Attention")
    assert [layers[name] for name in attention] == [0, 1]  # fused nodes get their layer from their readers
    assert select_nodes(fused_graph, ["softmax"])["softmax"] == attention
    assert select_nodes(fused_graph, ["embeddings"])["embeddings"] == ["EmbedLayerNormalization_0"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("op:NoSuchOp", "matches no node"), ("*nothing*", "matches no node"), ("last:0", "positive layer count"),
     ("first:x", "positive layer count"), ("op:", "needs an operator type"), ("", "non-empty")],
)  # fmt: skip
def test_bad_keep_fp32_specs_are_clear_errors(tiny_onnx, spec, message):
    with pytest.raises(OptionError, match=message):
        select_nodes(onnx.load(str(tiny_onnx)).graph, [spec])


def test_keep_fp32_last_layer_stays_float(tiny, tiny_onnx, calibration, tmp_path):
    from tokenpool.model.onnx_export import make_variant

    target = tmp_path / "q.onnx"
    texts = calibration.read_text(encoding="utf-8").splitlines()
    make_variant(tiny, tiny_onnx, target, Recipe(quantize="int8", keep_fp32=("last:1",)), texts=texts, force=True)
    graph = onnx.load(str(target)).graph
    plain = [n.name for n in graph.node if n.op_type == "MatMul" and "layer.1/" in n.name]
    assert len(plain) == 8  # q, k, v, attention output, two FFN products, and the two attention products
    assert not [n for n in graph.node if "layer.1/" in n.name and n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert [n for n in graph.node if "layer.0/" in n.name and n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]


def test_a_score_of_zero_for_fp32_is_recorded_without_a_ratio(tiny, tiny_onnx, calibration, tmp_path):
    # a --beir folder on which the fp32 file scores nDCG@10 0 made the finished export die dividing by zero
    from tokenpool.model.onnx_export import format_record, make_variant

    target = tmp_path / "q.onnx"
    texts = calibration.read_text(encoding="utf-8").splitlines()
    record = make_variant(
        tiny, tiny_onnx, target, Recipe(quantize="int8"), texts=texts, force=True,
        scorers={"ndcg@10": lambda encoder: 0.0},
    )  # fmt: skip
    assert record["quality"]["quantize"]["scores"]["ndcg@10"] == {"fp32": 0.0, "variant": 0.0, "ratio": None}
    assert target.is_file()
    assert "ndcg@10 fp32 0.00, variant 0.00 (no ratio: fp32 scored 0)" in format_record(record)


# ------------------------------------------------------------------------------------------ errors


def test_variant_option_errors_are_one_line(run, tiny, tiny_onnx, calibration, tmp_path):
    cases = [
        (["--quantize", "int8"], "quantizing needs calibration texts"),
        (["--keep-fp32", "softmax", "--optimize"], "--keep-fp32 and --activations static apply to --quantize int8 only"),
        (["--calibration-texts", calibration], "apply to a variant (--optimize or --quantize int8) only"),
        (["--optimize", "--min-cosine", "2"], "argument --min-cosine: expected a number within [0, 1]"),
        (["--quantize", "int8", "--calibration-texts", tmp_path / "missing.txt"], "missing.txt"),
        (["--optimize", "--stsb", tmp_path / "missing.tsv"], "missing.tsv"),
    ]
    for extra, message in cases:
        code, _, err = run("export-onnx", tiny, "--onnx-file", tiny_onnx, "--output", tmp_path / "x.onnx", *extra)
        assert code == 2 and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_optimize_refuses_an_architecture_it_does_not_know(tmp_path):
    from test_encoder import _qwen2_weights, _save_sentence_transformer

    from tokenpool.model.onnx import export_onnx
    from tokenpool.model.onnx_export import make_variant

    folder = tmp_path / "qwen2"
    _qwen2_weights(folder, padding_side="left")
    _save_sentence_transformer(folder, "lasttoken", normalize=True)
    source = export_onnx(folder, tmp_path / "q.onnx")
    with pytest.raises(OptionError, match="optimize knows the graphs of bert.*this one is 'qwen2'"):
        make_variant(folder, source, tmp_path / "o.onnx", Recipe(optimize=True))
    assert not (tmp_path / "o.onnx").exists()


def test_recipe_checks_and_names():
    assert Recipe(optimize=True).file_name() == "model_opt.onnx"
    assert Recipe(quantize="int8").file_name() == "model_qint8.onnx"
    assert Recipe(quantize="int8", activations="static").file_name() == "model_qint8_static.onnx"  # (not after optimize: test_onnx57)
    kept = Recipe(quantize="int8", keep_fp32=("embeddings",)).file_name()
    assert re.fullmatch(r"model_qint8_keep[0-9a-f]{8}\.onnx", kept)
    assert kept != Recipe(quantize="int8", keep_fp32=("last:1",)).file_name()
    with pytest.raises(OptionError, match="nothing to make"):
        Recipe()
    with pytest.raises(OptionError, match="quantize must be 'int8'"):
        Recipe(quantize="int4")
    with pytest.raises(OptionError, match="activations must be one of"):
        Recipe(quantize="int8", activations="weird")


@given(
    rows=st.integers(1, 12),
    dim=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    zeros=st.sets(st.integers(0, 11), max_size=3),
)
def test_cosine_summary_matches_a_float64_loop(rows, dim, seed, zeros):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, dim)).astype(np.float32)
    b = (a + rng.standard_normal((rows, dim)) * rng.uniform(0, 2)).astype(np.float32)
    for z in zeros:
        if z < rows:
            a[z] = 0
            if z % 2:
                b[z] = 0
    summary = cosine_summary(a, b)
    cos = _loop_cosines(a.astype(np.float64), b.astype(np.float64))
    assert summary["texts"] == rows
    assert summary["min"] == pytest.approx(min(cos), abs=1e-12)
    assert summary["p1"] == pytest.approx(_percentile(cos, 1), abs=1e-12)
    assert summary["median"] == pytest.approx(_percentile(cos, 50), abs=1e-12)


def test_zero_rows_count_as_the_same_output_against_a_zero_row_and_as_0_against_any_other():
    summary = cosine_summary(np.array([[0, 0], [0, 0], [3, 4]]), np.array([[0, 0], [1, 0], [6, 8]]))
    assert summary == pytest.approx({"texts": 3, "min": 0.0, "p1": 0.02, "median": 1.0}, abs=1e-12)  # 0, 1, 1
    # whatever the row cosine holds at zero rows (0/0 = NaN, say), the rule decides: never NaN
    zero_a, zero_b = np.array([True, True, False]), np.array([True, False, False])
    figures = cosine_figures(np.array([np.nan, np.nan, 0.5]), zero_a, zero_b)
    assert figures == pytest.approx({"texts": 3, "min": 0.0, "p1": 0.01, "median": 0.5}, abs=1e-12)
    with pytest.raises(ValueError, match=r"got shape \(0,\)"):
        cosine_figures(np.array([]), np.array([], dtype=bool), np.array([], dtype=bool))


# ------------------------------------------------------------------------------------------ no torch

_BLOCKED = BLOCK_TORCH + textwrap.dedent(
    """
    import numpy as np
    from tokenpool import Encoder, cli

    args = json.loads(sys.argv[1])
    code = cli.main(["export-onnx", args["folder"], "--onnx-file", args["onnx"], "--optimize", "--quantize",
                     "int8", "--calibration-texts", args["texts"], "--output", args["target"], "--min-cosine", "0.5"])
    assert code == 0, code
    encoder = Encoder(args["folder"], runtime="onnx", onnx_file=args["target"])
    np.save(args["out"], encoder.encode(args["probe"]))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    assert not loaded, loaded
    """
)


def test_optimize_and_quantize_run_without_torch_or_transformers(tiny, tiny_onnx, calibration, tmp_path):
    target, out = tmp_path / "q.onnx", tmp_path / "v.npy"
    payload = {"folder": str(tiny), "onnx": str(tiny_onnx), "texts": str(calibration), "target": str(target),
               "out": str(out), "probe": TRICKY}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENPOOL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", _BLOCKED, json.dumps(payload)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_record(target)["steps"][0]["step"] == "optimize"
    reference = _encode(tiny, target, TRICKY)
    np.testing.assert_allclose(np.load(out), reference, atol=1e-6)
    assert RECORD_KEY in {p.key for p in onnx.load(str(target)).metadata_props}
