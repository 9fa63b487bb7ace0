"""Stop 55, seed: the public API as users coming from LlamaIndex meet it (`Pooling`, `TokenPoolEmbedding`,
`tokenpool.torch.Pool`, the top-level names)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def small_encoder(tiny_bert_folder):
    pytest.importorskip("transformers")
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, pooling="mean", max_length=32, normalize=False, device="cpu")


def test_a_prompt_assigned_under_an_embeddings_cache_never_hands_a_query_a_cached_documents_vector(small_encoder):
    """LlamaIndex's embeddings_cache keys vectors by their text alone and answers a cached text without calling the
    model: ``emb.query_prompt = "query: "`` after a document was cached made ``get_query_embedding`` of that text
    return the document's (prompt-less) vector, silently; the check ran only on a cache miss. The assignment is
    now refused, as the constructor refuses such a cache, and the embedding keeps working as before."""
    pytest.importorskip("llama_index.core")
    from llama_index.core.storage.kvstore import SimpleKVStore

    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    text = "where is the Colosseum"
    embedding = TokenPoolEmbedding(encoder=small_encoder, embeddings_cache=SimpleKVStore())
    document = embedding.get_text_embedding(text)  # cached under the text alone
    for field in ("query_prompt", "document_prompt"):
        with pytest.raises(ValueError, match="embeddings_cache"):
            setattr(embedding, field, "query: ")
        assert getattr(embedding, field) is None  # (the refused value is not kept)
        with pytest.raises(ValueError, match="embeddings_cache"):
            embedding.model_copy(update={field: "query: "})
    assert embedding.get_query_embedding(text) == document  # equal prompts: the cached vector is right
    # the reference: with the prompt, a query's vector is the encoder's for "query: " + text
    embedding.embeddings_cache = None
    embedding.query_prompt = "query: "
    query = embedding.get_query_embedding(text)
    np.testing.assert_allclose(query, small_encoder.encode(["query: " + text])[0], rtol=0, atol=1e-6)
    assert not np.allclose(query, document, atol=1e-3)
    with pytest.raises(ValueError, match="embeddings_cache"):  # a cache assigned to differing sides too
        embedding.embeddings_cache = SimpleKVStore()
    assert embedding.embeddings_cache is None


def test_a_bad_text_is_named_by_its_place_in_the_callers_list(small_encoder):
    """LlamaIndex splits a batch into chunks of ``embed_batch_size`` before the texts reached tokenpool's check, so
    ``get_text_embedding_batch(["a", "b", "c", None])`` with batches of 2 said ``texts[1] is NoneType`` (its place
    in the second chunk), a text that was fine; a single ``get_query_embedding(7)`` was ``texts[0]`` and a bad
    query of ``get_agg_embedding_from_queries`` a ``texts[i]``. Each is now named as the caller gave it."""
    pytest.importorskip("llama_index.core")
    import asyncio

    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    embedding = TokenPoolEmbedding(encoder=small_encoder, embed_batch_size=2)
    texts = ["a", "b", "c", None, "e"]
    with pytest.raises(TypeError, match=r"^texts\[3\] is NoneType \(None\), not str$"):
        embedding.get_text_embedding_batch(texts)
    with pytest.raises(TypeError, match=r"^texts\[3\] is NoneType"):
        asyncio.run(embedding.aget_text_embedding_batch(texts))
    with pytest.raises(ValueError, match=r"^texts\[4\] holds a lone surrogate \(U\+D800 at character 2\)"):
        embedding.get_text_embedding_batch(["a", "b", "c", "d", "x\ud800"])
    with pytest.raises(TypeError, match=r"^queries\[2\] is int \(3\), not str$"):
        embedding.get_agg_embedding_from_queries(["a", "b", 3])
    with pytest.raises(TypeError, match=r"^queries\[1\] is bytes"):
        asyncio.run(embedding.aget_agg_embedding_from_queries(["a", b"b"]))
    with pytest.raises(TypeError, match=r"^query is int \(7\), not str$"):
        embedding.get_query_embedding(7)
    with pytest.raises(TypeError, match=r"^text is NoneType \(None\), not str$"):
        asyncio.run(embedding.aget_text_embedding(None))
    with pytest.raises(ValueError, match=r"^query holds a lone surrogate"):
        asyncio.run(embedding.aget_query_embedding("\udfff"))
    # good texts embed as before, each as the encoder embeds it
    vectors = embedding.get_text_embedding_batch(["a", "b", "c"])
    np.testing.assert_allclose(vectors, small_encoder.encode(["a", "b", "c"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", ["mean", "cls", "weightedmean", "max", "lasttoken", "mean_sqrt_len_tokens"])
def test_a_traced_pool_reads_each_calls_prompt_lengths(strategy):
    """``torch.jit.trace(Pool(...), (hidden, mask, prompt_length))`` with a per-row prompt_length tensor baked the
    traced call's lengths into the graph (they were read on the host): the traced module then left out the wrong
    tokens for any other lengths, silently (a mask, by contrast, was already traced as data). The lengths now flow
    through the graph: each call pools as the float64 reference loop does."""
    torch = pytest.importorskip("torch")
    import warnings

    from reference import reference_pool

    from tokenpool.torch import Pool

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, 4, dtype=torch.float64, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    module = Pool(strategy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (TracerWarnings of the host-side value checks)
        traced = torch.jit.trace(module, (hidden, mask, torch.tensor([1, 0, 2])))
        zeros = torch.jit.trace(module, (hidden, mask, torch.tensor([0, 0, 0])))
        for lengths in ([0, 3, 1], [2, 2, 2], [9, 0, 4], [1, 0, 2]):
            given = torch.tensor(lengths)
            expected = torch.from_numpy(reference_pool(hidden.numpy(), mask.numpy(), [strategy], prompt_length=lengths))
            torch.testing.assert_close(traced(hidden, mask, given), expected, rtol=0, atol=1e-12)
            torch.testing.assert_close(zeros(hidden, mask, given), expected, rtol=0, atol=1e-12)
