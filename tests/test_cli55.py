"""Stop 55, the command line's contract: file names that are not UTF-8 (a Latin-1 name on a UTF-8 system, read
by Python as surrogate escapes) in .parquet files, reports and charts; abbreviations inside serve's --model
lists. Each test failed before its fix."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line

# a Latin-1 "é" on a file system whose names are UTF-8: Python's argv (and os.listdir) holds it as U+DCE9
LATIN1 = os.fsdecode(b"caf\xe9")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

needs_bytes_names = pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="file names must be bytes")


@needs_bytes_names
def test_parquet_output_and_input_under_a_name_that_is_not_utf8(run, tmp_path):
    """``tokenpool embed in.txt -o caf\\xe9.parquet`` computed every chunk, then failed with "'utf-8' codec can't
    encode character '\\udce9'" (exit 2, no file named) and left its work folder; a ``.parquet`` input of such a
    name failed the same way. pyarrow encodes a str path as strict UTF-8: the name is now given as the bytes the
    file system holds, as .npy/.jsonl outputs (written by Python) already were."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    texts = ["hello world", "a second line"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, _, err = run("embed", source, "-o", tmp_path / "ref.npy", "-q")
    assert code == 0, err
    expected = np.load(tmp_path / "ref.npy")

    out = tmp_path / f"{LATIN1}.parquet"
    code, _, err = run("embed", source, "-o", out, "-q")
    assert code == 0, err
    assert os.fsencode(out.name) in os.listdir(os.fsencode(tmp_path))
    assert not os.path.exists(f"{out}.tokenpool-partial")
    table = pq.read_table(pa.OSFile(os.fsencode(out)))
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist(), dtype=np.float32), expected)

    parquet_in = tmp_path / f"{LATIN1}-in.parquet"
    pq.write_table(pa.table({"text": texts}), pa.OSFile(os.fsencode(parquet_in), "wb"))
    code, _, err = run("embed", parquet_in, "-o", tmp_path / "from-parquet.npy", "-q")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "from-parquet.npy"), expected)


@pytest.mark.parametrize("pair", ["batch=3", "batch-s=3", "mod=./other", "mo=./other"])
def test_serve_model_options_refuse_abbreviations_of_refused_flags(capsys, pair):
    """``--model a=FOLDER,batch-size=3`` and ``,model=X`` are refused (the batch size is the server's, the folder
    is FOLDER), but argparse's abbreviations let ``batch=3`` through, ignored without a word, and ``mod=X``
    replaced the folder. Options in a --model list are now matched by their full names only."""
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs

    args = build_parser().parse_args(["serve", "--model", f"a=./m,{pair}"])
    with pytest.raises(SystemExit) as exit_:
        _model_specs(args)
    assert_one_error_line(exit_.value.code, capsys.readouterr().err, "unrecognized arguments", pair.partition("=")[0])


def test_serve_model_options_full_names_still_work():
    """The fix keeps every full option name (and true/false switches) working in a --model list."""
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs

    args = build_parser().parse_args(["serve", "--model", "a=./m,pooling=cls,normalize=false,max_length=64"])
    [(name, options)] = _model_specs(args)
    assert (name, options.model, options.pooling, options.normalize, options.max_length) == ("a", "./m", "cls", False, 64)


@needs_bytes_names
def test_evaluate_plot_of_a_pairs_file_whose_name_is_not_utf8(run, tmp_path):
    """``tokenpool evaluate caf\\xe9.tsv --plot chart.png`` ran the model and printed the table, then failed
    drawing the chart's title (matplotlib's ``set_text(): incompatible function arguments`` over many lines, exit 2
    after the work) and wrote no chart. The title shows such a name as the command's messages do (``\\udce9``)."""
    pytest.importorskip("matplotlib")
    lines = (EXAMPLES / "sts-sample.tsv").read_text(encoding="utf-8").splitlines()[:12]
    pairs = tmp_path / f"{LATIN1}.tsv"
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chart = tmp_path / f"{LATIN1}.png"
    code, out, err = run("evaluate", pairs, "--pooling", "mean,cls", "--plot", chart)
    assert code == 0, err
    assert "12 pairs" in out and chart.read_bytes().startswith(b"\x89PNG")


def test_plot_title_with_a_lone_surrogate_is_drawn(tmp_path):
    """The chart helpers draw any title (from Python too): an undecodable name is shown escaped."""
    pytest.importorskip("matplotlib")
    from tokenpool.evaluation.sts import plot_scores

    plot_scores({"mean": 80.0, "cls": 70.0}, str(tmp_path / "c.png"), title="model on s\udce9.tsv \ud800")
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")


@needs_bytes_names
@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_reports_naming_a_file_that_is_not_utf8_are_printed(tmp_path, encoding):
    """Under a UTF-8 locale such as en_US.UTF-8 Python's stdout is strict: ``tokenpool inspect caf\\xe9`` (and
    ``evaluate caf\\xe9.tsv`` after scoring every pair) ended with "'utf-8' codec can't encode character
    '\\udce9'", exit 2, no report. stdout now shows such a name as stderr does. (PYTHONIOENCODING gives the strict
    stream the locale would.)"""
    import shutil
    import subprocess

    from tokenpool.model.folders import bundled_model_path

    folder = tmp_path / LATIN1
    shutil.copytree(bundled_model_path(), folder)
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    done = subprocess.run([sys.executable, "-m", "tokenpool", "inspect", folder], capture_output=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("ascii").startswith(f"model       {tmp_path}/caf\\udce9\n")
