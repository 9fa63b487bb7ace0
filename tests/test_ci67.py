"""Stop 67's CI-time and Ray checks: a failed Ray job frees its actors at once."""

from __future__ import annotations

import gc
import time

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tokenpool.errors import CorpusError  # noqa: E402
from tokenpool.io.readers import iter_records  # noqa: E402


def _embed_batch_actors() -> dict[str, str]:
    """The state of every `EmbedBatch` actor Ray has made in this session, by actor id."""
    from ray._private.state import state

    return {actor_id: actor["State"] for actor_id, actor in state.actor_table(None).items()
            if "EmbedBatch" in actor["ActorClassName"]}  # fmt: skip


def test_a_failed_job_ends_its_actors_before_it_raises(ray_session, tiny_bert_folder, tmp_path):
    """A job that fails on bad input (a null text) still names the file and row, and its actor, which holds the
    model and a CPU (or a GPU), is gone without waiting for Python's garbage collector (was: Ray Data drops its
    handles in a reference cycle, so the actor lived on until a collection ran, and the next job waited for its
    CPU: 25 s of a 38 s test; a GPU job on a one-GPU node waited for that GPU). Also, merged here (the same job
    on the same path): test_integration_ray.test_bad_input_raises_named_errors's null text (the worker's error
    re-raised as the user's type) and test_ray_jobs.test_ray_names_the_file_of_a_folder_that_holds_a_null_text
    (an input folder: the file with the null, and its row; was: "column 'text' has 1 null value(s) in a batch",
    naming no file)."""
    from tokenpool.integrations.ray import embed_parquet

    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": [0], "text": ["fine"]}), folder / "a.parquet")
    source = folder / "b.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", None, "c"]}), source)
    with pytest.raises(CorpusError) as expected:  # the command line's reader: the reference message
        list(iter_records(str(source), "parquet"))
    before = set(_embed_batch_actors())
    gc.disable()  # (a collection would end the actor whatever the job does)
    try:
        with pytest.raises(CorpusError) as caught:
            embed_parquet(str(folder), str(tmp_path / "out"), model=str(tiny_bert_folder), concurrency=1)
        assert str(caught.value) == str(expected.value) == f"{source}, row 2: column 'text' is null"
        deadline = time.monotonic() + 20
        while True:
            states = {key: state for key, state in _embed_batch_actors().items() if key not in before}
            assert states, "the job started no actor"
            if all(state == "DEAD" for state in states.values()):
                break
            assert time.monotonic() < deadline, f"the failed job's actors are still {states}"
            time.sleep(0.1)
    finally:
        gc.enable()
