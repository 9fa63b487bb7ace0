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


# ------------------------------------------------- 2. the model fingerprint covers every byte of the weights


def _add_to_tensor(weights, name: str, amount: float) -> None:
    """Add ``amount`` to the even values of the float32 tensor ``name`` of a safetensors file and subtract it from
    the odd ones (a change a LayerNorm after it does not take out), in place: the file keeps its size."""
    import struct

    import numpy as np

    with open(weights, "r+b") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        start, stop = json.loads(fh.read(size))[name]["data_offsets"]
        fh.seek(8 + size + start)
        values = np.frombuffer(fh.read(stop - start), dtype="<f4").copy()
        values[0::2] += np.float32(amount)
        values[1::2] -= np.float32(amount)
        fh.seek(8 + size + start)
        fh.write(values.astype("<f4").tobytes())


def test_a_calibration_is_refused_for_weights_changed_anywhere(tiny_bert_folder, tmp_path):
    """A bias of the last layer changed (bytes the 16 × 4 KiB samples of the weights never read): the model gives
    other vectors, so its id differs and the calibration made for the old weights is refused (was: the same id,
    the old ranges accepted for the new vectors)."""
    import shutil

    import numpy as np

    from tokenpool import Encoder
    from tokenpool.core.quantize import CalibrationMismatch

    folder = shutil.copytree(tiny_bert_folder, tmp_path / "model")
    old = Encoder(str(folder))
    calibration, before = old.calibrate(TEXTS), old.encode(TEXTS)
    _add_to_tensor(folder / "model.safetensors", "encoder.layer.1.output.dense.bias", 0.5)
    new = Encoder(str(folder))
    assert not np.allclose(new.encode(TEXTS), before, atol=1e-3)  # another model
    assert new.model_id != calibration.model_id
    with pytest.raises(CalibrationMismatch, match="the calibration is for another model"):
        calibration.check_encoder(new)


def test_the_fingerprint_of_an_onnx_model_covers_its_external_weights(tmp_path):
    """An ONNX model over 2 GiB keeps its weights in files beside the graph (``model.onnx_data``,
    ``model.onnx.data``): other weights there are another model (was: the graph alone fingerprinted)."""
    from tokenpool.model.outputs import model_fingerprint

    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "model.onnx").write_bytes(b"graph naming model.onnx_data" * 10)
    ids = []
    for name, weights in (("model.onnx_data", b"\0" * 100_000), ("model.onnx_data", b"\0" * 99_999 + b"\1"),
                          ("model.onnx.data", b"\0" * 100_000)):  # fmt: skip
        for old in onnx.glob("model.onnx?data"):
            old.unlink()
        (onnx / name).write_bytes(weights)
        ids.append(model_fingerprint(tmp_path))
    assert len(set(ids)) == 3, ids


def test_small_weights_keep_their_earlier_id_and_a_sampled_id_is_refused_saying_why(tiny_bert_folder):
    """Weights of files up to 64 KiB keep the id earlier versions gave them (their samples read every byte): the
    committed fixture model's is the one its stored calibration holds. A calibration with an earlier version's
    id for larger weights is refused, saying why and what to do, not as "another model"."""
    from pathlib import Path

    from tokenpool import Encoder
    from tokenpool.core.quantize import CalibrationMismatch
    from tokenpool.model.outputs import model_fingerprint

    fixtures = Path(__file__).parent / "fixtures" / "jobs"
    stored = Calibration.load(fixtures / "expected" / "int8.npy.calibration.json")
    assert model_fingerprint(fixtures / "model") == stored.model_id
    encoder = Encoder(str(tiny_bert_folder))
    sampled = {**encoder.calibrate(TEXTS).to_dict(), "model_id": "sha256:" + "0" * 64}
    with pytest.raises(CalibrationMismatch, match="model_id of an earlier tokenpool .* calibrate again, or set its"):
        Calibration.from_dict(sampled).check_encoder(encoder)


# ------------------------------------------- more files a job did not create: refused, never replaced


@pytest.mark.parametrize("precision", ["float32", "binary"])
def test_a_job_given_a_calibration_at_another_precision_never_replaces_a_foreign_sidecar(
    tiny_bert_folder, tmp_path, precision
):
    """A Python caller may pass a calibration along at any precision; the job then writes it beside the output,
    and replaced whatever file was there (the check that refuses a file not tokenpool's ran for int8/uint8
    only): now refused before the model runs, the file untouched, as for int8."""
    from tokenpool import Encoder
    from tokenpool.errors import CorpusError
    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    encoder = Encoder(str(tiny_bert_folder))
    given = encoder.calibrate(TEXTS).save(tmp_path / "given.json")
    mine = tmp_path / "out.npy.calibration.json"
    mine.write_text('{"my": "notes"}\n', encoding="utf-8")
    job = EmbedJob(str(source), str(tmp_path / "out.npy"), EncodeRequest(precision=precision, calibration=str(given)))
    with pytest.raises(CorpusError, match="out.npy.calibration.json exists and is not a tokenpool calibration"):
        embed_corpus(encoder, job, log=lambda message: None)
    assert mine.read_text(encoding="utf-8") == '{"my": "notes"}\n'


@pytest.mark.parametrize("points_to", ["a calibration", "nothing"])
def test_ray_never_replaces_a_symlink_where_it_writes_the_calibration(ray_data, tiny_bert_folder, tmp_path, points_to):
    """``OUT.calibration.json`` a symlink (to a tokenpool calibration, or dangling) is the user's: refused before
    Ray starts, as `tokenpool embed` refuses it (was: read through, then replaced by a file of the job's)."""
    from tokenpool import Encoder
    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    encoder = Encoder(str(tiny_bert_folder))
    given = encoder.calibrate(TEXTS).save(tmp_path / "given.json")
    real = tmp_path / "real.json"
    if points_to == "a calibration":
        encoder.calibrate(TEXTS[:4]).save(real)
    link = tmp_path / "out.calibration.json"
    link.symlink_to(real)
    with pytest.raises(FileExistsError, match="out.calibration.json exists and is not a tokenpool calibration"):
        embed_parquet(str(source), str(tmp_path / "out"), model=str(tiny_bert_folder), precision="int8",
                      calibration=str(given), concurrency=1)  # fmt: skip
    assert link.is_symlink() and not (tmp_path / "out").exists()
