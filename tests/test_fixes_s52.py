"""Stop 52, defects left by earlier bug hunts: a sparse Encoder's truncate_dim, CSV files with old-Mac line
endings, Ray's text field beside a struct, ``--id-field`` with and without Ray, the sparse helper's batch_size,
``unpack``'s pad value, LlamaIndex's batch of one str, and the warm-blocks bench test. Each test failed before its
fix."""

from __future__ import annotations

import pytest

# ------------------------------------------------------------------ 1. truncate_dim on a sparse (SPLADE) Encoder


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("splade"), mlm=True)


@pytest.fixture(scope="module")
def bare_mlm_folder(tmp_path_factory):
    """A bare BertForMaskedLM (no sentence-transformers files): SPLADE only with ``pooling="splade"``."""
    from tinymodels import bert_weights

    return bert_weights(tmp_path_factory.mktemp("mlm"), mlm=True)


def test_a_sparse_encoder_with_truncate_dim_is_refused_at_construction(splade_folder, bare_mlm_folder):
    """``Encoder(splade, truncate_dim=8)`` was built and said ``dimension == 8``, though every encode refused the
    cut (rows of a sparse model are vocabulary-wide). The construction now refuses, with the encode's message."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    for folder, pooling in ((splade_folder, "auto"), (bare_mlm_folder, "splade")):
        with pytest.raises(OptionError, match=r"^truncate_dim=8 does not apply to a sparse \(SPLADE\) model \(.*"
                                              r"\): its rows are vocabulary-wide$"):  # fmt: skip
            Encoder(folder, pooling=pooling, truncate_dim=8, device="cpu")
        encoder = Encoder(folder, pooling=pooling, device="cpu")  # without it: built, vocabulary-wide rows
        assert encoder.dimension == encoder.vocab_size == 30522
        assert encoder.encode(["cats purr"]).shape == (1, 30522)


def test_a_dense_encoder_keeps_its_truncate_dim(bare_mlm_folder):
    """The refusal is for sparse rows only: the same MLM folder pooled densely (mean over hidden states) still
    takes a Matryoshka cut."""
    from tokenpool import Encoder

    encoder = Encoder(bare_mlm_folder, pooling="mean", truncate_dim=8, device="cpu")
    assert encoder.dimension == 8 and encoder.encode(["cats purr"]).shape == (1, 8)
