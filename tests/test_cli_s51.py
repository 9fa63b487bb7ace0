"""Stop 51, command-line and evaluation input: integer options read as the user wrote them, STS scores named
as written, empty option values, sparse models and ``--dim``, ``--dtype float64``. Each test failed before its
fix."""

from __future__ import annotations

import re

import pytest
from clitools import assert_one_error_line

# ------------------------------------------------------------------ integer options: ASCII digits only

# (command line before the value, the option as argparse names it); each option takes an integer
INT_OPTIONS = [
    (["embed", "in.txt", "-o", "out.npy", "--batch-size"], "--batch-size"),
    (["embed", "in.txt", "-o", "out.npy", "--max-batch-tokens"], "--max-batch-tokens"),
    (["embed", "in.txt", "-o", "out.npy", "--chunk-size"], "--chunk-size"),
    (["embed", "in.txt", "-o", "out.npy", "--dim"], "--dim"),
    (["embed", "in.txt", "-o", "out.npy", "--max-length"], "--max-length"),
    (["embed", "in.txt", "-o", "out.npy", "--top-k"], "--top-k"),
    (["embed", "in.txt", "-o", "out.npy", "--calibration-size"], "--calibration-size"),
    (["evaluate", "pairs.tsv", "--batch-size"], "--batch-size"),
    (["evaluate", "pairs.tsv", "--window-stride"], "--window-stride"),
    (["export-onnx", "--batch-size"], "--batch-size"),
    (["serve", "--port"], "--port"),
    (["serve", "--batch-size"], "--batch-size"),
    (["serve", "--max-queue"], "--max-queue"),
    (["serve", "--workers"], "--workers"),
]


@pytest.mark.parametrize("value", ["1_0", "\u0661\u0660", "\uff11\uff10", " 10", "10\n", "0x10", "1e1"])
@pytest.mark.parametrize(("argv", "flag"), INT_OPTIONS, ids=lambda x: x if isinstance(x, str) else x[0])
def test_integer_options_take_ascii_digits_only(capsys, argv, flag, value):
    """``--batch-size 1_0`` was 10 and ``--batch-size ١٠`` (Arabic-Indic digits) too: Python's int() reads
    underscores, other scripts' digits and surrounding whitespace. Parsing only (no command runs)."""
    from tokenpool.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, value])
    assert_one_error_line(exit_.value.code, capsys.readouterr().err, f"argument {flag}", repr(value))


@pytest.mark.parametrize(("argv", "flag"), INT_OPTIONS, ids=lambda x: x if isinstance(x, str) else x[0])
def test_integer_options_still_take_plain_and_signed_digits(argv, flag):
    from tokenpool.cli import build_parser

    args = build_parser().parse_args([*argv, "+0012"])
    assert getattr(args, flag[2:].replace("-", "_") if flag != "--dim" else "truncate_dim") == 12


@pytest.mark.parametrize("text", ["0", "7", "+7", "-7", "007", "9" * 5000, "1_0", "\u0661", "", "+", " 7", "7 ",
                                  "1.0", "\u00b2", "-0"])
def test_parse_int_is_an_optional_sign_and_ascii_digits(text):
    """The one reader of integers as text (was a private helper of the BEIR reader): the reference is the
    grammar itself, ``[+-]?[0-9]+``, with the value read digit by digit."""
    from tokenpool.errors import parse_int

    expected = None
    if re.fullmatch(r"[+-]?[0-9]+", text, flags=re.ASCII):
        digits = text.lstrip("+-")
        magnitude = 0
        for digit in digits:
            magnitude = magnitude * 10 + "0123456789".index(digit)
        expected = -magnitude if text.startswith("-") else magnitude
    assert parse_int(text) == expected


@pytest.mark.parametrize("depths", ["1_0", "\u0661\u0660", "40,1_00"])
def test_rescore_depths_take_ascii_digits_only(run, tmp_path, depths):
    """``evaluate FOLDER --precision int8 --rescore 1_0`` rescored the top 10; refused before the model loads."""
    for name, text in (("corpus.jsonl", '{"_id": "d1", "text": "cats"}\n{"_id": "d2", "text": "dogs"}\n'),
                       ("queries.jsonl", '{"_id": "q1", "text": "cats"}\n'), ("qrels.tsv", "q1\td1\t1\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    code, _, err = run("evaluate", tmp_path, "--model", tmp_path / "no-model", "--precision", "int8",
                       "--rescore", depths)  # fmt: skip
    assert_one_error_line(code, err, "--rescore takes comma-separated positive integers", repr(depths))
