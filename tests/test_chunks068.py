"""Stop 68, chunks0: a document whose text is not blank but has no token (a zero-width space, control characters,
a lone combining mark: the WordPiece tokenizer drops them) was refused mid-run by ``encode_chunks`` and
``tokenpool embed --chunks`` ("document z.jsonl, line 1: no tokens; ..."), after the model-free check and
--skip-empty had let it through; `encode` and plain ``tokenpool embed`` embed such a text (its special tokens).
It is now one row of its whole text, the vector `encode` gives it; blank texts are refused as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

NO_TOKENS = ["\u200b", "\x01\x02", "\u0301"]  # each tokenised to nothing by the WordPiece tokenizer
DOCS = ["a cat sat on the mat and looked at the dog", *NO_TOKENS, "the end"]


@pytest.mark.parametrize("chunking", ["late", "naive"])
@pytest.mark.parametrize("chunks", ["tokens:3", "boundaries:4"])
def test_a_text_with_no_token_is_one_row_of_its_whole_text(small, chunking, chunks):
    assert all(small.tokenization.encode([t], None)[0] == small.tokenization.encode([""], None)[0] for t in NO_TOKENS)
    got = small.encode_chunks(DOCS, chunks=chunks, chunking=chunking)
    for d in range(1, 1 + len(NO_TOKENS)):
        rows = np.flatnonzero(got.doc == d)
        assert len(rows) == 1 and got.chunk[rows[0]] == 0
        assert (got.start[rows[0]], got.end[rows[0]]) == (0, len(DOCS[d]))
        # the documented reference: `encode` of the text (its special tokens alone)
        np.testing.assert_allclose(got.vectors[rows[0]], small.encode([DOCS[d]])[0], rtol=1e-5, atol=1e-6)
    # the documents with tokens are chunked as they are alone
    alone = small.encode_chunks([DOCS[0], DOCS[-1]], chunks=chunks, chunking=chunking)
    keep = (got.doc == 0) | (got.doc == len(DOCS) - 1)
    assert got.start[keep].tolist() == alone.start.tolist() and got.end[keep].tolist() == alone.end.tolist()
    np.testing.assert_allclose(got.vectors[keep], alone.vectors, rtol=1e-5, atol=1e-6)


def test_a_prompted_text_with_no_token_is_encode_with_the_prompt(small):
    for chunking in ("late", "naive"):
        got = small.encode_chunks(["\u200b"], chunks="tokens:3", chunking=chunking, prompt="query: ")
        np.testing.assert_allclose(got.vectors[0], small.encode(["\u200b"], prompt="query: ")[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text, what", [("", "empty"), (" \n\t", "only whitespace")])
def test_blank_texts_are_still_refused_naming_the_document(small, text, what):
    from tokenpool.errors import OptionError

    with pytest.raises(OptionError, match=f"^document 1: {what}; it has no chunk to embed"):
        small.encode_chunks(["a cat", text], chunks="tokens:3")


def test_a_span_of_a_text_with_no_token_is_refused_as_covering_none(small):
    from tokenpool.errors import OptionError

    with pytest.raises(OptionError, match=r"^document 0: span 0 \[0, 1\] covers no token"):
        small.encode_chunks(["\u200b"], chunks="spans", spans=[[[0, 1]]])


def test_windows_mode_reads_a_text_with_no_token_as_truncate_mode(tiny_bert_folder, small):
    from tokenpool import Encoder

    windows = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu",
                      long_documents="windows")  # fmt: skip
    np.testing.assert_allclose(windows.encode(NO_TOKENS), small.encode(NO_TOKENS), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("skip", [[], ["--skip-empty"]])
def test_cli_chunks_embed_a_record_with_no_token_as_plain_embed_does(run, tiny_bert_folder, tmp_path, skip):
    import pyarrow.parquet as pq

    src = tmp_path / "z.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS), encoding="utf-8")
    common = ["--model", tiny_bert_folder, "--max-length", 16, "--pooling", "mean", "-q", *skip]
    code, _, err = run("embed", src, "-o", tmp_path / "c.parquet", "--chunks", "tokens:3", *common)
    assert code == 0, err
    code, _, err = run("embed", src, "-o", tmp_path / "plain.npy", *common)
    assert code == 0, err
    table = pq.read_table(tmp_path / "c.parquet").to_pydict()
    plain = np.load(tmp_path / "plain.npy")
    doc = np.array(table["doc"])
    for d in range(1, 1 + len(NO_TOKENS)):
        rows = np.flatnonzero(doc == d)
        assert len(rows) == 1 and (table["start"][rows[0]], table["end"][rows[0]]) == (0, len(DOCS[d]))
        np.testing.assert_allclose(table["embedding"][rows[0]], plain[d], rtol=1e-5, atol=1e-6)
