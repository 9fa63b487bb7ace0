"""Ray jobs against the command line's own behaviour (stop 59): the windows calibration's grouping, .json.bz2
inputs, device strings Ray cannot honour, an actor that fails to start."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

import pyarrow.parquet as pq  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

WORDS = ["pooling", "windows", "tokens", "chunks", "late", "naive", "documents", "spans", "stride", "budget"]
# with --max-length 16 (14 text tokens a window) the longer texts are many windows
TEXTS = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(n)) for i, n in enumerate((3, 40, 7, 25, 2, 60, 11))]


def _jsonl(path, texts=TEXTS):
    path.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


@pytest.fixture
def one_thread():
    """torch on one thread, as in a Ray worker of one CPU (a thread count changes a matmul's last bits too)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_windows_calibration_groups_texts_as_the_cli_does(run, ray_session, tiny_bert_folder, tmp_path, one_thread):
    """int8 with --long-documents windows: `tokenpool embed` calibrates --batch-size documents at a time (their
    windows batched together); Ray's calibration task read every calibration text's windows as one group, so
    its ranges (and the rows' parquet metadata) differed from the command line's in the last bits. Now the same
    calibration as `tokenpool embed`, exactly, in the sidecar and in the rows' metadata."""
    rnd = random.Random(2)  # texts of 3 to 56 words, whose windows' batches differ by grouping
    texts = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 60))) for _ in range(7)]
    source = _jsonl(tmp_path / "in.jsonl", texts)
    flags = ["--model", tiny_bert_folder, "--precision", "int8", "--batch-size", "2", "--max-length", "16",
             "--long-documents", "windows", "-q"]  # fmt: skip
    code, _, err = run("embed", source, "-o", tmp_path / "cli.parquet", *flags)
    assert code == 0, err
    code, _, err = run("embed", source, "-o", tmp_path / "ray", *flags, "--ray")
    assert code == 0, err
    cli = json.loads((tmp_path / "cli.parquet.calibration.json").read_text())
    assert json.loads((tmp_path / "ray.calibration.json").read_text()) == cli
    assert pq.read_table(tmp_path / "ray").schema.metadata == pq.read_table(tmp_path / "cli.parquet").schema.metadata


def test_a_bz2_json_input_is_read(run, ray_session, tiny_bert_folder, tmp_path):
    """``in.json.bz2``: Ray's `read_json` keeps only names in its own extension list, which has .json.gz but not
    .json.bz2, so the job failed with "No input files found to read with the following file extensions: [...]"
    (.jsonl/.csv/.txt .bz2 worked). Now read, its rows as the records (and vectors as `tokenpool embed`'s)."""
    import bz2

    import numpy as np

    lines = "".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(TEXTS))
    (tmp_path / "in.json.bz2").write_bytes(bz2.compress(lines.encode()))
    (tmp_path / "in.jsonl").write_text(lines, encoding="utf-8")
    code, _, err = run("embed", tmp_path / "in.jsonl", "-o", tmp_path / "cli.npy", "--model", tiny_bert_folder, "-q")
    assert code == 0, err
    code, _, err = run("embed", tmp_path / "in.json.bz2", "-o", tmp_path / "ray", "--model", tiny_bert_folder,
                       "--ray", "-q")  # fmt: skip
    assert code == 0, err
    table = pq.read_table(tmp_path / "ray")
    assert table.column_names == ["text", "n", "embedding"]
    assert table.column("text").to_pylist() == TEXTS and table.column("n").to_pylist() == list(range(len(TEXTS)))
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, np.load(tmp_path / "cli.npy"), atol=1e-6)
