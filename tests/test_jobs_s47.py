"""Stop 47's hunt of the corpus jobs: each case a bug a user met, checked against an independent reference (the
request as the caller wrote it, the disk as it was before the job)."""

from __future__ import annotations

import pytest

from tokenpool.errors import OptionError
from tokenpool.jobs import EmbedJob, EncodeRequest, check_job


@pytest.mark.parametrize("rows", [{}, {"chunks": "tokens:4"}])
@pytest.mark.parametrize("call, said", [
    ({"normalize": False}, "normalize=False"), ({"truncate_dim": 8}, "truncate_dim=8"),
    ({"pooling": "max"}, "pooling='max'"), ({"finish": False}, "finish=False"),
])  # fmt: skip
def test_a_per_call_finishing_option_in_a_job_request_is_refused(tmp_path, rows, call, said):
    """A job's request with its own pooling, truncate_dim, normalize or finish=False was silently ignored for
    pooled vectors (unit-length 384-wide rows came out of normalize=False, truncate_dim=8), honoured for chunk
    rows but missing from the manifest (a resume could mix rows of both settings): refused before any model
    loads, naming the field, and nothing written."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("one\ntwo\n")
    job = EmbedJob(str(src), str(out), EncodeRequest(**rows, **call))
    with pytest.raises(OptionError, match=f"^{said}: a job writes the encoder's own"):
        check_job(job)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
