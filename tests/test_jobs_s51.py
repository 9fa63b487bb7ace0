"""Stop 51: a calibration file the user gave is read, never rewritten (Ray as `tokenpool embed`); the model
fingerprint covers every byte of the weights; a calibration records its long-document mode."""

from __future__ import annotations

import json

import pytest

from tokenpool.core.quantize import Calibration

TEXTS = [f"text number {i} of the corpus, {'with more words ' * (i % 4)}end" for i in range(8)]


@pytest.fixture(scope="module")
def ray_data(ray_session):
    pytest.importorskip("transformers")
    pytest.importorskip("pyarrow")
    return pytest.importorskip("ray.data")


# ------------------------------------------------ 1. Ray: a given calibration beside the output is only read


def _hand_layouts(calibration: Calibration) -> dict[str, str]:
    """The calibration as a user may have laid it out: compact, or indented with a key of their own."""
    data = {**calibration.to_dict(), "note": "calibrated on the November corpus"}
    return {"compact": json.dumps(data, separators=(",", ":")), "indented": json.dumps(data, indent=4) + "\n"}


@pytest.mark.parametrize("layout", ["compact", "indented"])
def test_ray_reads_a_given_calibration_beside_its_output_and_leaves_it_as_it_is(
    ray_data, tiny_bert_folder, tmp_path, layout
):
    """`embed_parquet(calibration=OUT.calibration.json)` uses that file and leaves its bytes alone, as
    `tokenpool embed --calibration OUT.calibration.json` does (was: a compact file refused as not tokenpool's,
    an indented one rewritten in tokenpool's layout, the user's own key dropped)."""
    from tokenpool import Encoder
    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    calibration = Encoder(str(tiny_bert_folder)).calibrate(TEXTS)
    beside = tmp_path / "out.calibration.json"
    text = _hand_layouts(calibration)[layout]
    beside.write_text(text, encoding="utf-8")
    used = embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), precision="int8",
                         calibration=str(beside), concurrency=1)  # fmt: skip
    assert used == calibration
    assert beside.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out", "out.calibration.json"]


def test_ray_refuses_a_given_calibration_beside_its_output_that_changed_while_the_job_ran(
    ray_data, tiny_bert_folder, tmp_path, monkeypatch
):
    """The file given, changed by its user during the job, is neither put back nor replaced: refused, as
    `tokenpool embed` refuses it."""
    from tokenpool import Encoder
    from tokenpool.errors import CorpusError
    from tokenpool.integrations import ray as tp_ray

    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    encoder = Encoder(str(tiny_bert_folder))
    beside = encoder.calibrate(TEXTS).save(tmp_path / "out.calibration.json")
    edited = encoder.calibrate(TEXTS[:3]).file_text()
    write = tp_ray._write

    def write_then_edit(*args, **kwargs):
        write(*args, **kwargs)
        beside.write_text(edited, encoding="utf-8")

    monkeypatch.setattr(tp_ray, "_write", write_then_edit)
    with pytest.raises(CorpusError, match="out.calibration.json: changed while the job ran"):
        tp_ray.embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), precision="int8",
                             calibration=str(beside), concurrency=1)  # fmt: skip
    assert beside.read_text(encoding="utf-8") == edited
