"""Stop 46 bug hunt in the quantised outputs: the model fingerprint a calibration is checked against, the
`Calibration` fields, `unpack_signs`' precision."""

from __future__ import annotations

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
