"""Stop 61, long documents: what a user reads about chunks and windows, checked against what happens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tokenpool.errors import OptionError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundled():
    from tokenpool import Encoder

    return Encoder(device="cpu")


def _boundary_examples() -> list[tuple[str, str]]:
    """Every ``boundaries:N`` spec a user is told to type: in README.md, docs/long-documents.md and the chunk-spec
    error (retrieval's ``late-boundaries-N`` mode names are not specs)."""
    from tokenpool.core.chunking import parse_chunks

    with pytest.raises(OptionError) as caught:
        parse_chunks("sentences")
    sources = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/long-documents.md")}
    sources["the chunk-spec error"] = str(caught.value)
    return [(name, spec) for name, text in sources.items() for spec in re.findall(r"(?<![-\w])boundaries:\d+", text)]


def test_the_boundary_chunk_examples_users_are_shown_run_on_the_bundled_model(bundled):
    """README and docs/long-documents.md showed ``--chunks boundaries:256``, which every 256-token model (the
    bundled one, the default) refuses: a window holds 254 text tokens."""
    pytest.importorskip("semantic_text_splitter")
    examples = _boundary_examples()
    assert {name for name, _ in examples} == {"README.md", "docs/long-documents.md", "the chunk-spec error"}
    text = "The meeting opened with the budget. " * 20
    for name, spec in examples:
        try:
            bundled.plan_chunks([text], chunks=spec)
        except OptionError as err:
            pytest.fail(f"{name} shows {spec}, refused by the bundled model: {err}")


def test_the_docs_name_the_one_word_slice_where_wordpiece_tokens_differ_from_one_call(full):
    """docs/long-documents.md said a WordPiece tokenizer gets exactly one call's tokens from the slices; a slice
    whose second half is one word (a hex dump, a DNA sequence: no space, no punctuation) is cut inside it, and
    WordPiece reads each part as one [UNK] where one call reads one: the docs must say so while it happens."""
    from tokenpool.model.document_tokens import SLICE_CHARS, tokenize_document

    text = "acgt" * (SLICE_CHARS // 4 + 1000)  # one word longer than a slice
    sliced = tokenize_document(full.tokenization, text).ids.tolist()
    one_call = full.tokenization.tokenizer(text, add_special_tokens=False)["input_ids"]
    if sliced != one_call:
        docs = " ".join((ROOT / "docs/long-documents.md").read_text(encoding="utf-8").split())
        assert "one word of over 100,000 letters or digits" in docs, (len(sliced), len(one_call))


def test_the_docs_say_when_a_fitting_document_differs_from_truncate_in_the_last_bits(small):
    """docs/long-documents.md said ``windows`` equals ``truncate`` bit for bit for a document that fits one window;
    in a call that also holds a longer document, its row is batched beside that document's windows, not beside
    the texts truncate mode batches it with, and padding moves the last bits (as a batch change does in truncate
    mode): the docs must say so while it happens."""
    import numpy as np

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(40)]
    fits = small.tokenization.encode(texts, truncation=None)[1] <= small.max_length
    truncate = small.encode(texts, batch_size=8)
    windows = small.encode(texts, batch_size=8, long_documents="windows")
    np.testing.assert_allclose(windows[fits], truncate[fits], rtol=0, atol=1e-6)
    if not np.array_equal(windows[fits], truncate[fits]):
        docs = " ".join((ROOT / "docs/long-documents.md").read_text(encoding="utf-8").split())
        assert "beside a longer document's windows" in docs
