"""Review of stop 56's model/cli/evaluation changes (rev2)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tokenpool.model.options import EncoderOptions  # noqa: E402


@pytest.mark.parametrize("device", [0, 1])
def test_int_gpu_index_still_checks_for_the_torch_runtime(device: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch reads an int as a GPU index (torch.device(0) is cuda:0 on a CUDA machine); EncoderOptions.check (run
    by every Encoder and Ray driver, no device used) took it before this stop's device_parts ran for every runtime.
    Without a GPU here, torch.device reads an int as it does on a CUDA machine."""
    if not torch.cuda.is_available():
        real = torch.device
        monkeypatch.setattr(torch, "device", lambda *a: real("cuda", a[0]) if a and type(a[0]) is int else real(*a))
    assert torch.device(device) == torch.device("cuda", device)  # the reference: torch's own reading
    assert EncoderOptions(device=device).check().device == device
