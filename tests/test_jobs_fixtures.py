"""Every output kind of ``tokenpool embed`` against files written before the jobs/ redesign (issue 18).

tests/fixtures/jobs/expected/ holds the outputs that tokenpool at commit c402641 (before the redesign) wrote for
the commands in `CASES`, with the tiny committed model tests/fixtures/jobs/model (hidden size 8; see
make_model.py): float32 .npy/.parquet/.jsonl (and the --skip-empty lines file), int8 and ubinary codes (and the
calibration sidecar), sparse rows (.npz/.parquet/.jsonl), chunk rows (late and naive token chunks, spans) and
token vectors (.npy with its sidecar, .parquet, .jsonl). Each test reruns one command and asserts that every
file it writes is byte-identical to the stored one, and that it writes no other file; a second test SIGKILLs
each command after its second work chunk and asserts that ``--resume`` gives the same bytes.

What is not compared byte for byte, and why:
- parquet files carry the writing library's version (``created_by: parquet-cpp-arrow version X``) in their
  footer. When this pyarrow's version string differs from the one in the stored file, the parquet file is
  compared by content instead: schema with its metadata, row groups and their row counts, every column's values.
- float results depend on the CPU's kernels. The stored vectors were computed on 2-core x86-64 CPUs with torch
  2.13 (CPU), one set per kernel family; when transformers alone on this machine gives no set's stored hidden
  states bit for bit (`kernel_probe`, no tokenpool code involved), the comparisons are skipped with that reason
  rather than failed (the files would differ in the last bits for a reason outside the job code).
Every command passes ``--checkpoint-seconds 3600``: parquet row groups follow work chunks, and a chunk closed by
time (30 s by default) on a slow machine would move them.

- Each fixture folder ``expected*/`` holds one machine's outputs and its ``kernel_probe.npy``; the tests use the
  set whose probe this machine reproduces (`FIXTURE_SETS`).

To add a set for another family of float kernels, write it with the pre-redesign code, never with the code under
test: copy this file and tests/fixtures/jobs (without its expected* folders) into a worktree of c402641 and run
``PYTHONPATH=src python tests/test_jobs_fixtures.py --write expected-NAME`` there, then copy the new folder back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "jobs"
MODEL = FIXTURES / "model"
# One set of stored outputs per family of float kernels, every set written by tokenpool at c402641:
# expected/ on the 2-core x86-64 VM with AVX-512 (stops 17-25), expected-avx2/ on an AVX2-only one (stop 26),
# expected-avx512-amx/ on a Xeon with AVX-512 VNNI and AMX (stop 34).
FIXTURE_SETS = sorted(FIXTURES.glob("expected*"))
TXT = ROOT / "examples" / "corpus.txt"
JSONL = ROOT / "examples" / "corpus.jsonl"
SPANS = FIXTURES / "spans.jsonl"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

COMMON = ["--model", MODEL, "--device", "cpu", "--chunk-size", "4", "--checkpoint-seconds", "3600", "-q"]
SPLADE = ["--pooling", "splade"]
INT8 = ["--precision", "int8", "--calibration-size", "20"]

# name: (input, output file name, options, every file the command writes)
CASES: dict[str, tuple[Path, str, list, list[str]]] = {
    "float32-npy": (TXT, "f32.npy", [], ["f32.npy"]),
    "float32-parquet": (TXT, "f32.parquet", [], ["f32.parquet"]),
    "float32-jsonl": (JSONL, "f32.jsonl", [], ["f32.jsonl"]),
    "float32-skip-empty": (TXT, "kept.npy", ["--skip-empty"], ["kept.npy", "kept.npy.lines.txt"]),
    "int8-npy": (TXT, "int8.npy", INT8, ["int8.npy", "int8.npy.calibration.json"]),
    "int8-parquet": (
        TXT, "int8.parquet", [*INT8, "--skip-empty"],
        ["int8.parquet", "int8.parquet.calibration.json", "int8.parquet.lines.txt"],
    ),
    "ubinary-npy": (TXT, "ubin.npy", ["--precision", "ubinary"], ["ubin.npy"]),
    "ubinary-jsonl": (JSONL, "ubin.jsonl", ["--precision", "ubinary"], ["ubin.jsonl"]),
    "sparse-npz": (TXT, "sparse.npz", [*SPLADE, "--top-k", "12"], ["sparse.npz"]),
    "sparse-parquet": (TXT, "sparse.parquet", [*SPLADE, "--top-k", "12", "--tokens"], ["sparse.parquet"]),
    "sparse-jsonl": (
        TXT, "sparse.jsonl", [*SPLADE, "--top-k", "6", "--tokens", "--skip-empty"],
        ["sparse.jsonl", "sparse.jsonl.lines.txt"],
    ),
    "chunks-late-parquet": (
        JSONL, "late.parquet", ["--chunks", "tokens:6:2", "--chunking", "late", "--max-length", "10"],
        ["late.parquet"],
    ),
    "chunks-naive-jsonl": (
        TXT, "naive.jsonl", ["--chunks", "tokens:6:2", "--chunking", "naive", "--skip-empty"], ["naive.jsonl"]
    ),
    "chunks-spans-npy": (SPANS, "spans.npy", ["--chunks", "spans"], ["spans.npy", "spans.npy.chunks.jsonl"]),
    "tokens-npy": (JSONL, "tok.npy", ["--token-vectors"], ["tok.npy", "tok.npy.tokens.jsonl"]),
    "tokens-parquet": (JSONL, "tok.parquet", ["--token-vectors", "--no-special-tokens"], ["tok.parquet"]),
    "tokens-jsonl": (TXT, "tok.jsonl", ["--token-vectors", "--skip-empty", "--max-length", "8"], ["tok.jsonl"]),
}  # fmt: skip


def argv(name: str, folder: Path) -> list[str]:
    """The ``tokenpool`` arguments of case ``name``, writing into ``folder``."""
    source, output, options, _ = CASES[name]
    return [str(a) for a in ("embed", source, "-o", folder / output, *COMMON, *options)]


def kernel_probe() -> np.ndarray:
    """The tiny model's last hidden states for the first lines of corpus.txt, from transformers and torch alone
    (one thread, as the commands run): a probe of this machine's float kernels that no tokenpool code touches,
    so a tokenpool regression cannot make the fixture tests skip themselves."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    rows = [e.ids for e in tokenizer.encode_batch(TXT.read_text(encoding="utf-8").split("\n")[:4])]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            model = AutoModel.from_pretrained(MODEL, add_pooling_layer=False).eval()
            return model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    finally:
        torch.set_num_threads(threads)


def _fixtures_for_these_kernels() -> Path | None:
    """The fixture set written on a machine whose float kernels give this machine's probe bit for bit."""
    probe = kernel_probe()
    return next((d for d in FIXTURE_SETS if np.array_equal(probe, np.load(d / "kernel_probe.npy"))), None)


@pytest.fixture(scope="module")
def expected() -> Path:
    found = _fixtures_for_these_kernels()
    if found is None:
        pytest.skip(
            f"this CPU's float kernels give other bits than every machine that wrote fixtures "
            f"({', '.join(d.name for d in FIXTURE_SETS)})"
        )
    return found


def _parquet_content(path: Path) -> tuple:
    import pyarrow.parquet as pq

    pfile = pq.ParquetFile(path)
    groups = [pfile.metadata.row_group(i).num_rows for i in range(pfile.metadata.num_row_groups)]
    table = pfile.read()
    return table.schema, table.schema.metadata, groups, table.to_pydict()


def _created_by(path: Path) -> str:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.created_by


def assert_same_file(got: Path, want: Path) -> None:
    """Byte-identical, or for a parquet file written by another pyarrow version, the same content."""
    data, expected = got.read_bytes(), want.read_bytes()
    if data == expected:
        return
    if got.suffix == ".parquet" and _created_by(got) != _created_by(want):
        assert _parquet_content(got) == _parquet_content(want), f"{got.name}: content differs from the fixture"
        return
    first = next((i for i, (a, b) in enumerate(zip(data, expected, strict=False)) if a != b), None)
    raise AssertionError(
        f"{got.name} differs from its fixture: {len(data)} bytes vs {len(expected)}, first difference at byte "
        f"{first if first is not None else min(len(data), len(expected))}"
    )


def assert_outputs(name: str, folder: Path, fixtures: Path) -> None:
    """``folder`` holds exactly the files case ``name`` writes, each identical to its fixture in ``fixtures``."""
    files = CASES[name][3]
    found = sorted(p.name for p in folder.iterdir())
    assert found == sorted(files), f"{name}: wrote {found}, expected {sorted(files)}"
    for file in files:
        assert_same_file(folder / file, fixtures / file)


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_are_byte_identical_to_the_pre_redesign_fixtures(run, tmp_path, expected, name):
    code, _, err = run(*argv(name, tmp_path))
    assert code == 0, err
    assert_outputs(name, tmp_path, expected)


# One child process runs every case, each in a forked grandchild that SIGKILLs itself right after its manifest
# first counts CHUNKS chunks (no timing: the tiny model does a chunk in milliseconds); torch is imported once.
_KILLED_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch, transformers  # imported once, before the forks (no thread pool starts on import)
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer
    from transformers import BertForMaskedLM, BertModel, BertTokenizerFast  # (lazy modules: the fixture model's)
    import tokenpool.jobs, tokenpool.model.encoder  # these too once, not in each fork (was 2 s CPU a case)
    from tokenpool.cli import main
    from tokenpool.io.workdir import WorkDir
    chunks = int(sys.argv[1])
    write = WorkDir.write_manifest
    def write_then_die(self, manifest, *args, **kwargs):
        write(self, manifest, *args, **kwargs)
        if manifest["chunks_done"] >= chunks:
            os.kill(os.getpid(), signal.SIGKILL)
    WorkDir.write_manifest = write_then_die
    statuses = []
    for args in json.loads(sys.argv[2]):
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(main(args) or 0)
            except BaseException:
                os._exit(1)
        statuses.append(os.waitpid(pid, 0)[1])
    print(json.dumps(statuses))
    """
)


def sigkill_after_chunks(runs: list[list[str]], chunks: int = 2) -> list[bool]:
    """Run each ``tokenpool`` argument list until ``chunks`` chunks are stored, then SIGKILL it; whether each
    was killed (rather than ending on its own)."""
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(chunks), json.dumps(runs)],
        env=ENV, capture_output=True, timeout=600, text=True,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    statuses = json.loads(child.stdout.strip().splitlines()[-1])
    return [os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses]


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict[str, Path]:
    """Every case SIGKILLed after its second chunk, each in its own folder (the spans case has exactly two: it
    is killed between its last chunk and the assembly)."""
    folders = {name: tmp_path_factory.mktemp(name) for name in CASES}
    outcome = sigkill_after_chunks([argv(name, folders[name]) for name in CASES])
    assert all(outcome), dict(zip(CASES, outcome, strict=True))
    return folders


@pytest.mark.parametrize("name", list(CASES))
def test_sigkill_then_resume_is_byte_identical(run, expected, killed, name):
    folder = killed[name]
    output = folder / CASES[name][1]
    assert not output.exists()  # nothing under the final name until complete
    manifest = json.loads((folder / f"{output.name}.tokenpool-partial" / "manifest.json").read_text())
    assert manifest["chunks_done"] == 2
    code, _, err = run(*argv(name, folder), "--resume")
    assert code == 0, err
    assert_outputs(name, folder, expected)


def write_fixtures(target: Path) -> None:
    """Run every case in-process and store its files, and this machine's kernel probe, in ``target``."""
    import tempfile

    from tokenpool.cli import main

    target.mkdir(exist_ok=False)  # a set is written once, never over another
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            assert main(argv(name, Path(tmp))) == 0, name
            for file in CASES[name][3]:
                shutil.copyfile(Path(tmp) / file, target / file)
    np.save(target / "kernel_probe.npy", kernel_probe())


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write" or not sys.argv[2].startswith("expected"):
        sys.exit("usage: PYTHONPATH=src python tests/test_jobs_fixtures.py --write expected-NAME")
    write_fixtures(FIXTURES / sys.argv[2])
