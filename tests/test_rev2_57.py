"""Stop 57, second review: defects found in the stop's ONNX export fixes and SHRINK commits, each pinned against
the documented behaviour or an independent reference."""

from __future__ import annotations

import os

import pytest


def test_a_failed_record_never_removes_a_file_someone_put_at_the_target(tmp_path, monkeypatch):
    """Tokenpool never deletes a file a job did not create (docs/runtimes.md: nothing is ever replaced). When the
    record's link failed, `_publish` removed whatever then stood at the target: a file someone had renamed there
    after the export's own link (e.g. `mv mine.onnx model_opt.onnx`) was deleted."""
    from tokenpool.errors import CorpusError
    from tokenpool.model import onnx_export

    work, target = tmp_path / "work", tmp_path / "model_opt.onnx"
    work.mkdir()
    made = work / "stamped.onnx"
    made.write_bytes(b"the export's bytes")
    link = onnx_export.link_into_place

    def link_then_someone_replaces_the_target(source, destination):
        if destination == onnx_export.record_path(target):  # (the record's link, after the file's)
            mine = tmp_path / "mine.onnx"
            mine.write_bytes(b"someone else's model")
            os.replace(mine, target)
            raise CorpusError(f"{destination} already exists")
        link(source, destination)

    monkeypatch.setattr(onnx_export, "link_into_place", link_then_someone_replaces_the_target)
    with pytest.raises(CorpusError, match="already exists"):
        onnx_export._publish(made, target, {})
    assert target.read_bytes() == b"someone else's model"
    assert not onnx_export.record_path(target).exists()
