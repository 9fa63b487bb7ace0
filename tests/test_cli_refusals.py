"""Command-line options and inputs refused before any work: one stderr line, exit 2, nothing loaded or started."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import assert_one_error_line
from test_retrieval import write_beir

from tokenpool import cli
from tokenpool.cli import common

ROOT = Path(__file__).resolve().parents[1]

PAIRS = ROOT / "examples" / "sts-sample.tsv"

CORPUS = [{"_id": "d0", "title": "", "text": "cats sleep"}, {"_id": "d1", "title": "", "text": "dogs bark"}]

QUERIES = [{"_id": "q1", "text": "sleeping cats"}]


def _model_loaded(*_: object, **__: object) -> None:
    raise AssertionError("a model was loaded for an empty MODEL")


@pytest.fixture
def in_model_folder(monkeypatch, tmp_path):
    """The current folder is a real model folder (what Path('') used to read); nothing may load or export."""
    from tokenpool.model import onnx_export
    from tokenpool.model.folders import bundled_model_path

    monkeypatch.chdir(bundled_model_path())
    monkeypatch.setattr(common, "build_encoder", _model_loaded)
    monkeypatch.setattr(onnx_export, "export_fp32", _model_loaded)
    return write_beir(tmp_path / "beir", CORPUS, QUERIES, [("q1", "d0", 1)])


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("embed", ["embed", str(PAIRS), "-o", "{tmp}/out.npy", "--model", ""]),
        ("evaluate", ["evaluate", str(PAIRS), "--model", ""]),
        ("evaluate", ["evaluate", str(PAIRS), "--precision", "float16", "--model", ""]),
        ("evaluate", ["evaluate", "{beir}", "--model", ""]),
        ("evaluate", ["evaluate", "{beir}", "--modes", "bm25", "--model", ""]),
        ("evaluate", ["evaluate", "{beir}", "--precision", "int8", "--model", ""]),
        ("evaluate", ["evaluate", str(PAIRS), "--onnx-file", "a.onnx", "--onnx-file", "b.onnx", "--model", ""]),
        ("serve", ["serve", "--port", "0", "--model", ""]),
        ("serve", ["serve", "--port", "0", "--model", "a=,dim=8"]),
        ("export-onnx", ["export-onnx", ""]),
        ("inspect", ["inspect", ""]),
    ],
)
def test_an_empty_model_is_refused_by_every_command(capsys, tmp_path, in_model_folder, command, argv):
    """``--model ""`` (Path("") is ".") ran, served or exported the current folder; only inspect refused it.
    Every command now refuses it as inspect does, before reading its input or loading anything."""
    argv = [arg.format(tmp=tmp_path, beir=in_model_folder) for arg in argv]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert_one_error_line(code, err, f"tokenpool {command}: error:", "'': no such model folder")
    assert out == ""


@pytest.mark.parametrize("switch", ["--special-tokens", "--no-special-tokens"])
@pytest.mark.parametrize("rows", [[], ["--chunks", "tokens:8"]])
def test_either_special_tokens_switch_needs_token_vectors(run, tmp_path, switch, rows):
    """--no-special-tokens without --token-vectors was refused, --special-tokens taken and ignored: the encode
    reads neither. Both are refused by the same rule (`unread_options`), in the same words."""
    src = tmp_path / "in.txt"
    src.write_text("a cat\na dog\n", encoding="utf-8")
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", switch, *rows)
    assert_one_error_line(code, err, "tokenpool embed: error:", f"{switch} is not supported without --token-vectors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", "--token-vectors", switch, "-q")
    assert code == 0, err


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("embed", ["embed", "{src}", "-o", "{tmp}/out.npy", "--precision", "int8"]),
        ("evaluate", ["evaluate", str(PAIRS), "--precision", "int8"]),
        ("serve", ["serve", "--port", "0"]),
    ],
)
def test_a_calibration_nested_too_deeply_is_one_error_line(run, tmp_path, command, argv):
    """'[' * 100000 in a --calibration file ended the command with exit 1 (json's RecursionError); it is a
    malformed calibration file like any other: exit 2, one line naming the file."""
    src, deep = tmp_path / "in.txt", tmp_path / "deep.json"
    src.write_text("a cat\na dog\n", encoding="utf-8")
    deep.write_text("[" * 100_000, encoding="utf-8")
    argv = [arg.format(src=src, tmp=tmp_path) for arg in argv]
    code, out, err = run(*argv, "--calibration", deep)
    assert_one_error_line(code, err, f"tokenpool {command}: error:", f"{deep}: not valid JSON (nested too deeply)")


@pytest.mark.parametrize(
    ("command", "argv"),
    [("evaluate", ["evaluate", str(PAIRS), "--precision", "int8"]), ("serve", ["serve", "--port", "0"])],
)
def test_an_empty_calibration_is_refused_not_skipped(run, command, argv):
    """``--calibration ""``: serve served without a calibration (the empty name read as none given), evaluate
    said "': is a directory'" (Path("") is "."). Both name the empty file as missing."""
    code, _, err = run(*argv, "--calibration", "")
    assert_one_error_line(code, err, f"tokenpool {command}: error:", "'': no such calibration file")


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
    [(["--quantize", "int8", "--calibration-texts", "TEXTS", "--min-cosine", "2"], "argument --min-cosine: expected a number within [0, 1]"),
     (["--optimize", "--min-cosine", "nan"], "argument --min-cosine: expected a number within [0, 1], got 'nan'"),
     (["--optimize", "--min-cosine", "-0.5"], "argument --min-cosine: expected a number within [0, 1]"),
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


@pytest.mark.parametrize(
    ("command", "argv"),
    [("evaluate", ["evaluate", "{beir}"]), ("serve", ["serve", "--port", "0"])],
)
def test_an_unknown_prompt_name_is_one_error_line_naming_the_models_prompts(run, tmp_path, command, argv):
    """serve and evaluate read --prompt-name through one helper (`common.prompt_text`): the same line, naming the
    flag and the model's prompts (the bundled model has none), before any request is served or query embedded."""
    beir = write_beir(tmp_path / "beir", CORPUS, QUERIES, [("q1", "d0", 1)])
    code, _, err = run(*[arg.format(beir=beir) for arg in argv], "--prompt-name", "nope")
    message = "--prompt-name 'nope' is not one of the model's prompts (none)"
    assert_one_error_line(code, err, f"tokenpool {command}: error:", message)
