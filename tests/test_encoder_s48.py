"""Stop 48 hunt in the Encoder facade and its integrations: each test failed before its fix."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def ray_data(ray_session):
    pytest.importorskip("pyarrow")
    import ray

    return ray


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("options", "message"), [
    ({"num_gpus": 1}, r"num_gpus=1 per actor, but no node"),
    ({"num_cpus": 64}, r"num_cpus=64 per actor, but no node"),
    ({"num_gpus": 0.5, "num_cpus": 1}, r"num_gpus=0.5, num_cpus=1 per actor"),
])  # fmt: skip
def test_ray_refuses_actors_no_node_can_hold(ray_data, options, message):
    """embed_dataset(num_gpus=1) on a cluster without a GPU hung: Ray Data waited forever for a node that fits.
    Now a ValueError naming the request, before any actor starts."""
    from tokenpool.integrations.ray import embed_dataset

    ds = ray_data.data.from_items([{"text": "a"}])
    with pytest.raises(ValueError, match=message):
        embed_dataset(ds, **options)
    embed_dataset(ds, num_cpus=1)  # what a node holds is lazily accepted


def test_ray_leaves_an_autoscaling_cluster_to_scale_up(ray_data, monkeypatch):
    """A cluster whose config may start a GPU node is not refused (the job waits for the node), one whose node
    types have no GPU (or may not be started: max_count 0) is."""
    import ray._private.state as ray_state

    from tokenpool.integrations.ray import embed_dataset

    ds = ray_data.data.from_items([{"text": "a"}])

    def config(gpus: float, max_count: int):
        group = SimpleNamespace(resources={"CPU": 8.0, "GPU": gpus}, max_count=max_count)
        return lambda: SimpleNamespace(node_group_configs=[group])

    monkeypatch.setattr(ray_state.state, "get_cluster_config", config(1.0, -1))
    embed_dataset(ds, num_gpus=1)
    for gpus, max_count in ((0.0, 4), (1.0, 0)):
        monkeypatch.setattr(ray_state.state, "get_cluster_config", config(gpus, max_count))
        with pytest.raises(ValueError, match="num_gpus=1 per actor"):
            embed_dataset(ds, num_gpus=1)


def test_ray_int8_calibration_task_is_refused_not_left_waiting(ray_data, tiny_bert_folder, tmp_path):
    """embed_parquet's calibration task asked for the actors' GPU and waited forever for it (concurrency given,
    so the one-actor-per-GPU default did not look at the cluster first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import embed_parquet

    pq.write_table(pa.table({"text": ["a b", "c d"]}), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match="num_gpus=1, num_cpus=1 per actor"):
        embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(tiny_bert_folder),
                      pooling="mean", precision="int8", concurrency=1, num_gpus=1)  # fmt: skip
