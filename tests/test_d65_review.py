"""Stop 65 review d (s65-jobs): output paths are named by `errors.shown_name`, never as stdin."""

from __future__ import annotations

import pytest

from tokenpool.io.storage import read_calibration


@pytest.mark.parametrize(
    ("output", "shown", "sidecar"),
    [
        ("-", "-", "-.calibration.json"),  # a file named "-": `where` would say <stdin>
        ("a b.npy", "a b.npy", "a b.npy.calibration.json"),
        ("a\nb.npy", "'a\\nb.npy'", "'a\\nb.npy.calibration.json'"),
    ],
)
def test_read_calibration_names_the_output_as_given(tmp_path, monkeypatch, output, shown, sidecar):
    """``read_calibration("-")`` said "<stdin>: no calibration beside it (-.calibration.json) ..." since the
    s65-jobs fix (`io.readers.where` names the path "-" <stdin>); before it, and now, the name is "-"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as caught:
        read_calibration(output)
    assert str(caught.value) == f"{shown}: no calibration beside it ({sidecar}) or in its metadata"
