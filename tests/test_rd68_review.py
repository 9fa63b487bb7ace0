"""Review of s68-cijobs (test-speed changes): what the in-process replacements of CLI subprocesses still see."""

from __future__ import annotations

import logging
import warnings

from hostile.test_model_folders import cli_in_process

from tokenpool.cli import common
from tokenpool.errors import ModelFolderError


def test_an_in_process_cli_call_shows_the_warnings_and_log_records_a_process_prints(run, monkeypatch, tmp_path):
    """The hostile-folder CLI cases that moved in-process assert exactly one stderr line: a Python warning or a
    root-logger record on the way to the refusal (which ``python -m tokenpool.cli`` prints on its stderr) counts
    there too, though pytest keeps both out of capsys. A DeprecationWarning, hidden in a process, stays hidden."""

    def noisy(options):
        warnings.warn("a folder looked odd", UserWarning, stacklevel=1)
        warnings.warn("hidden in a process", DeprecationWarning, stacklevel=1)
        logging.getLogger("some.library").warning("a library's warning")
        raise ModelFolderError("the refusal")

    (tmp_path / "in.txt").write_text("hello\n")
    argv = ["embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy", "--model", tmp_path]
    code, _, err = cli_in_process(run, monkeypatch, *argv)  # (`run` patches build_encoder first)
    monkeypatch.setattr(common, "build_encoder", noisy)
    code, _, err = cli_in_process(run, monkeypatch, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert any("the refusal" in line for line in lines), err
    assert any("UserWarning: a folder looked odd" in line for line in lines), err
    assert "a library's warning" in lines, err
    assert "hidden in a process" not in err, err
