"""Stop 51's hunt in the packed helpers, `tokenpool.torch.Pool` and the LlamaIndex embedding (helper integ51)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenpool import unpack

OFFSETS = np.array([0, 1, 3])  # two rows: 1 token and 2 tokens, so row 0 gets one padding slot


@pytest.mark.parametrize(("dtype", "pad_value"), [
    (np.bool_, 0.5), (np.bool_, 7), (np.bool_, -1), (np.bool_, float("nan")),
    (np.float16, 1e10), (np.float16, -70000), (np.float16, 10**400), (np.float16, 65520), (np.float32, 1e39),
])  # fmt: skip
def test_unpack_refuses_a_pad_value_bool_or_float_tokens_cannot_hold(dtype, pad_value):
    """bool tokens padded 0.5, 7 and NaN as True, float16 ones 1e10 as inf, without a word (as integer tokens
    did before stop 45): refused naming the value, for numpy and torch tokens alike."""
    tokens = np.ones((3, 2), dtype=dtype)
    for library_tokens in (tokens, torch.from_numpy(tokens)):
        with pytest.raises(ValueError, match=r"pad_value .* is not a value of the tokens' dtype"):
            unpack(library_tokens, OFFSETS, pad_value=pad_value)


@pytest.mark.parametrize(("dtype", "pad_value", "expected"), [
    (np.bool_, 0, False), (np.bool_, 1.0, True), (np.float16, 65504.0, 65504.0), (np.float16, 65519, 65504.0),
    (np.float16, float("-inf"), float("-inf")), (np.float32, float("nan"), None), (np.float64, 1e308, 1e308),
])  # fmt: skip
def test_unpack_pads_with_a_value_the_tokens_can_hold(dtype, pad_value, expected):
    """The values a dtype holds (65519 rounds to float16's largest, 65504, not to inf) and inf / NaN pad as given."""
    tokens = np.zeros((3, 2), dtype=dtype)
    for library_tokens in (tokens, torch.from_numpy(tokens)):
        padded, mask = unpack(library_tokens, OFFSETS, pad_value=pad_value)
        slot = np.asarray(padded[0, 1]).astype(np.float64)
        assert not bool(mask[0, 1])
        if expected is None:
            assert np.isnan(slot).all()
        else:
            assert slot.tolist() == [float(expected)] * 2


@pytest.fixture(scope="module")
def embedding():
    pytest.importorskip("llama_index.core")
    pytest.importorskip("transformers")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    return TokenPoolEmbedding(embed_batch_size=4)


@pytest.mark.parametrize(("update", "message"), [
    ({"truncate_dim": 8}, "frozen"), ({"normalize": False}, "frozen"), ({"pooling": "max"}, "frozen"),
    ({"embed_batch_size": 0}, "greater than 0"), ({"query_prompt": 5}, "valid string"),
    ({"normalise": False}, "normalise"),
])  # fmt: skip
def test_model_copy_checks_its_update_as_an_assignment(embedding, update, message):
    """pydantic's model_copy(update=...) skips validation: a copy said truncate_dim=8 (and to_dict() / a pickle
    carried it) while its vectors kept all 384 dimensions, and embed_batch_size=0 was taken; now the update is
    checked as ``copy.field = value`` is (Encoder options are frozen)."""
    import pydantic

    with pytest.raises((pydantic.ValidationError, ValueError), match=message):
        embedding.model_copy(update=update)


def test_model_copy_updates_the_fields_read_at_each_call(embedding):
    copied = embedding.model_copy(update={"query_prompt": "query: ", "embed_batch_size": 2})
    assert (copied.query_prompt, copied.embed_batch_size) == ("query: ", 2)
    assert (embedding.query_prompt, embedding.embed_batch_size) == (None, 4)  # the original is unchanged
    expected = embedding.encoder.encode(["what is a tyre"], prompt="query: ")[0]
    np.testing.assert_allclose(copied.get_query_embedding("what is a tyre"), expected, rtol=0, atol=1e-6)
    deep = embedding.model_copy(update={"document_prompt": "passage: "}, deep=True)
    assert deep.document_prompt == "passage: " and embedding.document_prompt is None


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    pytest.importorskip("llama_index.core")
    pytest.importorskip("transformers")
    from tinymodels import bert_folder

    from tokenpool import Encoder

    return Encoder(bert_folder(tmp_path_factory.mktemp("splade"), mlm=True), pooling="splade", device="cpu")


def test_sparse_functions_refuse_a_single_string(splade):
    """``sparse_doc_fn("a cat sat")`` iterated the string: one sparse vector per character (9 rows for one text),
    without a word; a str is now a TypeError naming it (the functions map a list of texts, row per text)."""
    from tokenpool.integrations.llama_index import sparse_functions

    for function in sparse_functions(splade):
        with pytest.raises(TypeError, match=r"list of texts.*'a cat sat'"):
            function("a cat sat")
        indices, values = function(("a cat sat", "dogs bark"))  # any sequence of texts: one row each
        want = splade.encode_sparse(["a cat sat", "dogs bark"], prompt="")
        assert len(indices) == len(values) == 2
        bounds = want.indptr.tolist()
        assert indices == [want.indices[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
