"""Assertions shared by the command-line tests."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
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


def kill_after_chunks(cmd: list[str], output: Path, env: dict[str, str], *, chunks: int = 2, timeout: float = 600) -> dict:
    """Run ``cmd`` (a ``tokenpool embed`` writing ``output``) and SIGKILL it as soon as its work folder's
    manifest counts ``chunks`` completed chunks; returns that manifest. Fails if the run ends first."""
    manifest = Path(f"{output}.tokenpool-partial") / "manifest.json"
    victim = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"no {chunks} chunks completed in {timeout} s"
            assert victim.poll() is None, "the run finished before it could be killed"
            if manifest.exists() and json.loads(manifest.read_text())["chunks_done"] >= chunks:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        victim.kill()
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not Path(output).exists()  # nothing under the final name until complete
    return json.loads(manifest.read_text())


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
