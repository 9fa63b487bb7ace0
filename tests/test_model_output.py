"""A model that produces NaN/inf for some text: a clear `ModelOutputError` naming the text, never a NaN vector."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_encoder import _bert_weights  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import ModelOutputError, classify  # noqa: E402

POISONED_WORD = "zebra"  # its embedding row is set to NaN


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("nan-bert")
    _bert_weights(folder)
    token = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(POISONED_WORD)
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name][token] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


TEXTS = ["a calm sentence", "another calm one", f"the {POISONED_WORD} is here", "fine again"]


def test_encode_raises_naming_the_text(poisoned):
    encoder = Encoder(poisoned, device="cpu")
    np.testing.assert_equal(np.isfinite(encoder.encode(TEXTS[:2] + TEXTS[3:])).all(), True)
    with pytest.raises(ModelOutputError, match="non-finite values .* for text 2"):
        encoder.encode(TEXTS, batch_size=2)
    assert classify(ModelOutputError("x")) == "failed"


@pytest.mark.parametrize("how", ["windows", "tokens", "late", "naive"])
def test_long_document_paths_raise_too(poisoned, how):
    long_text = " ".join(["calm words"] * 20 + [POISONED_WORD] + ["more calm"] * 20)
    texts = ["fine", long_text]
    if how == "windows":
        call = lambda: Encoder(poisoned, max_length=16, long_documents="windows").encode(texts)  # noqa: E731
    elif how == "tokens":
        encoder = Encoder(poisoned, max_length=16, long_documents="windows")
        call = lambda: encoder.encode(texts, output="tokens")  # noqa: E731
    else:
        call = lambda: Encoder(poisoned, max_length=16).encode_chunks(texts, chunks="tokens:8", chunking=how)  # noqa: E731
    with pytest.raises(ModelOutputError, match="non-finite"):
        call()


@pytest.mark.parametrize(
    "flags", [[], ["--chunks", "tokens:4", "--chunking", "naive"], ["--chunks", "tokens:4"], ["--token-vectors"]]
)
def test_cli_names_the_line_in_one_line_and_exits_1(run, poisoned, tmp_path, flags):
    """The bad record is line 11 of 12, in the third chunk of 4 records: the message names line 11."""
    src = tmp_path / "in.jsonl"
    texts = [f"calm sentence number {k}" for k in range(12)]
    texts[10] = TEXTS[2]
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out.npy"
    code, _, err = run("embed", src, "-o", out, "--model", poisoned, "--chunk-size", 4, "--batch-size", 4, *flags, "-q")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "non-finite" in err and "line 11" in err, err
    assert not out.exists()


def test_positions_are_the_callers(poisoned):
    """iter_vector_batches in windows mode and encode_chunks name the text by its place in the whole call."""
    texts = [f"calm sentence number {k}" for k in range(12)]
    texts[10] = TEXTS[2]
    windows = Encoder(poisoned, max_length=16, long_documents="windows")
    with pytest.raises(ModelOutputError, match="for text 10$") as info:
        list(windows.iter_vector_batches(texts, batch_size=4))
    assert info.value.index == 10
    plain = Encoder(poisoned, max_length=16)
    names = [f"doc-{k}" for k in range(12)]
    with pytest.raises(ModelOutputError, match="for document doc-10, chunk 0$"):
        plain.encode_chunks(texts, chunks="tokens:2", chunking="naive", names=names)
    with pytest.raises(ModelOutputError, match="for document doc-10$"):
        plain.encode_chunks(texts, chunks="tokens:2", chunking="late", names=names)
