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


def test_cli_reports_one_line_and_exit_1(run, poisoned, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    code, _, err = run("embed", src, "-o", tmp_path / "out.npy", "--model", poisoned, "-q")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "non-finite" in err, err
    assert not (tmp_path / "out.npy").exists()
