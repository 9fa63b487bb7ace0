"""Stop 46, integrations: `TokenPoolEmbedding`'s LlamaIndex surface (cache, assignment, pydantic round trip)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("transformers")

from llama_index.core.storage.kvstore import SimpleKVStore  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from tinymodels import prompted_copy  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.integrations.llama_index import TokenPoolEmbedding  # noqa: E402

TEXT = "where is the Colosseum"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="module")
def prompted(tmp_path_factory, encoder: Encoder):
    """The default model with query/passage prompts: a folder of links plus a new prompts file."""
    return Encoder(prompted_copy(tmp_path_factory.mktemp("prompted"), encoder.model_path))


def test_embeddings_cache_never_hands_a_query_a_documents_vector(prompted: Encoder, encoder: Encoder):
    """LlamaIndex's embeddings_cache keys vectors by their text alone: with a model whose queries and documents
    get different prompts, a query equal to a cached document's text got the document's vector. Such a cache is
    now refused, at construction and when a prompt is assigned."""
    with pytest.raises(ValueError, match=r"embeddings_cache.*'query: '.*'passage: '"):
        TokenPoolEmbedding(encoder=prompted, embeddings_cache=SimpleKVStore())
    # equal sides: the cache is correct and kept
    same = TokenPoolEmbedding(encoder=prompted, query_prompt="", document_prompt="", embeddings_cache=SimpleKVStore())
    document = same.get_text_embedding_batch([TEXT])[0]
    np.testing.assert_allclose(same.get_query_embedding(TEXT), document, rtol=0, atol=1e-6)
    np.testing.assert_allclose(document, encoder.encode(TEXT), rtol=0, atol=1e-6)
    plain = TokenPoolEmbedding(encoder=encoder, embeddings_cache=SimpleKVStore())
    assert plain.get_text_embedding(TEXT) == plain.get_query_embedding(TEXT)
    with pytest.raises(ValueError, match="embeddings_cache"):  # the sides would differ: refused when assigned
        plain.query_prompt = "query: "  # (stop 55: a cached text never reached the later check)


@pytest.mark.parametrize(
    ("field", "value"),
    [("embed_batch_size", 0), ("embed_batch_size", 5000), ("embed_batch_size", "3"), ("embed_batch_size", True),
     ("query_prompt", 5), ("document_prompt", ["passage: "])],
)  # fmt: skip
def test_assigned_options_are_validated_as_given_ones(encoder: Encoder, field, value):
    """``emb.embed_batch_size = 0`` (or 5000, above the field's limit of 2048) and ``emb.query_prompt = 5`` were
    taken silently (and serialised by to_dict()); the fields the docs say may be changed are now validated."""
    embedding = TokenPoolEmbedding(encoder=encoder)
    with pytest.raises(ValidationError, match=field):
        setattr(embedding, field, value)
    assert getattr(embedding, field) == TokenPoolEmbedding.model_fields[field].default
    embedding.embed_batch_size, embedding.query_prompt = 7, "q: "
    assert (embedding.embed_batch_size, embedding.query_prompt) == (7, "q: ")


def test_pydantic_round_trip_of_model_dump(encoder: Encoder):
    """``TokenPoolEmbedding.model_validate(emb.model_dump())`` and ``TokenPoolEmbedding(**emb.to_dict())`` raised
    "unknown option(s) ['class_name']" (BaseComponent adds the key to every dump); the own name is now taken."""
    embedding = TokenPoolEmbedding(encoder=encoder, embed_batch_size=3, query_prompt="q: ")
    for restored in (TokenPoolEmbedding.model_validate(embedding.model_dump()), TokenPoolEmbedding(**embedding.to_dict())):
        assert (restored.embed_batch_size, restored.query_prompt) == (3, "q: ")
        np.testing.assert_allclose(restored.get_query_embedding(TEXT), embedding.get_query_embedding(TEXT), atol=1e-6)
    with pytest.raises(TypeError, match="class_name"):
        TokenPoolEmbedding(encoder=encoder, class_name="HuggingFaceEmbedding")


def test_pickling_leaves_the_encoder_out(encoder: Encoder, monkeypatch, caplog):
    """Pickling pickled the whole Encoder (every weight of the model: 0.3 s and 90 MB here, a 7B model's RAM) until
    a lock stopped it, and then LlamaIndex logged "Removing unpickleable private attribute _encoder"; the state is
    now the fields alone, from which unpickling rebuilds the Encoder."""
    pickled = []
    monkeypatch.setattr(Encoder, "__reduce_ex__", lambda self, protocol: pickled.append(self) or 1 / 0, raising=False)
    embedding = TokenPoolEmbedding(encoder=encoder, query_prompt="q: ")
    data = pickle.dumps(embedding)
    assert pickled == [] and "unpickleable" not in caplog.text
    monkeypatch.undo()
    restored = pickle.loads(data)
    assert restored.query_prompt == "q: "
    np.testing.assert_allclose(restored.get_query_embedding(TEXT), embedding.get_query_embedding(TEXT), atol=1e-6)


def test_unpickling_where_the_model_is_missing_raises(tmp_path, encoder: Encoder):
    """Unpickled where its model folder is gone, the embedding came back without an Encoder (BaseComponent's
    ``__setstate__`` swallowed the load error) and failed later with "no attribute '_encoder'"."""
    folder = tmp_path / "model"
    folder.mkdir()
    for item in encoder.model_path.iterdir():
        (folder / item.name).symlink_to(item)
    data = pickle.dumps(TokenPoolEmbedding(str(folder)))
    for item in folder.iterdir():
        item.unlink()
    folder.rmdir()
    with pytest.raises(FileNotFoundError, match="model"):
        pickle.loads(data)
