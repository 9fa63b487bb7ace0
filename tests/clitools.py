"""Assertions shared by the command-line tests."""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def assert_one_error_line(code: int, err: str, *needles: str) -> None:
    """Exit status 2, no traceback, exactly one stderr line containing every needle."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# A server that imports torch, transformers (the fixture models' BERT modules) and tokenpool once, then forks one
# child per `tokenpool embed` to kill: each kill then costs the model's loading, not ~6 s of CPU importing. It only
# imports (no model forward, so no thread pool runs before a fork); the caller waits on the child with a pidfd and
# the server reaps it only when told, so its pid cannot be reused while it may still be signalled.
_FORK_SERVER = textwrap.dedent(
    """
    import json, os, sys
    import torch, transformers
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
    from transformers import BertForMaskedLM, BertModel, BertTokenizerFast
    import tokenpool.jobs, tokenpool.model.encoder
    from tokenpool.cli import main
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the commands' stdout goes where a `tokenpool embed` subprocess's would, not into the replies
    while request := sys.stdin.readline():
        argv, cwd, stderr = json.loads(request)
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(stderr or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            try:
                os.chdir(cwd)
                code = main(argv) or 0
                sys.stdout.flush(), sys.stderr.flush()
                os._exit(code)
            except BaseException:
                os._exit(1)
        print(pid, file=replies)
        sys.stdin.readline()  # the caller is done with the child
        print(os.waitpid(pid, 0)[1], file=replies)
    """
)
_FORK_SERVERS: dict[tuple, subprocess.Popen] = {}


def _fork_server(env: dict[str, str], role: str = "kill") -> subprocess.Popen:
    """The running fork server for ``env`` and ``role`` (one per environment, as a subprocess would get it, and
    per role: the runs `kill_after_chunks` kills, the ones `run_forked` runs to the end)."""
    key = (role, *sorted(env.items()))
    server = _FORK_SERVERS.get(key)
    if server is None or server.poll() is not None:
        server = subprocess.Popen([sys.executable, "-c", _FORK_SERVER], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
        _FORK_SERVERS[key] = server
    return server


@atexit.register
def _stop_fork_servers() -> None:
    for server in _FORK_SERVERS.values():
        server.stdin.close()
        server.wait()  # (waited for, so that its CPU counts in its parent's)


def kill_after_chunks(cmd: list[str], output: Path, env: dict[str, str], *, chunks: int = 2, timeout: float = 600) -> dict:
    """Run ``cmd`` (a ``tokenpool embed`` writing ``output``) and SIGKILL it as soon as its work folder's
    manifest counts ``chunks`` completed chunks; returns that manifest. Fails if the run ends first.
    ``python -m tokenpool.cli ...`` runs in a child forked from a fork server (the same command, imported once)."""
    manifest = Path(f"{output}.tokenpool-partial") / "manifest.json"
    if cmd[:3] != [sys.executable, "-m", "tokenpool.cli"] or not hasattr(os, "pidfd_open"):
        victim = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        status = _kill_when_stored(manifest, chunks, timeout, victim.poll, victim.kill, victim.wait)
        assert status == -signal.SIGKILL
    else:
        server = _fork_server(env)
        server.stdin.write(json.dumps([cmd[3:], os.getcwd(), None]) + "\n")
        pid = int(server.stdout.readline())
        pidfd = os.pidfd_open(pid)

        def ended() -> bool | None:  # (None while it runs, as `Popen.poll`)
            return True if select.select([pidfd], [], [], 0)[0] else None

        def kill() -> None:
            os.kill(pid, signal.SIGKILL)

        def reap() -> int:
            os.close(pidfd)
            server.stdin.write("\n")
            return int(server.stdout.readline())

        status = _kill_when_stored(manifest, chunks, timeout, ended, kill, reap)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not Path(output).exists()  # nothing under the final name until complete
    return json.loads(manifest.read_text())


def run_forked(cmd: list[str], env: dict[str, str], stderr: Path, *, timeout: float = 600) -> tuple[int, str]:
    """(exit status, stderr text) of ``cmd``, a ``python -m tokenpool.cli ...`` run to its end in a child forked
    from the fork server for ``env`` (as `kill_after_chunks` runs the run it kills: a process of its own, whose
    imports cost nothing), its stderr written to the file ``stderr``; a plain subprocess where no fork server
    runs it. For the uninterrupted and resumed runs beside a killed one (the same process settings), from a
    server of their own: their children start from another interpreter's state than the killed run's (its
    hash seed, numpy's global random state, what importing set), as separate processes' runs would, so a
    resume or an output that depends on such state is still seen to differ."""
    if cmd[:3] != [sys.executable, "-m", "tokenpool.cli"] or not hasattr(os, "pidfd_open"):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stderr
    server = _fork_server(env, "run")
    server.stdin.write(json.dumps([cmd[3:], os.getcwd(), str(stderr)]) + "\n")
    pid = int(server.stdout.readline())
    pidfd = os.pidfd_open(pid)
    try:
        ended = bool(select.select([pidfd], [], [], timeout)[0])
        if not ended:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
        server.stdin.write("\n")
        status = int(server.stdout.readline())
    assert ended, f"{cmd} ran past {timeout} s"
    return os.waitstatus_to_exitcode(status), Path(stderr).read_text(encoding="utf-8", errors="replace")


def _kill_when_stored(manifest: Path, chunks: int, timeout: float, ended, kill, wait) -> int:
    """Poll ``manifest`` until it counts ``chunks`` chunks, then ``kill`` the run; ``wait``'s status."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"no {chunks} chunks completed in {timeout} s"
            assert ended() is None, "the run finished before it could be killed"
            if manifest.exists() and json.loads(manifest.read_text())["chunks_done"] >= chunks:
                kill()
                break
            time.sleep(0.005)
    finally:
        kill()
        status = wait()
    return status


def tiny_beir(root: Path) -> Path:
    """A BEIR folder of documents d1 "apple", d2 "pear", query q1 "apple" and one judgement (q1, d1), as UTF-8."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "apple"}\n{"_id": "d2", "text": "pear"}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "apple"}\n')
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return root


def benchmark_script(name: str):
    """``benchmarks/NAME.py`` loaded as a module (its ``main`` not run), its folder importable for its siblings."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
