"""Stop 56 (modelb): `Encoder.calibrate` takes the call's ``normalize`` / ``truncate_dim`` and a calibration is
labelled with what its vectors are; messages name a parameter as its caller wrote it (`tokenpool.model.options
.spell`: a Python keyword, or the flag inside a command); `EncoderOptions.check` reads the device for every
runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line
from tinymodels import bert_folder

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, CalibrationMismatch, quantize
from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions, spelled_as

TEXTS = [f"calibration text number {k} about cats and {k * 3} dogs" for k in range(10)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformers folder (mean pooling, normalised, 32 dimensions)."""
    return bert_folder(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def dense(folder) -> Encoder:
    return Encoder(folder, device="cpu")


@pytest.fixture(scope="module")
def sparse_folder(tmp_path_factory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("splade") / "bert", mlm=True)


# ------------------------------------------------------------------------------------------ calibration


@pytest.mark.parametrize(("options", "width"), [({"normalize": False}, 32), ({"truncate_dim": 8}, 8),
                                                ({"truncate_dim": 8, "normalize": False}, 8)])  # fmt: skip
def test_calibrate_takes_the_calls_normalize_and_truncate_dim(dense, options, width):
    """`encoder.calibrate(texts)` took no normalize / truncate_dim, so no calibration fitted an int8 encode given
    them; its ranges are now those of the call's own vectors (a plain min/max reference) and the encode runs."""
    vectors = dense.encode(TEXTS, **options)
    calibration = dense.calibrate(TEXTS, **options)
    np.testing.assert_array_equal(calibration.minimum, vectors.astype(np.float64).min(axis=0))
    np.testing.assert_array_equal(calibration.maximum, vectors.astype(np.float64).max(axis=0))
    assert calibration.dimension == width and calibration.normalize is options.get("normalize", True)
    codes = dense.encode(TEXTS, precision="int8", calibration=calibration, **options)
    np.testing.assert_array_equal(codes, quantize(vectors, "int8", calibration))


def test_for_encoder_labels_what_the_vectors_are(dense):
    """`Calibration.for_encoder(enc, enc.encode(texts, normalize=False))` was labelled normalize=True (the
    encoder's), so the int8 encode it was made for refused it; it is labelled False, as given explicitly."""
    raw = dense.encode(TEXTS, normalize=False)
    assert Calibration.for_encoder(dense, raw).normalize is False
    assert Calibration.for_encoder(dense, raw, normalize=False).normalize is False
    assert Calibration.for_encoder(dense, dense.encode(TEXTS)).normalize is True
    calibration = Calibration.for_encoder(dense, raw)
    np.testing.assert_array_equal(dense.encode(TEXTS, precision="int8", normalize=False, calibration=calibration),
                                  quantize(raw, "int8", calibration))  # fmt: skip


def test_a_mismatched_calibration_says_how_to_make_a_matching_one(dense):
    whole = dense.calibrate(TEXTS)
    with pytest.raises(
        CalibrationMismatch, match=r"normalize=True.*encoder\.calibrate\(texts, normalize=False\)"
    ):
        dense.encode(TEXTS, precision="int8", normalize=False, calibration=whole)
    with pytest.raises(
        CalibrationMismatch, match=r"dimension 32.*encoder\.calibrate\(texts, truncate_dim=8\)"
    ):
        dense.encode(TEXTS, precision="int8", truncate_dim=8, calibration=whole)


def test_cli_no_normalize_calibrates_on_unnormalised_vectors(run, folder, dense, tmp_path):
    """``embed --precision int8 --no-normalize``: the sidecar's ranges and label are the unnormalised vectors';
    a normalised calibration file with --no-normalize is one error line saying how to get a matching one."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "raw.npy"
    code, _, err = run("embed", corpus, "-o", out, "--model", folder, "--device", "cpu", "--precision", "int8",
                       "--no-normalize")  # fmt: skip
    assert code == 0, err
    calibration = Calibration.load(f"{out}.calibration.json")
    raw = dense.encode(TEXTS, normalize=False)
    assert calibration.normalize is False
    np.testing.assert_array_equal(calibration.maximum, raw.astype(np.float64).max(axis=0))
    whole = tmp_path / "whole.json"
    dense.calibrate(TEXTS).save(whole)
    code, _, err = run("embed", corpus, "-o", tmp_path / "again.npy", "--model", folder, "--device", "cpu",
                       "--precision", "int8", "--no-normalize", "--calibration", whole)  # fmt: skip
    assert_one_error_line(code, err, "normalize=True", "leave out --calibration")


# ------------------------------------------------------------------------------------------ spelling


def test_cli_messages_name_the_flags(run, folder, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a text\n", encoding="utf-8")
    base = ("embed", corpus, "-o", tmp_path / "out.npy", "--model", folder, "--device", "cpu")
    code, _, err = run(*base, "--max-length", "99999999999999999999")
    assert code == 2 and "--max-length 99999999999999999999 exceeds the model's limit" in err, err
    code, _, err = run(*base, "--long-documents", "windows", "--max-length", "16", "--window-stride", "14")
    assert code == 2 and "--window-stride 14 must be smaller than the window" in err, err
    code, _, err = run(*base, "--max-length", "1")
    assert code == 2 and "--max-length 1 cannot hold the 2 special tokens" in err, err


def test_onnx_file_messages(tmp_path):
    """``onnx_file`` naming a folder was "not found"; both messages spelled it ``onnx_file`` on the command line."""
    from tokenpool.model.onnx import find_onnx_file

    folder = bert_folder(tmp_path / "bert")  # (its own: a folder is made in it)
    (folder / "onnx" / "sub").mkdir(parents=True)
    with pytest.raises(OSError, match=r"onnx_file 'onnx/sub' is a folder"):
        find_onnx_file(folder, "onnx/sub")
    with (
        spelled_as({"onnx_file": "--onnx-file"}),
        pytest.raises(OSError, match=r"^--onnx-file 'sub' is a folder"),
    ):
        find_onnx_file(folder, "sub")
    with (
        spelled_as({"onnx_file": "--onnx-file"}),
        pytest.raises(OSError, match=r"^--onnx-file 'nope\.onnx' not found"),
    ):
        find_onnx_file(folder, "nope.onnx")


def test_onnx_advice_spells_the_options_once(folder, tmp_path):
    from tokenpool.model.folders import check_files

    bare = tmp_path / "bare"
    (bare / "onnx").mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (bare / name).write_bytes((folder / name).read_bytes())
    (bare / "onnx" / "model_O3.onnx").write_bytes(b"x")
    with pytest.raises(OSError) as raised:
        check_files(bare)
    assert "runtime='onnx', onnx_file='onnx/model_O3.onnx'" in str(raised.value)
    assert "CLI:" not in str(raised.value)
    with spelled_as({"runtime": "--runtime", "onnx_file": "--onnx-file"}), pytest.raises(OSError) as raised:
        check_files(bare)
    assert "use --runtime onnx, --onnx-file onnx/model_O3.onnx" in str(raised.value)


def test_evaluation_fusion_messages_name_the_flags():
    from tokenpool.evaluation.retrieval import check_fusion

    with pytest.raises(OptionError, match=r"^rrf_k must be"):
        check_fusion(float("inf"), 0.5)
    with spelled_as({"rrf_k": "--rrf-k", "hybrid_weight": "--hybrid-weight"}):
        with pytest.raises(OptionError, match=r"^--rrf-k must be"):
            check_fusion(float("inf"), 0.5)
        with pytest.raises(OptionError, match=r"^--hybrid-weight must be"):
            check_fusion(60, 2)


def test_min_cosine_names_the_flags():
    from tokenpool.model.onnx_export import Recipe, variant_min_cosine

    flags = {"min_cosine": "--min-cosine", "quantize": "--quantize"}
    with (
        spelled_as(flags),
        pytest.raises(OptionError, match=r"^--min-cosine 0\.9 applies to --quantize int8 only"),
    ):
        variant_min_cosine(Recipe(optimize=True), 0.9)
    with pytest.raises(OptionError, match=r"^min_cosine=0\.9 applies to quantize='int8' only"):
        variant_min_cosine(Recipe(optimize=True), 0.9)


def test_keep_fp32_matching_no_node_names_the_option():
    """``keep-fp32 'op:Softmax' matches no node`` spelled the option neither way (keep_fp32=, --keep-fp32)."""
    helper = pytest.importorskip("onnx").helper
    from tokenpool.model.onnx_export import select_nodes

    value = helper.make_tensor_value_info("x", 1, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [value],
                              [helper.make_tensor_value_info("y", 1, [1])])  # fmt: skip
    with pytest.raises(OptionError, match=r"^keep_fp32 'op:Softmax' matches no node"):
        select_nodes(graph, ["op:Softmax"])
    with (
        spelled_as({"keep_fp32": "--keep-fp32"}),
        pytest.raises(OptionError, match=r"^--keep-fp32 'op:Softmax'"),
    ):
        select_nodes(graph, ["op:Softmax"])


def test_top_k_with_dense_on_a_splade_model_names_dense(run, sparse_folder, tmp_path):
    """A SPLADE model with ``--dense --top-k 3`` was said to "write dense vectors", as if the model were dense."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a text\n", encoding="utf-8")
    for extra in (("--top-k", "3"), ("--threshold", "0.5")):
        code, _, err = run("embed", corpus, "-o", tmp_path / "out.npy", "--model", sparse_folder, "--device", "cpu",
                           "--dense", *extra)  # fmt: skip
        assert_one_error_line(
            code, err, f"{' '.join(extra)} applies to sparse (SPLADE) rows; --dense makes the rows dense"
        )


# ------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_encoder_options_check_the_device_for_every_runtime(runtime):
    """``device="cpu "`` with runtime onnx passed `EncoderOptions.check` (a Ray driver) and failed in an actor."""
    with pytest.raises(OptionError, match="unknown device 'cpu '"):
        EncoderOptions(runtime=runtime, device="cpu ").check()
    assert EncoderOptions(runtime=runtime, device="cpu:0").check().device == "cpu:0"


def test_docs_window_capacity_sentence():
    text = (Path(__file__).resolve().parents[1] / "docs" / "encoder.md").read_text(encoding="utf-8")
    assert "`window_capacity(prompt=...)` is the largest chunk size" not in text
    assert "chunk sizes are checked per document" in text


def test_evaluate_prompt_name_names_the_flag(run, folder):
    """``tokenpool evaluate STS --prompt-name nope`` said ``prompt_name 'nope'`` (embed said ``--prompt-name``)."""
    sts = Path(__file__).resolve().parents[1] / "examples" / "sts-sample.tsv"
    code, _, err = run("evaluate", sts, "--model", folder, "--device", "cpu", "--prompt-name", "nope")
    assert_one_error_line(code, err, "--prompt-name 'nope' is not one of the model's prompts")


def test_a_request_spells_with_the_commands_mapping(dense):
    """An `EncodeRequest` of the default caller (`Encoder.encode` inside ``tokenpool evaluate``) spelled Python
    names inside a command; it uses `spell`'s mapping, as every message; ``caller="cli"`` the declared flags."""
    from tokenpool.model.request import EncodeRequest

    with spelled_as({"top_k": "--top-k"}), pytest.raises(OptionError, match=r"^--top-k 5 applies to sparse"):
        EncodeRequest(top_k=5).check_encoder(dense)
    with pytest.raises(OptionError, match=r"^top_k=5 applies to sparse"):
        EncodeRequest(top_k=5).check_encoder(dense)
    with pytest.raises(OptionError, match=r"^--top-k 5 applies to sparse"):
        EncodeRequest(top_k=5, caller="cli").check_encoder(dense)


def test_int8_without_a_calibration_names_the_calibrate_call_that_fits(dense):
    """``encode(texts, precision="int8", normalize=False)`` said to make ``encoder.calibrate(texts)``, whose
    calibration that very call then refuses (normalize=True)."""
    with pytest.raises(OptionError, match=r"encoder\.calibrate\(texts, normalize=False\) on a sample"):
        dense.encode(TEXTS, precision="int8", normalize=False)
    calibration = dense.calibrate(TEXTS, normalize=False)  # (the call it names works)
    assert dense.encode(TEXTS, precision="int8", normalize=False, calibration=calibration).dtype == np.int8
