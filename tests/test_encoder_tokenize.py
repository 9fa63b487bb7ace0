"""`Encoder.tokenize` (ids and untruncated counts, right/left truncation, one tokenizer call per text) and the
forward pass on those ids (`forward_ids`, `pool_ids`, ``finish=False``), checked against the tokenizer's own
truncation and against `Encoder.encode`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodels import bert_folder

from tokenpool import Encoder
from tokenpool.core.pooling import finish_vectors
from tokenpool.errors import OptionError
from tokenpool.model.tokenization import Tokenized

WORDS = ["cat", "dogs", "run", "the", "quickly", "naïve", "café", "日本", "unbelievably", ",", "!"]
TEXTS = ["A man plays a guitar.", "", "the quick brown fox " * 30, "naïve café, 日本語", "short"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def encoder(folder) -> Encoder:
    return Encoder(folder, max_length=24, device="cpu")


def _reference(encoder: Encoder, texts: list[str], side: str) -> tuple[list[list[int]], list[int]]:
    """The transformers tokenizer's own truncation on ``side`` (a copy), and its untruncated lengths."""
    tokenizer = copy.deepcopy(encoder.tokenizer)
    tokenizer.truncation_side = side
    limit = encoder.max_length
    cut = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    whole = tokenizer(texts, truncation=False, verbose=False)["input_ids"]
    return cut, [len(row) for row in whole]


@settings(max_examples=25)
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=60).map(" ".join), min_size=1, max_size=6))
def test_ids_and_counts_are_the_tokenizers_own(encoder, texts):
    for side in ("right", "left"):
        got = encoder.tokenize(texts, truncation=side)
        cut, counts = _reference(encoder, texts, side)
        assert got.ids == cut
        assert got.counts.tolist() == counts
        assert got.truncated.tolist() == [n > encoder.max_length for n in counts]
    whole = encoder.tokenize(texts, truncation=None)
    assert whole.lengths.tolist() == whole.counts.tolist() == _reference(encoder, texts, "right")[1]


def test_auto_is_what_encode_runs(encoder):
    batches = list(encoder.iter_token_batches(TEXTS, batch_size=2))
    tokenized = encoder.tokenize(TEXTS)
    assert tokenized.ids == encoder.tokenize(TEXTS, truncation="right").ids
    for batch in batches:
        mask = np.asarray(batch.attention_mask)
        for row, index in enumerate(batch.indices.tolist()):
            assert int(mask[row].sum()) == len(tokenized.ids[index])


def test_left_truncation_keeps_the_prompt_and_the_special_tokens(encoder):
    text = " ".join(f"w{i}" for i in range(80))
    tokenized = encoder.tokenize([text], prompt="query: ", truncation="left")
    tokenizer = encoder.tokenizer
    whole = tokenizer("query: " + text, verbose=False)["input_ids"]
    prompt = tokenizer("query: ", add_special_tokens=False)["input_ids"]
    keep = encoder.max_length - 1 - len(prompt)
    assert tokenized.ids[0] == whole[: 1 + len(prompt)] + whole[len(whole) - keep :]
    assert tokenized.counts[0] == len(whole) and tokenized.truncated[0]


def test_one_tokenizer_call_per_text(encoder, monkeypatch):
    seen: list[str] = []
    tokenizer = encoder.tokenizer
    original = type(tokenizer).__call__

    def spy(self, texts, *args, **kwargs):
        seen.extend([texts] if isinstance(texts, str) else texts)
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    texts = [f"text number {i} " * (i + 1) for i in range(7)]
    encoder.tokenize(texts, prompt="query: ", truncation="left")
    encoder.tokenize(texts, truncation="right")
    for text in texts:
        assert sum(text in item for item in seen) == 2, text  # once per call above


def test_pool_ids_gives_encodes_vectors(encoder):
    tokenized = encoder.tokenize(TEXTS, prompt="q: ")
    rows = np.zeros((len(TEXTS), encoder.dimension), dtype=np.float32)
    for indices, vectors in encoder.pool_ids(tokenized, batch_size=2):
        rows[indices] = vectors
    np.testing.assert_array_equal(rows, encoder.encode(TEXTS, prompt="q: ", batch_size=2))  # same passes


def test_raw_rows_finished_by_the_caller_equal_encode(folder):
    """``finish=False``: the rows before truncate_dim and normalize; `finish_vectors` with the encoder's own
    options gives `encode`'s vectors (what a server does per request)."""
    cut = Encoder(folder, truncate_dim=8, normalize=True, device="cpu")
    tokenized = cut.tokenize(TEXTS)
    raw = np.zeros((len(TEXTS), 32), dtype=np.float32)
    for indices, vectors in cut.pool_ids(tokenized, finish=False):
        raw[indices] = vectors
    plain = Encoder(folder, normalize=False, device="cpu").encode(TEXTS)
    np.testing.assert_array_equal(raw, plain)
    np.testing.assert_allclose(finish_vectors(raw, truncate_dim=8, normalize=True), cut.encode(TEXTS), atol=1e-7)


def test_rows_of_several_requests_run_together(folder, tmp_path):
    """`Tokenized.concat`: rows with different prompts (left out of pooling by this model) in one pass give
    each request's own vectors."""
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config["include_prompt"] = False
    model = tmp_path / "noprompt"
    import shutil

    shutil.copytree(folder, model)
    (model / "1_Pooling" / "config.json").write_text(json.dumps(config))
    encoder = Encoder(model, device="cpu")
    a, b = encoder.tokenize(TEXTS[:3], prompt="query: "), encoder.tokenize(TEXTS[3:], prompt="passage: long: ")
    both = Tokenized.concat([a, b])
    assert both.prompt_lengths.tolist() == [a.prompt_lengths[0]] * 3 + [b.prompt_lengths[0]] * 2
    rows = np.zeros((len(TEXTS), encoder.dimension), dtype=np.float32)
    for indices, vectors in encoder.pool_ids(both, batch_size=8):
        rows[indices] = vectors
    np.testing.assert_array_equal(rows[:3], encoder.encode(TEXTS[:3], prompt="query: "))
    np.testing.assert_allclose(rows[3:], encoder.encode(TEXTS[3:], prompt="passage: long: "), atol=1e-6)
    picked = both.select([4, 0])
    assert picked.ids == [both.ids[4], both.ids[0]] and picked.counts.tolist() == [both.counts[4], both.counts[0]]


def test_bad_calls_name_what_is_wrong(encoder):
    with pytest.raises(OptionError, match="truncation must be one of"):
        encoder.tokenize(["a"], truncation="middle")
    whole = encoder.tokenize(["word " * 100], truncation=None)
    with pytest.raises(OptionError, match="row 0 has .* tokens, more than max_length 24"):
        next(encoder.forward_ids(whole))
    with pytest.raises(TypeError, match="Tokenized"):
        next(encoder.forward_ids([[101, 102]]))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        next(encoder.pool_ids(encoder.tokenize(["a"]), batch_size=0))
