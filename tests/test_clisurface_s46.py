"""Stop 46, the command line as a user meets it: what `tokenpool inspect` reports agrees with the Encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinymodels import edit_json


@pytest.fixture(scope="module")
def limited_folder(tmp_path_factory, tiny_bert_folder):
    """The tiny BERT (128 positions) copied, so that its sentence_bert_config.json can be rewritten."""
    folder = tmp_path_factory.mktemp("limited") / "model"
    shutil.copytree(tiny_bert_folder, folder)
    return folder


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_seq_length=st.one_of(st.integers(3, 200), st.integers(129, 100_000)))
def test_inspect_max_length_is_the_one_the_encoder_truncates_at(limited_folder, run, max_seq_length):
    """A folder's max_seq_length above the model's 128 positions: the Encoder truncates at 128, and inspect said
    the folder's number (e.g. 4096, from sentence_bert_config.json)."""
    from tokenpool import Encoder

    edit_json(limited_folder / "sentence_bert_config.json", max_seq_length=max_seq_length)
    code, out, err = run("inspect", limited_folder, "--json")
    assert code == 0, err
    shown = json.loads(out)["fields"]["max_length"]
    assert shown["value"] == Encoder(limited_folder, device="cpu").max_length == min(max_seq_length, 128)
    assert shown["source"] == ("sentence_bert_config.json" if max_seq_length <= 128 else
                               "config.json max_position_embeddings")  # fmt: skip


README = Path(__file__).resolve().parents[1] / "README.md"
README_EMBEDS = [line.split("#")[0].split()[1:] for line in README.read_text(encoding="utf-8").splitlines()
                 if line.startswith("tokenpool embed examples/")]  # fmt: skip


@pytest.mark.parametrize("argv", README_EMBEDS, ids=" ".join)
def test_readme_embed_examples_run_as_written(argv, run, tmp_path, monkeypatch):
    """README's first command, ``tokenpool embed examples/corpus.txt -o out/corpus.npy``, failed in a fresh
    checkout (exit 2: folder out does not exist; /out/ is git-ignored, made only by scripts/main.sh)."""
    (tmp_path / "examples").symlink_to(README.parent / "examples")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(*argv, "-q")
    assert code == 0, err


def test_every_command_a_help_text_names_exists(run):
    """``tokenpool serve --help`` sent users to ``tokenpool calibrate`` for --calibration: no such command."""
    import re

    from tokenpool.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for command in sorted(commands):
        code, out, err = run(command, "--help")
        assert code == 0, err
        named = set(re.findall(r"[(`]tokenpool ([a-z][a-z-]*)", " ".join(out.split())))
        assert named <= commands, (command, named - commands)


@pytest.mark.parametrize("model", ["folder", None])
def test_a_revision_with_a_local_folder_is_refused(model, limited_folder, run, tmp_path):
    """``--revision v2`` with a local --model (or the bundled one) was silently ignored: the user asked for a
    revision and got whatever the folder holds."""
    corpus = tmp_path / "t.txt"
    corpus.write_text("hello\n", encoding="utf-8")
    where = ["--model", limited_folder] if model else []
    code, _, err = run("embed", corpus, "-o", tmp_path / "o.npy", *where, "--revision", "v2")
    from clitools import assert_one_error_line

    assert_one_error_line(code, err, "--revision v2", "local folder")
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(("corpus_text", "expected"), [("hello\nworld\n", 0), (None, 2)])
def test_embed_runs_with_stderr_closed(corpus_text, expected, limited_folder, tmp_path):
    """``tokenpool embed ... 2>&-`` (a cron job, a daemon) failed every valid job with exit 1 ('NoneType' object
    has no attribute 'isatty'), and bad input with exit 1 instead of 2."""
    import os
    import subprocess
    import sys

    corpus = tmp_path / "t.txt"
    if corpus_text is not None:
        corpus.write_text(corpus_text, encoding="utf-8")
    out = tmp_path / "o.npy"
    argv = [sys.executable, "-m", "tokenpool.cli", "embed", str(corpus), "-o", str(out), "--model", str(limited_folder)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(2), timeout=300)  # noqa: PLW1509
    assert done.returncode == expected, done.stdout
    assert done.stdout == ""  # nothing meant for stderr lands on stdout
    assert out.exists() == (expected == 0)


def test_a_calibration_size_beyond_the_corpus_calibrates_on_all_of_it(limited_folder, run, tmp_path):
    """``--calibration-size 99999999999999999999 --precision int8`` ended with itertools.islice's own error
    ('Stop argument for islice() must be None or an integer: 0 <= x <= sys.maxsize.'). A size past the corpus
    calibrates on all of it; since stop 64 one past 2**63-1 (as that one) is refused as every size is."""
    import numpy as np

    corpus = tmp_path / "t.txt"
    corpus.write_text("hello\nworld\nthird one\n", encoding="utf-8")
    outs = {}
    for size in ("3", str(2**63 - 1)):
        outs[size] = tmp_path / f"o{len(size)}.npy"
        code, _, err = run("embed", corpus, "-o", outs[size], "--model", limited_folder, "--precision", "int8",
                           "--calibration-size", size, "-q")  # fmt: skip
        assert code == 0, err
    assert np.array_equal(*(np.load(out) for out in outs.values()))


def test_evaluate_refuses_a_plot_path_that_is_a_folder_before_the_model_runs(limited_folder, run, tmp_path):
    """``--plot charts.png`` naming a folder was refused only after the whole evaluation ran (its table printed,
    then exit 2: 'cannot write the plot (Is a directory)'); --plot's other refusals come before the model loads."""
    from clitools import assert_one_error_line

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("score,s1,s2\n0.5,a b,b c\n1,c d,d e\n2,e f,f g\n", encoding="utf-8")
    (tmp_path / "charts.png").mkdir()
    code, out, err = run("evaluate", pairs, "--model", limited_folder, "--plot", tmp_path / "charts.png")
    assert_one_error_line(code, err, "charts.png", "folder")
    assert out == ""
