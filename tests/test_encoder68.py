"""Stop 68, encoder helper: the folder's own pooling named explicitly, unordered texts, long device names."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    """A sentence-transformers folder: tiny BERT → Pooling(mean) → Dense(32→16, tanh) → Normalize, saved by
    sentence-transformers itself."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from tinymodels import HIDDEN, bert_weights

    root = tmp_path_factory.mktemp("enc68")
    plain = bert_weights(root / "plain")
    modules = [Transformer(str(plain), max_seq_length=32), Pooling(HIDDEN, pooling_mode="mean"),
               Dense(HIDDEN, 16), Normalize()]  # fmt: skip
    SentenceTransformer(modules=modules, device="cpu").save(str(root / "dense"))
    return root / "dense"


TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "x"]


@pytest.mark.parametrize("pooling", ["mean", ["mean"], "cls"])
def test_a_named_pooling_on_a_dense_folder_says_its_modules_are_not_run(dense_folder, pooling, caplog):
    """``Encoder(folder, pooling="mean")`` on a folder whose own pooling is mean followed by a Dense module gives the
    bare mean (32 wide, not the Dense's 16; an EmbeddingGemma-like 768→3072→768 head keeps the width): other
    vectors than sentence-transformers', silently. A named pooling is raw pooled rows by design (the folder's
    modules run with "auto", as sentence-transformers runs them); that is now said, naming the modules left out."""
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    with caplog.at_level("WARNING", logger="tokenpool.model.encoder"):
        named = Encoder(dense_folder, pooling=pooling, device="cpu")
    assert named.dimension == 32 and named.post_modules == ()
    assert f"pooling={pooling!r} gives raw pooled rows: the ['Dense'] modules" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tokenpool.model.encoder"):
        own = Encoder(dense_folder, device="cpu")
    assert "raw pooled rows" not in caplog.text
    expected = SentenceTransformer(str(dense_folder), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(own.encode(TEXTS), expected, atol=1e-6)


@pytest.mark.parametrize("texts", [{"hello world", "x"}, frozenset({"hello world", "x"})])
def test_a_set_of_texts_is_refused_its_order_is_arbitrary(dense_folder, texts):
    """``encode({"a", "b"})`` gave the vectors in the set's iteration order, which string hashing changes from
    one process to the next: rows stored by number no longer matched their texts. It is refused, as
    sentence-transformers refuses it and as tokenpool refuses a set of strategies; a list (``sorted``) is taken."""
    from tokenpool import Encoder

    encoder = Encoder(dense_folder, device="cpu")
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
    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder

    expected = SentenceTransformer(str(dense_folder), device="cpu").encode(TEXTS)
    encoder = Encoder(dense_folder, device="cpu")
    encoder.model.train()
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-6)
    assert not encoder.model.training


@pytest.mark.parametrize("request_", [{"batch_size": 4}, None, "vectors"])
def test_run_names_a_request_that_is_no_encode_request(dense_folder, request_):
    """``encoder.run({"batch_size": 4}, texts)`` (the documented way to carry out an `EncodeRequest`) failed with
    "AttributeError: 'dict' object has no attribute 'check_encoder'"; it is a TypeError naming what run takes, as
    `forward_ids` and `from_options` name theirs."""
    from tokenpool import Encoder

    encoder = Encoder(dense_folder, device="cpu")
    with pytest.raises(TypeError, match=rf"^run takes an EncodeRequest, got {type(request_).__name__}$"):
        encoder.run(request_, TEXTS)


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
