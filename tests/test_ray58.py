"""Ray jobs against the command line's own behaviour: empty inputs, outputs refused before Ray starts,
upper-case compression suffixes, calibrations made with the job's batch options (stop 58)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

import pyarrow.parquet as pq  # noqa: E402

import tokenpool.integrations.ray as tp_ray  # noqa: E402
from tokenpool import Encoder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

TEXTS = ["cats purr", "dogs bark at night and all day long", "a longer sentence about pooling tokens", "x"]


def _jsonl(path, texts=TEXTS):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _no_ray(*args, **kwargs):
    raise AssertionError("Ray was started before the output was checked")


def test_a_dangling_symlink_out_is_refused_before_ray_starts(run, tiny_bert_folder, tmp_path, monkeypatch):
    """OUT a dangling symlink: pyarrow saw nothing there, so Ray started, read and embedded, and only the writer
    failed, with pyarrow's "[Errno 17] Cannot create directory ...: non-directory entry exists". Now refused
    before Ray starts, naming OUT, from `embed_parquet` and `tokenpool embed --ray` alike; the link is kept."""
    source = _jsonl(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "missing" / "folder")
    monkeypatch.setattr(tp_ray, "_ray_session", _no_ray)
    with pytest.raises(FileExistsError, match=f"^{out} is a dangling symlink; the Ray job writes a folder"):
        tp_ray.embed_parquet(str(source), str(out), model=str(tiny_bert_folder))
    code, _, err = run("embed", source, "-o", out, "--model", tiny_bert_folder, "--ray")
    assert code == 2 and err.count("\n") == 1 and f"{out} is a dangling symlink" in err, err
    assert out.is_symlink() and not out.exists()
