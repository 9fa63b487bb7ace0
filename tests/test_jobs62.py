"""Stop 62, corpus jobs, io and Ray: defects found at the edges of options, inputs and the docs."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.errors import CorpusError
from tokenpool.jobs import EmbedJob, check_job


@pytest.mark.parametrize(("name", "value"), [("chunk_size", 0), ("block_size", -1), ("checkpoint_seconds", -1.0)])
def test_a_python_jobs_bad_size_is_named_as_its_parameter(tmp_path, name, value):
    """docs/cli.md: "A message names an option as you typed it ..., where Python callers see the parameter". Only
    Python callers reach these checks (the command line refuses its flags' bad values first), yet a bad
    ``EmbedJob(chunk_size=0)`` was named ``--chunk-size`` (``checkpoint_seconds`` likewise)."""
    source = tmp_path / "in.txt"
    source.write_text("a cat\n", encoding="utf-8")
    job = EmbedJob(str(source), str(tmp_path / "out.npy"), **{name: value})
    with pytest.raises(CorpusError) as caught:
        check_job(job)
    assert str(caught.value).startswith(f"{name} must be "), caught.value
    assert "--" not in str(caught.value), caught.value


@pytest.mark.parametrize("seconds", [np.int64(5), np.float32(0.5)])
def test_a_numpy_checkpoint_seconds_is_a_number(tmp_path, seconds):
    """``EmbedJob(checkpoint_seconds=np.int64(5))`` was refused as not "a number >= 0" (only Python's int and
    float passed), where ``chunk_size=np.int64(…)`` is taken: numpy's real numbers are numbers too."""
    source = tmp_path / "in.txt"
    source.write_text("a cat\n", encoding="utf-8")
    check_job(EmbedJob(str(source), str(tmp_path / "out.npy"), checkpoint_seconds=seconds))
