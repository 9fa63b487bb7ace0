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
from tokenpool.errors import OptionError  # noqa: E402

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


@pytest.mark.parametrize("pooling", ["cls", "lasttoken", ["mean", "cls"]])
def test_token_vectors_refuse_a_run_pooling_that_reads_one_token(pooling):
    """Token vectors are every token's vector: a run's ``--pooling cls --token-vectors`` (encoder options checked
    with the request, as the command line and Ray do) was accepted and silently ignored; now an error naming it."""
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    with pytest.raises(OptionError, match=r"pooling=.*reads one token per text"):
        EncodeRequest(output="tokens").check(EncoderOptions(pooling=pooling))
    with pytest.raises(OptionError, match=r"--pooling .*reads one token per text"):
        EncodeRequest(output="tokens", caller="cli").check(EncoderOptions(pooling=pooling))
    EncodeRequest(output="vectors").check(EncoderOptions(pooling=pooling))  # pooled vectors: as before


def test_token_vectors_refuse_a_per_call_pooling(dense_folder):
    """``encode(..., output="tokens", pooling="cls")``: the call's pooling was silently ignored."""
    encoder = Encoder(dense_folder, device="cpu")
    with pytest.raises(OptionError, match=r"pooling='cls' would be ignored"):
        encoder.encode(TEXTS, output="tokens", pooling="cls")


def test_token_vectors_of_the_command_line_refuse_pooling_cls(run, dense_folder, tmp_path):
    """``tokenpool embed --pooling cls --token-vectors``: one error line naming the flag (no tokens written)."""
    from clitools import assert_one_error_line

    src = tmp_path / "docs.txt"
    src.write_text("a cat\nsat on the mat\n")
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", "--model", dense_folder, "--pooling", "cls",
                       "--token-vectors", "-q")  # fmt: skip
    assert_one_error_line(code, err, "tokenpool embed: error:", "--pooling cls reads one token per text")
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("pooling", ["auto", "mean", "max", "cls"])
def test_token_vectors_with_every_token_poolings_match_sentence_transformers(dense_folder, tmp_path, pooling):
    """The folder's own pooling (also a CLS folder's) and an Encoder's own pooling (which its other calls use)
    keep giving sentence-transformers' token_embeddings."""
    folder = shutil.copytree(dense_folder, tmp_path / "cls")
    path = folder / "1_Pooling" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    model = st.SentenceTransformer(str(folder), device="cpu")
    tokens = Encoder(folder, pooling=pooling, device="cpu").encode(TEXTS, output="tokens")
    for ours, theirs in zip(tokens, model.encode(TEXTS, output_value="token_embeddings"), strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)


def test_a_max_length_below_the_special_tokens_is_refused(dense_folder):
    """``Encoder(max_length=1)`` on a [CLS] … [SEP] tokenizer embedded every text as the lone [SEP] token (the
    truncation kept the special tokens' tail), a silent wrong vector; now a ValueError naming the value. Two
    tokens, [CLS] [SEP], still give sentence-transformers' own vectors at that length."""
    with pytest.raises(ValueError, match=r"max_length=1 cannot hold the 2 special tokens"):
        Encoder(dense_folder, max_length=1, device="cpu")
    model = st.SentenceTransformer(str(dense_folder), device="cpu")
    model.max_seq_length = 2
    np.testing.assert_allclose(Encoder(dense_folder, max_length=2, device="cpu").encode(TEXTS), model.encode(TEXTS),
                               atol=1e-6)  # fmt: skip
