"""Stop 64, f-ray: Ray actors that would take every CPU of a cluster that cannot scale up are refused."""

from __future__ import annotations

import threading

import pytest


def _refusal(ray, monkeypatch, tmp_path, **options):
    """What `embed_parquet` raises on a two-row parquet file, run with a guard so a hang fails the test (60 s)
    instead of blocking it; reading the input (Ray work) before the refusal is an error of its own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import embed_parquet

    def read(*args, **kwargs):
        raise AssertionError("the input was read (Ray work) before the CPUs were checked")

    monkeypatch.setattr(ray.data, "read_parquet", read)
    pq.write_table(pa.table({"text": ["x", "y"]}), tmp_path / "in.parquet")
    caught: list[BaseException] = []

    def job() -> None:
        try:
            embed_parquet(str(tmp_path / "in.parquet"), str(tmp_path / "out"), device="cpu", **options)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            caught.append(exc)

    worker = threading.Thread(target=job, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "embed_parquet did not return: Ray waits for CPUs forever"
    assert len(caught) == 1 and isinstance(caught[0], ValueError), caught
    assert not (tmp_path / "out").exists()
    return str(caught[0])


def test_defaults_on_a_one_cpu_cluster_are_refused_not_left_waiting(ray_session, monkeypatch, tmp_path):
    """ray.init(num_cpus=1) then embed_parquet("in.parquet", "out", device="cpu") waited forever ("Active &
    requested resources: 2/1 CPU"): the one actor took the only CPU and the read task never ran."""
    one_cpu = [{"Alive": True, "Resources": {"CPU": 1.0, "memory": 1e9}}]
    monkeypatch.setattr(ray_session, "nodes", lambda: one_cpu)
    message = _refusal(ray_session, monkeypatch, tmp_path)
    for said in ("concurrency=1", "num_cpus=1", "1 CPU(s)", "num_cpus= (at most 0 each"):
        assert said in message, message


@pytest.mark.parametrize(("options", "said"), [
    ({"concurrency": 2}, ("concurrency=2", "num_cpus=1 each", "take 2 of", "2 CPU(s)", "at most 0.5 each")),
    ({"concurrency": (3, 4), "num_cpus": 0.5}, ("concurrency=3", "num_cpus=0.5 each", "take 1.5 of")),
])  # fmt: skip
def test_actors_taking_the_session_cpus_are_refused(ray_session, monkeypatch, tmp_path, options, said):
    """The shared 2-CPU session (nothing to scale up): actors that leave less than the one CPU a read task asks
    for are refused, naming concurrency (a range's minimum, the actors always started), num_cpus and the CPUs."""
    cpus = sum(node["Resources"].get("CPU", 0) for node in ray_session.nodes() if node.get("Alive"))
    assert cpus == 2
    message = _refusal(ray_session, monkeypatch, tmp_path, **options)
    assert all(part in message for part in said), message
