"""Stop 46 bug hunt in the quantised outputs: the model fingerprint a calibration is checked against, the
`Calibration` fields, `unpack_signs`' precision."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from tinymodels import HIDDEN, bert_weights

from tokenpool import Encoder
from tokenpool.core.quantize import CalibrationMismatch

TEXTS = [f"text number {i} about {topic}" for i in range(10) for topic in ("cats", "rain")]


def _dense_head_folder(folder, seed: int):
    """The same transformer weights (seed 0), then mean pooling and a Dense 32 → 16 head drawn with ``seed``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    bert_weights(folder)
    torch.manual_seed(seed)
    modules = [Transformer(str(folder), max_seq_length=48), Pooling(HIDDEN, "mean"), Dense(HIDDEN, 16)]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def test_a_calibration_is_refused_for_a_model_with_another_dense_head(tmp_path):
    """Two models sharing their transformer weights but not their Dense head had one model_id (only the
    transformer's weight files were fingerprinted): a calibration of one was used for the other without a word,
    and ~96% of its int8 codes clipped to -128/127."""
    first, second = (Encoder(_dense_head_folder(tmp_path / f"head{seed}", seed)) for seed in (0, 1))
    assert first.model_id != second.model_id
    calibration = first.calibrate(TEXTS)
    with pytest.raises(CalibrationMismatch, match="another model"):
        second.encode(TEXTS, precision="int8", calibration=calibration)
    copy = Encoder(_dense_head_folder(tmp_path / "copy", 0))  # the same head again: the same model
    assert copy.model_id == first.model_id
    np.testing.assert_array_equal(copy.encode(TEXTS, precision="int8", calibration=calibration),
                                  first.encode(TEXTS, precision="int8", calibration=calibration))  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"pooling": "mean"}, "'pooling' must be a list of strategy names, got 'mean'"),  # was ('m', 'e', 'a', 'n')
        ({"pooling": [1]}, "'pooling' must be a list of strategy names, got [1]"),  # was ('1',)
        ({"normalize": 1}, "'normalize' must be true, false or null, got 1"),  # saved, then refused by load
        ({"normalize": "no"}, "'normalize' must be true, false or null, got 'no'"),
        ({"texts": -1}, "'texts' must be a count, got -1"),
        ({"model_id": b"x"}, "'model_id' must be a string or null, got b'x'"),
        ({"extra": [1]}, "'extra' must be an object, got [1]"),
        # JSON has no numpy ints: save, hash and a job's manifest failed later with json's TypeError
        ({"extra": {"n": np.int64(3)}}, "'extra' must hold JSON values: Object of type int64 is not JSON serializable"),
    ],
)
def test_a_calibration_refuses_fields_its_own_file_could_not_hold(fields, shown):
    """The constructor (and `from_vectors`) took what `from_dict` refuses: a calibration whose saved file
    `load` then refused, or a pooling string split into letters (every later check a mismatch)."""
    from tokenpool.core.quantize import Calibration

    with pytest.raises(ValueError) as refused:
        Calibration(np.zeros(3), np.ones(3), **fields)
    assert str(refused.value) == shown
    if "texts" not in fields:
        with pytest.raises(ValueError, match=re.escape(shown)):
            Calibration.from_vectors(np.eye(3), **fields)


def test_a_calibration_takes_numpy_and_enum_values_as_their_plain_ones(tmp_path):
    """``normalize=np.True_`` made `save` and `hash` fail (numpy bools are no JSON); ``pooling=[Pooling.MEAN]``
    was stored as 'Pooling.MEAN', so the calibration never matched an encoder pooling 'mean'."""
    from tokenpool.core.quantize import Calibration
    from tokenpool.core.strategies import Pooling

    calibration = Calibration.from_vectors(np.eye(3), pooling=[Pooling.MEAN], normalize=np.True_)
    assert calibration.pooling == ("mean",) and calibration.normalize is True
    assert Calibration.load(calibration.save(tmp_path / "c.json")) == calibration
    calibration.check(dimension=3, pooling=("mean",), normalize=True)
    assert hash(calibration) == hash(Calibration.from_json(calibration.to_json()))


def test_unpack_signs_checks_its_precision_like_every_other_function():
    """``precision="Binary"`` (case-insensitive everywhere else) skipped the int8 check, so uint8 bytes of
    binary codes unpacked with every first bit flipped; ``precision="int8"`` (no sign bits) was accepted."""
    from tokenpool.core.quantize import quantize, unpack_signs

    vectors = np.array([[0.5, -1.0, 2.0], [-0.5, 1.0, -2.0]], dtype=np.float32)
    codes = quantize(vectors, "binary")
    np.testing.assert_array_equal(unpack_signs(codes, dimension=3, precision="Binary"), np.sign(vectors))
    with pytest.raises(TypeError, match="binary codes must have dtype int8, got uint8"):
        unpack_signs(codes.view(np.uint8), precision="Binary")
    for precision in ("int8", "uint8", "float16"):
        with pytest.raises(ValueError, match=f"sign bits of binary or ubinary codes, not {precision!r}"):
            unpack_signs(quantize(vectors, "ubinary"), precision=precision)


def test_loading_a_file_far_larger_than_any_calibration_stops_reading(tmp_path):
    """``--calibration corpus.npy`` (the output, not its calibration) read the whole file into memory, twice
    over when decoding (777 MB resident for a 384 MB output; a large corpus was killed for memory), before
    saying it was no JSON; a FIFO or /dev/zero was read forever."""
    from tokenpool.core.quantize import MAX_FILE_BYTES, Calibration

    big = tmp_path / "corpus.npy"
    with open(big, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ValueError, match=f"^{re.escape(str(big))}: larger than .* no calibration file"):
        Calibration.load(big)
    calibration = Calibration.from_vectors(np.eye(3))
    assert Calibration.load(calibration.save(tmp_path / "c.json")) == calibration


def test_saving_where_no_file_can_go_names_the_path_given(tmp_path):
    """A missing folder or a folder as the target raised errors naming only the hidden temporary file
    ('.c.json.ju1_b_kt.tmp'), a name the caller never gave."""
    from tokenpool.core.quantize import Calibration

    calibration = Calibration.from_vectors(np.eye(3))
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(tmp_path / 'no' / 'c.json'))}: no folder"):
        calibration.save(tmp_path / "no" / "c.json")
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(tmp_path))}: is a directory"):
        calibration.save(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
