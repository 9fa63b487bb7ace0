"""Command-line corners found at stop 34: `embed --ray` started Ray on a missing input (and read stdin as a
parquet path)."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line


@pytest.fixture
def no_ray(monkeypatch):
    """`embed_parquet` (which starts Ray) must not be reached."""
    ray_integration = pytest.importorskip("tokenpool.integrations.ray")

    def started(*_: object, **__: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_integration, "embed_parquet", started)


@pytest.mark.parametrize(
    ("name", "needle"),
    [("missing.txt", "missing.txt: no such file"), ("missing.parquet", "missing.parquet: no such file"),
     ("-", "not stdin")],
)  # fmt: skip
def test_ray_refuses_an_input_it_cannot_read_before_ray_starts(run, tmp_path, no_ray, name, needle):
    source = name if name == "-" else str(tmp_path / name)
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--ray")
    assert_one_error_line(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_ray_refuses_an_unreadable_folder_before_ray_starts(run, tmp_path, no_ray):
    import os

    folder = tmp_path / "shards"
    folder.mkdir()
    folder.chmod(0o000)
    try:
        if os.access(folder, os.R_OK):  # root reads everything: nothing to refuse
            pytest.skip("running as a user who can read any folder")
        code, _, err = run("embed", folder, "-o", tmp_path / "out", "--ray")
    finally:
        folder.chmod(0o700)
    assert_one_error_line(code, err, "cannot read it")
