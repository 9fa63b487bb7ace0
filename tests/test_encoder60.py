"""Stop 60's Encoder-area fixes, each checked against an independent reference (the tokenizer run on the
chosen texts alone, sentence-transformers, the documented text)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool import Encoder

TEXTS = ["short", "a long one " * 200, "mid text", "another long one " * 150]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(device="cpu")


def test_tokenized_select_takes_a_boolean_mask_as_numpy_does(encoder):
    # `Tokenized.truncated` is a bool array: select(~truncated) keeps the untruncated texts, not rows 0/1
    tokenized = encoder.tokenize(TEXTS)
    kept = tokenized.select(~tokenized.truncated)
    alone = encoder.tokenize([TEXTS[0], TEXTS[2]])
    assert kept.ids == alone.ids and kept.counts.tolist() == alone.counts.tolist()
    assert tokenized.select([]).ids == [] and tokenized.select(np.int64(2)).ids == [alone.ids[1]]
    with pytest.raises(IndexError):  # a float position is no row (it was truncated to an int)
        tokenized.select(np.array([0.9, 2.2]))
    with pytest.raises(IndexError):  # a mask of another length
        tokenized.select([True, False])


def test_tokenized_select_of_a_few_positions_costs_no_array_of_every_row():
    # review: the mask fix indexed np.arange(len(self)) on every call: the server's per-pass select of a few
    # positions of a large request allocated (and filled) one int64 per row of the whole request
    import tracemalloc

    from tokenpool.model.tokenization import Tokenized

    rows = 500_000
    tokenized = Tokenized([[7, i] for i in range(rows)], np.ones(rows, np.int64), np.zeros(rows, np.int64))
    tracemalloc.start()
    try:
        kept = tokenized.select([5, 9])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept.ids == [[7, 5], [7, 9]] and peak < 8 * rows // 10  # (an arange of every row: 8 bytes a row)


def test_docs_say_a_hub_id_is_downloaded_as_the_encoder_does(monkeypatch):
    # docs/encoder.md's `model` row said "Nothing is ever downloaded"; an uncached Hub id is downloaded once
    from pathlib import Path

    import huggingface_hub

    asked = []

    def snapshot_download(repo_id, *, local_files_only=False, **options):
        asked.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached") if local_files_only else OSError("stop")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(Exception):  # noqa: B017 (whatever the stand-in download's failure becomes)
        Encoder("org/name")
    assert asked == [True, False]  # the cache first, then the Hub
    page = (Path(__file__).resolve().parents[1] / "docs" / "encoder.md").read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if line.startswith("| `model` |"))
    assert "downloaded once" in row and "Nothing is ever downloaded" not in row


@pytest.mark.parametrize("given", ["/some/model/folder", 3])
def test_llama_index_encoder_that_is_no_encoder_is_a_type_error_naming_it(given):
    # encoder="folder" (meant as model=) crashed with "'str' object has no attribute 'options'"
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    with pytest.raises(TypeError, match=rf"encoder must be a tokenpool Encoder .*got {type(given).__name__}"):
        TokenPoolEmbedding(encoder=given)
