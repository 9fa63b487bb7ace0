"""`tokenpool embed` under a real SIGKILL, and its memory bound, each in subprocesses.

The kill test runs the real bundled model; the memory test swaps in a cheap hash-based encoder (inside the
child process only) so that 50,000 lines take seconds, and it asserts peak RSS ratios, never wall time.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from clitools import kill_after_chunks, run_forked

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _corpus(path: Path, n: int) -> None:
    base = (ROOT / "examples" / "corpus.txt").read_text(encoding="utf-8").split("\n")[:-1]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = base[i % len(base)]
            fh.write(f"{text} ({i})\n" if text else "\n")


def test_sigkill_then_resume_gives_the_uninterrupted_output(tmp_path):
    n, chunk = 400, 20
    total_chunks = math.ceil(n / chunk)
    src = tmp_path / "in.txt"
    _corpus(src, n)
    cmd = [
        sys.executable,
        "-m",
        "tokenpool.cli",
        "embed",
        str(src),
        "--chunk-size",
        str(chunk),
        "--batch-size",
        "8",
    ]
    # the uninterrupted and the resumed runs: processes forked as the killed one is (`run_forked`)
    code, err = run_forked([*cmd, "-o", str(tmp_path / "ref.npy")], ENV, tmp_path / "ref.err", timeout=300)
    assert code == 0, err
    manifest = tmp_path / "out.npy.tokenpool-partial" / "manifest.json"
    killed = kill_after_chunks([*cmd, "-o", str(tmp_path / "out.npy")], tmp_path / "out.npy", ENV, timeout=300)
    done = killed["chunks_done"]
    assert 2 <= done < total_chunks

    started = time.perf_counter()
    code, err = run_forked([*cmd, "-o", str(tmp_path / "out.npy"), "--resume"], ENV, tmp_path / "resume.err",
                           timeout=300)  # fmt: skip
    seconds = time.perf_counter() - started
    assert code == 0, err
    # Every completed chunk is reused; only the one in flight at the kill (and the rest) is computed.
    assert f"continuing with chunk {done}" in err
    assert f"chunks computed {total_chunks - done}, reused {done}" in err
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert not manifest.parent.exists()
    print(f"resumed after {done}/{total_chunks} chunks in {seconds:.1f} s")


CHEAP_RUN = textwrap.dedent(
    """
    import resource, sys, zlib
    from pathlib import Path

    import numpy as np

    from tokenpool import cli
    from tokenpool.model.configs import PoolingConfig


    class CheapEncoder:
        # Encoder's streaming interface with vectors derived from each text's CRC (no model, no torch).
        model_path = Path(sys.argv[3])
        config = PoolingConfig()
        strategies = ("mean",)
        normalize = False
        truncate_dim = None
        dimension = 384
        max_length = 128
        device = "cpu"

        def iter_vector_batches(self, texts, *, batch_size=32, **options):
            for start in range(0, len(texts), batch_size):
                part = texts[start : start + batch_size]
                yield np.arange(start, start + len(part)), np.stack([vector(t) for t in part])


    def vector(text):
        return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(384, dtype=np.float32)


    cli.common.build_encoder = lambda options: CheapEncoder()
    code = cli.main(["embed", sys.argv[1], "-o", sys.argv[2], "--chunk-size", "1000", "-q"])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    sys.exit(code)
    """
)


def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    script = tmp_path / "cheap_run.py"
    script.write_text(CHEAP_RUN, encoding="utf-8")
    peaks = {}
    for n in (5_000, 50_000):
        src, out = tmp_path / f"in{n}.txt", tmp_path / f"out{n}.npy"
        _corpus(src, n)
        proc = subprocess.run(
            [sys.executable, str(script), str(src), str(out), str(tmp_path)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        peaks[n] = int(proc.stdout.split()[-1])
        got = np.load(out, mmap_mode="r")
        assert got.shape == (n, 384)
        lines = src.read_text(encoding="utf-8").split("\n")
        for row in (0, n // 2, n - 1):  # rows land where their records are
            want = np.random.default_rng(__import__("zlib").crc32(lines[row].encode())).standard_normal(
                384, dtype=np.float32
            )
            np.testing.assert_array_equal(got[row], want)
    # 10x the records must not mean more memory: the 50,000-row output alone (77 MB) would double the peak.
    assert peaks[50_000] <= 1.5 * peaks[5_000], peaks
