"""Stop 68, encoder helper: a named pooling on a Dense folder, unordered texts, long device names, training mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions

DENSE_WEIGHT = np.random.default_rng(68).normal(scale=0.3, size=(16, 32)).astype(np.float32)
DENSE_BIAS = np.random.default_rng(69).normal(scale=0.1, size=16).astype(np.float32)


@pytest.fixture(scope="module")
def dense_folder(tiny, tmp_path_factory):
    """The session's tiny sentence-transformers folder (BERT → Pooling(mean) → Normalize) with a Dense(32→16, tanh)
    module written in before its Normalize, as sentence-transformers saves one (its own writer is tested against
    tokenpool's Dense in test_encoder_pooling); built from `tiny` in milliseconds."""
    import json
    import shutil

    from safetensors.numpy import save_file

    folder = Path(shutil.copytree(tiny, tmp_path_factory.mktemp("enc68") / "dense"))
    (folder / "3_Dense").mkdir()
    config = {"in_features": 32, "out_features": 16, "bias": True,
              "activation_function": "torch.nn.modules.activation.Tanh"}  # fmt: skip
    (folder / "3_Dense" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file({"linear.weight": DENSE_WEIGHT, "linear.bias": DENSE_BIAS}, str(folder / "3_Dense" / "model.safetensors"))
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.base.modules.dense.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules[:2], dense, modules[2]]), encoding="utf-8")
    return folder


def dense_reference(folder: Path, texts: list[str]) -> np.ndarray:
    """The folder's pipeline in float64 from the raw mean rows: tanh(x W^T + b), then unit length."""
    from tokenpool import Encoder

    raw = Encoder(folder, pooling="mean", normalize=False, device="cpu").encode(texts).astype(np.float64)
    dense = np.tanh(raw @ DENSE_WEIGHT.T.astype(np.float64) + DENSE_BIAS)
    return dense / np.linalg.norm(dense, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def dense_encoder(dense_folder):
    """The folder's own pipeline (pooling "auto", Dense included), shared by the tests that only call it."""
    from tokenpool import Encoder

    return Encoder(dense_folder, device="cpu")


TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "x"]


@pytest.mark.parametrize("pooling", ["mean", ["mean"], "cls"])
def test_a_named_pooling_on_a_dense_folder_says_its_modules_are_not_run(dense_folder, pooling, caplog):
    """``Encoder(folder, pooling="mean")`` on a folder whose own pooling is mean followed by a Dense module gives the
    bare mean (32 wide, not the Dense's 16; an EmbeddingGemma-like 768→3072→768 head keeps the width): other
    vectors than sentence-transformers', silently. A named pooling is raw pooled rows by design (the folder's
    modules run with "auto", as sentence-transformers runs them); that is now said, naming the modules left out."""
    from tokenpool import Encoder

    with caplog.at_level("WARNING", logger="tokenpool.model.encoder"):
        named = Encoder(dense_folder, pooling=pooling, device="cpu")
    assert named.dimension == 32 and named.post_modules == ()
    assert f"pooling={pooling!r} gives raw pooled rows: the ['Dense'] modules" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tokenpool.model.encoder"):
        own = Encoder(dense_folder, device="cpu")
    assert "raw pooled rows" not in caplog.text
    np.testing.assert_allclose(own.encode(TEXTS), dense_reference(dense_folder, TEXTS), atol=1e-6)


@pytest.mark.parametrize("texts", [{"hello world", "x"}, frozenset({"hello world", "x"})])
def test_a_set_of_texts_is_refused_its_order_is_arbitrary(dense_encoder, texts):
    """``encode({"a", "b"})`` gave the vectors in the set's iteration order, which string hashing changes from
    one process to the next: rows stored by number no longer matched their texts. It is refused, as
    sentence-transformers refuses it and as tokenpool refuses a set of strategies; a list (``sorted``) is taken."""
    encoder = dense_encoder
    for method in (encoder.encode, encoder.encode_queries, encoder.tokenize):
        with pytest.raises(TypeError, match=rf"^texts must be ordered .*not a {type(texts).__name__},"):
            method(texts)
    assert encoder.encode(sorted(texts)).shape == (2, 16)


@pytest.mark.parametrize("device", ["a" * 5000, "cuda" * 1000])
def test_a_long_unknown_device_is_cut_in_its_message(device):
    """``Encoder(device="a" * 5000)`` echoed the whole value, twice (ours and torch's words): 10,000+ characters
    on one line. It is cut, as other long option values are."""
    with pytest.raises((OptionError, ValueError), match=r"^unknown device '(a|cuda)+…'") as caught:
        EncoderOptions(device=device).check()
    assert len(str(caught.value)) < 400


def test_a_model_left_in_training_mode_still_encodes_without_dropout(dense_folder):
    """A training loop that evaluates between steps (``encoder.model.train()`` ... ``encoder.encode(...)``) got
    vectors with dropout applied: other ones at every call (0.07 from the model's own on all-MiniLM-L6-v2).
    sentence-transformers' encode puts the model in eval mode first; so does the Encoder now."""
    from tokenpool import Encoder

    expected = dense_reference(dense_folder, TEXTS)
    encoder = Encoder(dense_folder, device="cpu")
    encoder.model.train()
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-6)
    assert not encoder.model.training


@pytest.mark.parametrize("request_", [{"batch_size": 4}, None, "vectors"])
def test_run_names_a_request_that_is_no_encode_request(dense_encoder, request_):
    """``encoder.run({"batch_size": 4}, texts)`` (the documented way to carry out an `EncodeRequest`) failed with
    "AttributeError: 'dict' object has no attribute 'check_encoder'"; it is a TypeError naming what run takes, as
    `forward_ids` and `from_options` name theirs."""
    with pytest.raises(TypeError, match=rf"^run takes an EncodeRequest, got {type(request_).__name__}$"):
        dense_encoder.run(request_, TEXTS)


@pytest.mark.parametrize("device", ["hpu", "privateuseone"])
def test_a_device_type_whose_backend_is_not_installed_is_a_value_error(device):
    """``Encoder(device="hpu")`` on a machine without Habana's torch plugin raised ModuleNotFoundError "No module
    named 'torch.hpu'" (``tokenpool embed --device hpu``: "error: No module named 'torch.hpu'", naming no
    device); it is the documented ValueError every device torch knows but cannot use here gets."""
    import importlib.util

    if importlib.util.find_spec("habana_frameworks") is not None:
        pytest.skip("Habana's torch plugin is installed here")
    from tokenpool.model.runners import resolve_device

    with pytest.raises(ValueError, match=rf"^device '{device}' is not usable on this machine: "):
        resolve_device(device)
