"""Stop 45 bug hunt of the `Encoder` API against sentence-transformers itself (the same folder through both
libraries), each test failing before its fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")

from tinymodels import bert_folder  # noqa: E402

from tokenpool import Encoder  # noqa: E402

TEXTS = ["how do I bake bread?", "a cat sat on the mat", ""]


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    """A tiny random BERT saved by sentence-transformers (mean pooling, Normalize)."""
    return bert_folder(tmp_path_factory.mktemp("s45-dense") / "bert")


def _with_prompts(folder, target, prompts: dict, default: str | None):
    """A copy of ``folder`` whose config_sentence_transformers.json sets these prompts and default prompt name."""
    copy = shutil.copytree(folder, target)
    path = copy / "config_sentence_transformers.json"
    config = json.loads(path.read_text())
    config.update(prompts=prompts, default_prompt_name=default)
    path.write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("prompts", "default"),
    [
        ({"query": "query: "}, "query"),  # documents used to get the query prompt
        ({"passage": "passage: ", "other": "other: "}, "other"),  # queries used to get the default "other: "
    ],
)
def test_query_and_document_sides_never_take_the_default_prompt(dense_folder, tmp_path, prompts, default):
    """encode_queries / encode_documents on a folder with a default_prompt_name but no prompt of that side gave
    the texts the default prompt (documents encoded with the query prompt); sentence-transformers 6.x gives
    them none (its encode_query / encode_document never fall back to the default prompt)."""
    folder = _with_prompts(dense_folder, tmp_path / "prompts", prompts, default)
    model = st.SentenceTransformer(str(folder), device="cpu")
    encoder = Encoder(folder, device="cpu")
    side = "query" if "query" in prompts else "document"  # the side the folder has a prompt for
    other = encoder.encode_documents if side == "query" else encoder.encode_queries
    reference = model.encode_document if side == "query" else model.encode_query
    np.testing.assert_allclose(other(TEXTS), reference(TEXTS), atol=1e-6)
    np.testing.assert_allclose(other(TEXTS), model.encode(TEXTS, prompt=""), atol=1e-6)
    np.testing.assert_allclose(encoder.encode(TEXTS), model.encode(TEXTS), atol=1e-6)  # encode: the default


def test_a_side_prompt_of_the_folder_still_applies(dense_folder, tmp_path):
    """The side's own prompt wins over the default prompt, as in sentence-transformers."""
    folder = _with_prompts(dense_folder, tmp_path / "both", {"query": "query: ", "document": "doc: "}, "query")
    model = st.SentenceTransformer(str(folder), device="cpu")
    encoder = Encoder(folder, device="cpu")
    np.testing.assert_allclose(encoder.encode_queries(TEXTS), model.encode_query(TEXTS), atol=1e-6)
    np.testing.assert_allclose(encoder.encode_documents(TEXTS), model.encode_document(TEXTS), atol=1e-6)
    np.testing.assert_allclose(encoder.encode_documents(TEXTS, prompt="x: "), model.encode(TEXTS, prompt="x: "),
                               atol=1e-6)  # fmt: skip
