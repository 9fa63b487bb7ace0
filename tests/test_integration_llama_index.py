"""`TokenPoolEmbedding` in a real LlamaIndex `VectorStoreIndex` (no LLM, no network), vectors equal Encoder's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("transformers")

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from tinymodels import prompted_copy  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.integrations.llama_index import TokenPoolEmbedding  # noqa: E402

DOCUMENTS = {
    "bake": "Preheat the oven to 180 degrees, mix flour, sugar and eggs, and bake the cake for forty minutes.",
    "tyre": "To fix a flat bicycle tyre, remove the inner tube, find the puncture and glue a patch over it.",
    "python": "Python lists are mutable sequences; append adds an element and sort orders them in place.",
    "sleep": "Adults need seven to nine hours of sleep each night; a regular bedtime improves sleep quality.",
    "rome": "The Colosseum in Rome is an ancient amphitheatre built under the Flavian emperors.",
}
PARAPHRASES = {
    "How long should a grown-up rest at night?": "sleep",
    "repairing a punctured wheel on my bike": "tyre",
    "instructions for making a sponge dessert": "bake",
    "which method adds an item to a list in python": "python",
    "old Roman arena for gladiators": "rome",
}


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="module")
def embedding(encoder: Encoder) -> TokenPoolEmbedding:
    return TokenPoolEmbedding(encoder=encoder, embed_batch_size=2)


def test_vector_index_retrieves_the_paraphrased_document(embedding: TokenPoolEmbedding):
    nodes = [TextNode(text=text, id_=key) for key, text in DOCUMENTS.items()]
    index = VectorStoreIndex(nodes, embed_model=embedding)
    retriever = index.as_retriever(similarity_top_k=1)
    for query, expected in PARAPHRASES.items():
        (hit,) = retriever.retrieve(query)
        assert hit.node.node_id == expected, (query, hit.node.node_id)


def test_vectors_equal_encoder_sync_and_async(embedding: TokenPoolEmbedding, encoder: Encoder):
    texts = list(DOCUMENTS.values())
    documents = encoder.encode_documents(texts)
    queries = encoder.encode_queries(list(PARAPHRASES))
    # embed_batch_size=2 splits five texts into three calls; the order must survive.
    np.testing.assert_allclose(embedding.get_text_embedding_batch(texts), documents, rtol=0, atol=1e-6)
    np.testing.assert_allclose(embedding.get_text_embedding(texts[3]), documents[3], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        [embedding.get_query_embedding(q) for q in PARAPHRASES], queries, rtol=0, atol=1e-6
    )

    async def gather():
        batch = await embedding.aget_text_embedding_batch(texts)
        single = await embedding.aget_text_embedding(texts[0])
        many = await asyncio.gather(*(embedding.aget_query_embedding(q) for q in PARAPHRASES))
        return batch, single, many

    batch, single, many = asyncio.run(gather())
    np.testing.assert_allclose(batch, documents, rtol=0, atol=1e-6)
    np.testing.assert_allclose(single, documents[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(many, queries, rtol=0, atol=1e-6)
    assert embedding.get_text_embedding_batch([]) == []
    assert embedding.model_name == str(encoder.model_path)


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory, encoder: Encoder):
    """The default model with query/passage prompts: a folder of links plus a new prompts file."""
    return prompted_copy(tmp_path_factory.mktemp("prompted"), encoder.model_path)


def test_queries_and_documents_get_the_model_prompts(prompted_model, encoder: Encoder):
    embedding = TokenPoolEmbedding(str(prompted_model))
    query, text = "where is the Colosseum", DOCUMENTS["rome"]
    # The prompt pools with the text (include_prompt is true for this model), so it equals plain prefixing.
    expected_query, expected_text = encoder.encode([f"query: {query}", f"passage: {text}"])
    np.testing.assert_allclose(embedding.get_query_embedding(query), expected_query, rtol=0, atol=1e-6)
    np.testing.assert_allclose(embedding.get_text_embedding(text), expected_text, rtol=0, atol=1e-6)
    assert not np.allclose(expected_query, encoder.encode(query), atol=1e-3)  # the prompt matters

    custom = TokenPoolEmbedding(str(prompted_model), query_prompt="", document_prompt="doc: ")
    np.testing.assert_allclose(custom.get_query_embedding(query), encoder.encode(query), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        custom.get_text_embedding(text), encoder.encode(f"doc: {text}"), rtol=0, atol=1e-6
    )


def test_options_reach_the_encoder_and_survive_serialisation():
    embedding = TokenPoolEmbedding(pooling="cls", normalize=False, truncate_dim=64, embed_batch_size=3)
    assert embedding.encoder.strategies == ("cls",)
    data = embedding.to_dict()
    assert data["class_name"] == "TokenPoolEmbedding"
    restored = TokenPoolEmbedding.from_dict(data)
    reference = Encoder(pooling="cls", normalize=False, truncate_dim=64).encode(list(DOCUMENTS.values()))
    vectors = np.asarray(restored.get_text_embedding_batch(list(DOCUMENTS.values())))
    assert vectors.shape == (len(DOCUMENTS), 64)
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=1e-6)
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_bad_options_raise(encoder: Encoder):
    with pytest.raises(ValueError, match="either encoder= or Encoder options"):
        TokenPoolEmbedding(encoder=encoder, pooling="cls")
    with pytest.raises(ValueError, match="embed_batch_size"):
        TokenPoolEmbedding(encoder=encoder, embed_batch_size=0)
    with pytest.raises(ValueError, match="'nope'"):
        TokenPoolEmbedding(pooling="nope")


def test_long_documents_windows_read_the_whole_text():
    """``long_documents="windows"`` reaches the Encoder: a text longer than max_length is read whole."""
    long_text = " ".join(DOCUMENTS.values()) * 2  # ~200 tokens, windows of 32
    embedding = TokenPoolEmbedding(long_documents="windows", max_length=32, window_stride=10)
    windows = Encoder(long_documents="windows", max_length=32, window_stride=10)
    truncated = Encoder(max_length=32)
    got = np.array(embedding.get_text_embedding(long_text))
    np.testing.assert_allclose(got, windows.encode_documents([long_text])[0], rtol=0, atol=1e-6)
    assert np.abs(got - truncated.encode_documents([long_text])[0]).max() > 1e-2
    again = TokenPoolEmbedding(encoder=windows)
    assert again.long_documents == "windows" and again.window_stride == 10
