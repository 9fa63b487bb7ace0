"""Stop 48's hunt of the corpus jobs: what a resumed job reuses, and what a kill leaves beside the output."""

from __future__ import annotations

import os

import pytest

from tokenpool import Encoder
from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus


class Killed(BaseException):
    """A kill at a chosen step (BaseException: what the job does on SIGINT/SIGKILL alike, nothing caught)."""


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


def _beside(out):
    """The files beside the output (not its work folder), by name."""
    return {p.name: p.read_bytes() for p in out.parent.iterdir() if p.is_file() and p.name.startswith(out.name)}


ROWS = [({"precision": "int8", "calibration_size": 3}, True), ({"output": "tokens"}, False),
        ({"chunks": "tokens:4"}, True), ({}, True)]  # fmt: skip


@pytest.mark.parametrize("request_fields, skip", ROWS)
def test_a_kill_while_the_output_goes_into_place_leaves_no_side_file_of_another_output(
    encoder, tmp_path, monkeypatch, request_fields, skip
):
    """A job killed after its output was renamed into place but before its side files (calibration, --skip-empty
    line numbers, .npy row index) left an earlier run's side files beside the new output: int8 codes read with
    another calibration, rows matched to other lines. Killed after each rename or delete beside the output: the
    side files there are the output's own or absent, and --resume writes what an uninterrupted run writes."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"

    def job(texts, resume=False, output=out):
        src.write_text("\n".join(texts) + "\n")
        return EmbedJob(str(src), str(output), EncodeRequest(**request_fields), chunk_size=2, skip_empty=skip,
                        resume=resume)  # fmt: skip

    old = [f"an older sentence {i}" for i in range(5)] + ["", "old end"]
    new = [f"sentence {i} about topic {i % 3}" for i in range(6)] + ["", "new end"]
    (tmp_path / "ref").mkdir()
    embed_corpus(encoder, job(new, output=tmp_path / "ref" / "out.npy"))  # the uninterrupted run
    reference = _beside(tmp_path / "ref" / "out.npy")
    real_replace, real_unlink, steps = os.replace, os.unlink, []

    def step(operation):
        def done(path, *args, **kwargs):
            operation(path, *args, **kwargs)
            target = os.fspath(args[0] if operation is real_replace else path)
            if os.path.dirname(os.path.abspath(target)) == str(tmp_path):  # beside the output
                steps.append(target)
                if len(steps) == kill_at:
                    raise Killed

        return done

    kill_at = 0
    embed_corpus(encoder, job(old))
    before = _beside(out)
    monkeypatch.setattr(os, "replace", step(real_replace))
    monkeypatch.setattr(os, "unlink", step(real_unlink))
    embed_corpus(encoder, job(new))
    count = len(steps)
    assert count >= 2 and _beside(out) == reference
    for kill_at in range(1, count + 1):
        for name in list(_beside(out)):
            (tmp_path / name).unlink()
        for name, data in before.items():
            (tmp_path / name).write_bytes(data)
        steps.clear()
        with pytest.raises(Killed):
            embed_corpus(encoder, job(new))
        left = _beside(out)
        side = reference if left.get(out.name) == reference[out.name] else before
        mixed = {name for name in left if name != out.name and left[name] != side.get(name)}
        assert not mixed, f"killed at step {kill_at} of {count}: {sorted(mixed)} beside another output"
        embed_corpus(encoder, job(new, resume=True))
        assert _beside(out) == reference

