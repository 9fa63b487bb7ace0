"""Corners of the command-line contract (one stderr line and exit 2 for a user error, no traceback): bench
options that failed late (exit 1) or ran with nothing to time, and `inspect` on odd MODEL values."""

from __future__ import annotations

import json

import pytest
from clitools import assert_one_error_line

from tokenpool import cli
from tokenpool.bench import pooling as bench

TINY = ["--batch", "2", "--length", "4", "--dim", "4", "--repeats", "1", "--rounds", "1", "--warmup", "0"]
QUICK = [*TINY, "--no-st", "--no-memory", "--no-bandwidth", "--no-scaling"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--threads", "-2"], "--threads must be >= 1, got -2"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--libraries", ""], "--libraries takes torch, numpy and torch-own"),
        (["--libraries", " , "], "--libraries takes torch, numpy and torch-own"),
    ],
)
def test_bench_refuses_bad_threads_seed_and_libraries_before_running(capsys, argv, words):
    """--threads 0 failed with exit 1 (torch's set_num_threads), --seed -1 with a traceback from the library
    entry and numpy's message without the option; an empty --libraries ran a report with no tokenpool row."""
    for entry in (cli.main, lambda args: bench.main(args[1:])):
        code = entry(["bench", *QUICK, *argv])
        assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error:", words)


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["inspect", "a", "b"], "tokenpool inspect: error: unrecognized arguments: b (see tokenpool inspect --help)"),
        (["embed", "in.txt", "-o", "out.npy", "--bogus", "1"], "tokenpool embed: error: unrecognized arguments: --bogus 1"),
        (["export-onnx", "--opset"], "tokenpool export-onnx: error: unrecognized arguments: --opset (see"),
        (["--bogus"], "tokenpool: error: unrecognized arguments: --bogus (see tokenpool --help)"),
    ],
)
def test_an_unknown_argument_is_named_after_its_command(capsys, argv, prefix):
    """argparse reported a command's unknown arguments as ``tokenpool: error: ... (see tokenpool --help)``,
    not as ``tokenpool CMD: error:`` as every other error of that command (and its --help) is."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert_one_error_line(exit_.value.code, err)
    assert err.startswith(prefix), err


def test_inspect_refuses_an_empty_model_instead_of_the_current_folder(capsys, tmp_path, monkeypatch):
    """``tokenpool inspect ""`` inspected the current folder (Path("") is "."), a report or an error about '.'
    for a MODEL that was never given."""
    from pathlib import Path

    from tokenpool.model.folders import bundled_model_path

    bundled = Path(bundled_model_path())
    monkeypatch.chdir(bundled)  # a real model folder: "" used to give its full report, exit 0
    code = cli.main(["inspect", "", "--json"])
    out, err = capsys.readouterr()
    assert_one_error_line(code, err, "tokenpool inspect: error:", "'': no such model folder")
    assert out == ""
    assert cli.main(["inspect", str(bundled), "--json"]) == 0  # a folder named in full still reports
    assert json.loads(capsys.readouterr().out)["model"] == str(bundled)


@pytest.mark.parametrize("argv", [["--max-length", "0"], ["--min-length", "0", "--max-length", "0", "--length", "1"]])
def test_bench_refuses_rows_without_a_real_token(capsys, argv):
    """--max-length 0 passed the option check, then the floor's amax() of no tokens failed: exit 1, torch's
    message. Nothing can be timed against a read of zero tokens."""
    for entry in (cli.main, lambda args: bench.main(args[1:])):
        code = entry(["bench", *QUICK, *argv])
        assert_one_error_line(code, capsys.readouterr().err, "tokenpool bench: error:", "every drawn row is empty")


def test_bench_keeps_running_when_some_rows_are_empty(capsys):
    """The refusal above is for no real token at all; a batch with empty rows among full ones is benchmarked."""
    assert cli.main(["bench", *QUICK, "--min-length", "0", "--max-length", "1", "--batch", "8", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["min_row"] == 0 and config["max_row"] == 1
