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


def _no_ray(*args, **kwargs):
    raise AssertionError("Ray was started before the device was checked")


@pytest.mark.parametrize("device", ["cuda:1", "cuda:2"])
def test_a_gpu_index_an_actor_cannot_see_is_refused_before_ray_starts(run, tiny_bert_folder, tmp_path, monkeypatch,
                                                                      device):  # fmt: skip
    """Ray shows each actor only the GPUs it gives it (its CUDA_VISIBLE_DEVICES), as cuda:0 on, so `--ray --device
    cuda:1` (one GPU per actor) could never run: Ray started, and then, without a GPU, the job was refused as
    "num_gpus=1 per actor, but no node ..." (a parameter the command line never took), with one, every actor
    failed on torch's invalid device ordinal. Now refused before Ray starts, naming the flag; Python's
    `embed_parquet` likewise, naming the parameter (num_gpus=2: cuda:1 is the actor's second GPU)."""
    import tokenpool.integrations.ray as tp_ray

    source = _jsonl(tmp_path / "in.jsonl")
    monkeypatch.setattr(tp_ray, "_ray_session", _no_ray)
    code, out, err = run("embed", source, "-o", tmp_path / "out", "--model", tiny_bert_folder, "--ray", "--device",
                         device)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"tokenpool embed: error: --device {device} names GPU {device[-1]}, but each Ray actor "
                          "sees only the 1 GPU(s) Ray gives it, from cuda:0; use --device cuda"), err  # fmt: skip
    with pytest.raises(ValueError, match=rf"^device='{device}' names GPU .*; use device='cuda'$"):
        tp_ray.embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), device=device,
                             num_gpus=1)  # fmt: skip
    if device == "cuda:1":  # not refused here: it fails on the machine without a GPU (no Ray: _no_ray)
        with pytest.raises(AssertionError, match="Ray was started"):
            tp_ray.embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), device=device,
                                 num_gpus=2)  # fmt: skip


@pytest.mark.parametrize(("lines", "why"), [('{"text": "a"}\n{"text":\n', "invalid JSON"),
                                            ('{"text": "a"}\n{"body": "b"}\n', "'text'")])  # fmt: skip
def test_a_read_error_in_the_calibration_sample_is_the_users(run, ray_session, tiny_bert_folder, tmp_path, lines, why):
    """int8 without --calibration reads its sample (the first rows) before the job: a bad line there (invalid
    JSON, a missing field) left Ray's wrapper unconverted, so `embed --ray` printed "failed:" and Ray's traceback
    with exit 1 and Python's `embed_parquet` raised a RayTaskError. Now as for float32: exit 2, one line naming
    the file and line; `CorpusError` in Python. (Both bad lines are refused by the one reading task, `_file_table`:
    the float32 job and Python's call run for the first only; every bad line's message:
    test_ray_jobs.test_ray_refuses_a_bad_jsonl_line_as_the_command_line_does.)"""
    from tokenpool.errors import CorpusError
    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / "bad.jsonl"
    source.write_text(lines, encoding="utf-8")
    first = why == "invalid JSON"
    for precision in ("float32", "int8") if first else ("int8",):
        code, out, err = run("embed", source, "-o", tmp_path / precision, "--model", tiny_bert_folder, "--ray",
                             "--precision", precision, "-q")  # fmt: skip
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("tokenpool embed: error: the Ray job failed: ") and "bad.jsonl, line 2: " in err, err
        assert why in err, err
    if first:
        with pytest.raises(CorpusError, match=r"bad\.jsonl, line 2: "):
            embed_parquet(str(source), str(tmp_path / "py"), model=str(tiny_bert_folder), precision="int8")


@pytest.mark.parametrize(("value", "checked"), [("1", False), ("TRUE", False), ("0", True), ("", True), ("false", True), ("no", True)])
def test_a_gpu_index_is_not_checked_where_ray_leaves_every_gpu_visible(tiny_bert_folder, tmp_path, monkeypatch,
                                                                       value, checked):  # fmt: skip
    """RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES "1" or "true" (Ray's env_bool) on the driver: Ray leaves every GPU visible to
    its actors, so cuda:1 is one an actor can use; it was refused as unseen. Now not checked there (the job goes
    on to Ray: `_no_ray`); unset, empty, "0", "false": refused as before (Ray sets each actor's GPUs)."""
    import tokenpool.integrations.ray as tp_ray

    monkeypatch.setenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", value)
    monkeypatch.setattr(tp_ray, "_ray_session", _no_ray)
    with pytest.raises(ValueError if checked else AssertionError, match="names GPU 1" if checked else "Ray was"):
        tp_ray.embed_parquet(str(_jsonl(tmp_path / "in.jsonl")), str(tmp_path / "out"), model=str(tiny_bert_folder),
                             device="cuda:1", num_gpus=1)  # fmt: skip
