"""Stop 49 (jobsfix): a --calibration that is the output's own calibration file is the user's input, never
deleted or rewritten by the job; the model-files fingerprint stamps every tokenizer file transformers reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, quantize
from tokenpool.io.storage import calibration_file_for, read_calibration
from tokenpool.jobs import skeleton

TEXTS = ["the cat sat on the mat", "a dog barked at night", "quantum fields and particles", "bread rises slowly",
         "rain on a tin roof", "the stock market fell"]  # fmt: skip


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    return path


def _hand_edited_sidecar(run, corpus: Path, out: Path) -> tuple[Path, bytes, Calibration]:
    """An int8 run's ``OUT.calibration.json``, then edited by hand: ranges widened, a note added, laid out
    otherwise than tokenpool writes it. Returns the file, its bytes and the calibration it holds."""
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration-size", "4")
    assert code == 0, err
    sidecar = calibration_file_for(out)
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    data["maximum"] = [m + 0.5 for m in data["maximum"]]
    data["extra"] = {**data["extra"], "note": "widened by hand"}
    sidecar.write_text(json.dumps(data, indent=3) + "\n", encoding="utf-8")
    edited = Calibration.load(sidecar)
    assert edited.extra["note"] == "widened by hand" and edited.maximum[0] == np.float32(data["maximum"][0])
    return sidecar, sidecar.read_bytes(), edited


def test_a_calibration_given_as_the_outputs_own_sidecar_is_kept_as_the_user_wrote_it(run, tmp_path, corpus, encoder):
    """``--calibration OUT.calibration.json`` (hand-edited): the job deleted it while placing its output and
    wrote its own text in its place; now the file stays, byte for byte (the same file), and describes the rows,
    which are quantized with the ranges it holds."""
    out = tmp_path / "c.npy"
    sidecar, before, edited = _hand_edited_sidecar(run, corpus, out)
    inode = sidecar.stat().st_ino
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", sidecar)
    assert code == 0, err
    assert sidecar.read_bytes() == before and sidecar.stat().st_ino == inode
    assert read_calibration(out) == edited
    floats = encoder.encode(TEXTS, batch_size=32)
    np.testing.assert_array_equal(np.load(out), quantize(floats, "int8", edited))


def test_a_failure_while_placing_the_output_leaves_the_given_calibration_file(run, tmp_path, corpus, monkeypatch):
    """The side files were removed before the output was renamed into place: a failure (or a kill) there lost
    the user's --calibration file; now it is never touched."""
    out = tmp_path / "c.npy"
    sidecar, before, _ = _hand_edited_sidecar(run, corpus, out)
    real = skeleton.replace_synced

    def failing(source: Path, target: Path) -> None:
        if Path(target) == out:
            raise OSError(5, "Input/output error (injected)")
        real(source, target)

    monkeypatch.setattr(skeleton, "replace_synced", failing)
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", sidecar)
    assert code == 2 and "injected" in err, err
    assert sidecar.read_bytes() == before


def test_a_given_sidecar_changed_while_the_job_ran_is_left_and_the_job_fails(run, tmp_path, corpus, monkeypatch):
    """The sidecar held the --calibration the rows are quantized with when the job started and holds another one
    when the output is placed: it is the user's file, so it is not replaced; the job says so (exit 2) and its
    chunks stay for --resume."""
    out = tmp_path / "c.npy"
    sidecar, _, edited = _hand_edited_sidecar(run, corpus, out)
    old_output = out.read_bytes()
    changed = json.dumps({**edited.to_dict(), "texts": 99}, indent=3) + "\n"
    real = skeleton.run_chunks

    def editing(*args, **kwargs):
        real(*args, **kwargs)
        sidecar.write_text(changed, encoding="utf-8")  # the user edits it again, mid-job

    monkeypatch.setattr(skeleton, "run_chunks", editing)
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", sidecar)
    assert code == 2 and str(sidecar) in err and "changed while the job ran" in err, err
    assert sidecar.read_text(encoding="utf-8") == changed and out.read_bytes() == old_output
    assert os.path.isdir(f"{out}.tokenpool-partial")
