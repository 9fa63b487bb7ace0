"""Stop 61, the command line's plumbing shared by every command and the docs' claims about it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _with_reader_gone(stream: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m tokenpool ARGS`` with ``stream`` (stdout or stderr) a pipe whose reader has gone
    (``tokenpool ... | head -1`` once head exited), stdout block-buffered as for any user (no PYTHONUNBUFFERED)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    try:
        return subprocess.run([sys.executable, "-m", "tokenpool", *args], env=env, timeout=300,
                              **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: write_end})
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("bench", "--help"), ("inspect", "--json")])
def test_a_stdout_reader_that_went_away_is_a_clean_exit_0(args):
    """``tokenpool inspect | head -1``: a broken pipe counts as success (`run_command`), but the output waited in
    stdout's buffer until the interpreter's exit flush, which printed "Exception ignored ... BrokenPipeError"
    and exited 120 (any command that prints, and --help / --version)."""
    done = _with_reader_gone("stdout", *args)
    assert (done.returncode, done.stderr.decode()) == (0, "")


@pytest.mark.parametrize("args", [("nosuch",), ("inspect", "/nonexistent-folder-61")])
def test_a_stderr_reader_that_went_away_keeps_the_exit_status(args):
    """``tokenpool ... 2>&1 | head -c0``: the one error line could not be written, and the command exited 120
    (the exit flush of stderr failed) instead of 2, so a script could not tell bad input from anything else."""
    assert _with_reader_gone("stderr", *args).returncode == 2


@pytest.mark.parametrize(("argv", "named"), [
    (["--model", "./my-model", "embed", "in.txt", "-o", "out.npy"], "--model"),  # a command's option and value
    (["-o", "out.npy", "embed", "in.txt"], "-o"),
    (["-q", "--model=m", "inspect"], "-q --model=m"),
])  # fmt: skip
def test_a_command_option_given_before_the_command_is_named_not_its_value(argv, named, capsys):
    """``tokenpool --model ./my-model embed ...`` said "argument COMMAND: invalid choice: './my-model' (choose from
    'embed', ...)": the option's value named as a mistyped command. The options before the command are named, as
    for ``tokenpool --bogus inspect`` (tokenpool's own options are --help and --version)."""
    from tokenpool import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"tokenpool: error: unrecognized arguments: {named} (see tokenpool --help)\n"


def test_an_interrupted_ray_embed_does_not_advise_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C during ``tokenpool embed IN -o OUT --ray`` said "interrupted (rerun with --resume to continue)", but
    --resume is refused with --ray (exit 2): the advice named an option the command refuses."""
    from tokenpool import cli, jobs
    from tokenpool.cli import common
    from tokenpool.integrations import ray as tokenpool_ray

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenpool_ray, "embed_parquet", interrupted)
    monkeypatch.setattr(jobs, "embed_corpus", interrupted)
    monkeypatch.setattr(common, "build_encoder", lambda options: None)
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    assert cli.main(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy")]) == 130  # (without Ray)
    assert capsys.readouterr().err == "tokenpool embed: interrupted (rerun with --resume to continue)\n"
    assert cli.main(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out"), "--ray"]) == 130
    assert capsys.readouterr().err == "tokenpool embed: interrupted\n"
    assert cli.main(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out"), "--ray", "--resume"]) == 2
    assert "--resume is not supported with --ray" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_under_stdout_is_one_error_line():
    """``tokenpool inspect > /dev/full``: the report waited in stdout's buffer, and the interpreter's exit flush
    printed "Exception ignored ... OSError: [Errno 28]" and exited 120. It is the command's one error line (an
    OSError is bad input, as a full disk under ``embed``'s output is), exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "tokenpool", "inspect", "--json"], env=env, timeout=300,
                              stdout=full, stderr=subprocess.PIPE, text=True)
    assert (done.returncode, done.stderr) == (2, "tokenpool inspect: error: [Errno 28] No space left on device\n")
