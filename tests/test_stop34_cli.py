"""Command-line corners found at stop 34: `embed --ray` started Ray on a missing input (and read stdin as a
parquet path); `evaluate` took --rescore and --calibration-size where nothing reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import assert_one_error_line
from test_retrieval import write_beir

from tokenpool.cli import common

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "examples" / "sts-sample.tsv"
CORPUS = [{"_id": "d0", "title": "", "text": "cats sleep"}, {"_id": "d1", "title": "", "text": "dogs bark"}]
QUERIES = [{"_id": "q1", "text": "sleeping cats"}]


@pytest.fixture
def no_ray(monkeypatch):
    """Ray must not be started."""
    pytest.importorskip("tokenpool.integrations.ray")
    import ray

    def started(*_: object, **__: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


@pytest.fixture
def no_model(monkeypatch):
    def loaded(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(common, "build_encoder", loaded)


@pytest.mark.parametrize(
    ("name", "needle"),
    [("missing.txt", "missing.txt: no such file"), ("missing.parquet", "missing.parquet: no such file"),
     ("-", "not stdin")],
)  # fmt: skip
def test_ray_refuses_an_input_it_cannot_read_before_ray_starts(run, tmp_path, no_ray, name, needle):
    source = name if name == "-" else str(tmp_path / name)
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--ray")
    assert_one_error_line(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_ray_refuses_an_unreadable_folder_before_ray_starts(run, tmp_path, no_ray):
    import os

    folder = tmp_path / "shards"
    folder.mkdir()
    folder.chmod(0o000)
    try:
        if os.access(folder, os.R_OK):  # root reads everything: nothing to refuse
            pytest.skip("running as a user who can read any folder")
        code, _, err = run("embed", folder, "-o", tmp_path / "out", "--ray")
    finally:
        folder.chmod(0o700)
    assert_one_error_line(code, err, "cannot read it")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--rescore", "5"], "--rescore is not supported with a pairs file"),
     (["--rescore", "abc"], "--rescore is not supported with a pairs file"),
     (["--calibration-size", "5"], "--calibration-size is not supported without --precision int8 or uint8"),
     (["--precision", "float16,binary", "--calibration-size", "5"], "--calibration-size is not supported without"),
     (["--precision", "int8", "--calibration", "CAL", "--calibration-size", "5"],
      "--calibration-size is not supported with --calibration")],
)  # fmt: skip
def test_evaluate_pairs_refuses_precision_options_nothing_reads(run, tmp_path, no_model, argv, needle):
    calibration = tmp_path / "cal.json"
    calibration.write_text("{}")
    argv = [str(calibration) if a == "CAL" else a for a in argv]
    code, _, err = run("evaluate", PAIRS, *argv)
    assert_one_error_line(code, err, needle)


def test_evaluate_folder_refuses_rescore_without_precision(run, tmp_path, no_model):
    folder = write_beir(tmp_path / "beir", CORPUS, QUERIES, [("q1", "d0", 1)])
    code, _, err = run("evaluate", folder, "--rescore", "5")
    assert_one_error_line(code, err, "--rescore is not supported without --precision")


def test_evaluate_still_reads_calibration_size_with_int8(run):
    """The option is still read where it applies: the report's calibration counts the sentences that made it."""
    import json

    code, out, err = run("evaluate", PAIRS, "--pooling", "mean", "--precision", "int8", "--calibration-size", "7",
                         "--json")  # fmt: skip
    assert code == 0, err
    calibration = json.loads(out)["calibration"]["mean"]
    assert calibration["texts"] == 7


@pytest.fixture
def no_export(monkeypatch):
    """Neither an ONNX file looked up nor one exported (an export takes minutes and fills the cache)."""
    from tokenpool.model import onnx

    def exported(*_: object, **__: object) -> None:
        raise AssertionError("an ONNX file was looked up or exported")

    monkeypatch.setattr(onnx, "find_onnx_file", exported)
    monkeypatch.setattr(onnx, "export_to_cache", exported)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--quantize", "int8", "--calibration-texts", "TEXTS", "--min-cosine", "2"], "min_cosine must be within [0, 1]"),
     (["--optimize", "--min-cosine", "nan"], "min_cosine must be within [0, 1], got 'nan'"),
     (["--optimize", "--min-cosine", "-0.5"], "min_cosine must be within [0, 1]"),
     (["--quantize", "int8"], "quantizing needs calibration texts")],
)  # fmt: skip
def test_export_onnx_refuses_bad_variant_flags_before_any_export(run, tmp_path, no_export, argv, needle):
    texts = tmp_path / "texts.txt"
    texts.write_text("a text\n", encoding="utf-8")
    argv = [str(texts) if a == "TEXTS" else a for a in argv]
    code, _, err = run("export-onnx", *argv, "--output", tmp_path / "x.onnx")
    assert_one_error_line(code, err, needle)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("command", ["embed", "evaluate"])
def test_a_prompt_that_is_not_utf8_is_refused_before_the_model_loads(run, tmp_path, no_model, command):
    """Python reads the argument byte 0xff as the lone surrogate U+DCFF (surrogateescape); the tokenizer used
    to fail on it after the model loaded, with 'TextEncodeInput must be Union[...]'."""
    corpus = tmp_path / "in.txt"
    corpus.write_text("a text\n", encoding="utf-8")
    argv = [corpus, "-o", tmp_path / "out.npy"] if command == "embed" else [PAIRS]
    prompt = b"query \xff: ".decode("utf-8", "surrogateescape")
    code, _, err = run(command, *argv, "--prompt", prompt)
    assert_one_error_line(code, err, "argument --prompt: expected UTF-8 text, got byte 0xff at character 7")
    assert not (tmp_path / "out.npy").exists()


def test_embed_parquet_refuses_a_missing_local_input_before_ray_starts(tmp_path, no_ray):
    """The Python API checks what the command line checks (the command line hands the input to it)."""
    from tokenpool.integrations.ray import embed_parquet

    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        embed_parquet(str(tmp_path / "missing.jsonl"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
