"""Command-line corners found at stop 33: an empty --model read the current folder, --special-tokens without
--token-vectors was taken, a calibration file nested too deeply ended in a traceback."""

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


def test_the_rule_table_names_special_tokens_only_where_token_vectors_are_not_written():
    from tokenpool.model.request import OUTPUTS, unread_options

    for output in OUTPUTS:
        unread = unread_options({"special_tokens"}, chunks=None, precision="float32", calibration=None, output=output)
        assert unread == ([] if output == "tokens" else [("special_tokens", "token vectors")])


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
