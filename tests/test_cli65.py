"""Stop 65, the command line's plumbing: the summary names paths as the errors do, the embed help names every
output suffix, and the benchmarks refuse a thread count of 0 with a usage error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from clitools import benchmark_script


@pytest.mark.parametrize("name", ["x\ty.npy", "a\\b.npy"])
def test_the_summary_quotes_an_output_name_as_the_errors_do(name, tmp_path, run):
    """``tokenpool embed in.txt -o $'x\\ty.npy' --skip-empty`` wrote its summary with the tab as is (and a typed
    backslash bare), where every error names the path as `errors.shown_name` does: ``'x\\ty.npy'``. The summary
    now names the output and its lines file the same way."""
    corpus = tmp_path / "in.txt"
    corpus.write_text("a cat\n\nsat\n", encoding="utf-8")
    code, out, err = run("embed", corpus, "-o", tmp_path / name, "--skip-empty")
    assert code == 0 and out == "", err
    shown = repr(str(tmp_path / name))
    lines_file = repr(str(tmp_path / name) + ".lines.txt")
    assert err.splitlines() == [err.strip()] and f"wrote {shown}: 2 x 384 float32" in err, err
    assert f"(kept line numbers in {lines_file})" in err, err
    assert np.load(tmp_path / name).shape == (2, 384)


def test_the_embed_help_line_names_every_output_suffix(run):
    """``tokenpool --help`` said embed writes ".npy/.parquet/.jsonl"; it writes .npz too (`io.formats.output_help`)."""
    code, out, err = run("--help")
    line = next(line for line in out.splitlines() if line.strip().startswith("embed "))
    assert code == 0 and ".npz" in line, out


@pytest.mark.parametrize(
    ("script", "argv"),
    [("bench_row_kernels", []), ("bench_precision", []), ("bench_longdocs", ["folder"]), ("bench_encode", [])],
)
@pytest.mark.parametrize("threads", ["0", "-1"])
def test_the_benchmarks_refuse_a_thread_count_below_one(script, argv, threads, monkeypatch, capsys):
    """``python benchmarks/bench_row_kernels.py --threads 0`` (and bench_precision, bench_longdocs, bench_encode)
    ended in torch's RuntimeError traceback from ``set_num_threads``; now argparse's usage error, exit 2."""
    pytest.importorskip("torch")
    module = benchmark_script(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv, "--threads", threads])
    with pytest.raises(SystemExit) as exc:
        module.main() if script == "bench_row_kernels" else module.main([*argv, "--threads", threads])
    assert exc.value.code == 2
    assert f"argument --threads: expected a positive integer, got '{threads}'" in capsys.readouterr().err
