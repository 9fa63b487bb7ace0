"""Long documents, stop 54 hunt: chunk rows of ``tokenpool embed --chunks``."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from clitools import assert_one_error_line  # noqa: E402

from tokenpool.errors import OptionError  # noqa: E402


def test_a_null_spans_field_is_named_null_not_missing(run, tiny_bert_folder, tmp_path):
    """``--chunks spans``: a record whose spans field is present but null was refused as having "no field
    'spans'" — the user looks at the record and sees the field; the message now says it is missing or null
    (the readers give None for both)."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello world", "spans": [[0, 5]]}) + "\n"
                   + json.dumps({"text": "hello world", "spans": None}) + "\n", encoding="utf-8")  # fmt: skip
    code, _, err = run("embed", src, "-o", tmp_path / "out.jsonl", "--model", tiny_bert_folder, "--chunks", "spans")
    assert_one_error_line(code, err, "line 2")
    said = err.split("line 2: ", 1)[1]  # (the path holds this test's name)
    assert "'spans'" in said and "null" in said, said
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("chunking", ["late", "naive"])
def test_token_chunks_keep_the_combining_marks_of_their_last_character(small, chunking):
    """A tokenizer that strips accents (the bundled WordPiece) gives a token's offsets without the combining
    marks after it: a token chunk's ``end`` stopped before them, so ``text[start:end]`` lost a decomposed
    accent, a Thai or Hindi vowel sign or an emoji's variation selector at every chunk end — and belonged
    to no chunk. A chunk now ends after the marks that follow its last token (none of which a token covers)."""
    words = ["cafe\u0301", "noe\u0308l", "\u0e14\u0e35", "\u0e44\u0e17\u0e22", "\u2764\ufe0f", "plain"]
    text = " ".join(words)
    rows = small.encode_chunks([text], chunks="tokens:1", chunking=chunking)
    got = [text[s:e] for s, e in zip(rows.start.tolist(), rows.end.tolist(), strict=True)]
    assert got == words


@pytest.mark.parametrize(
    ("text", "spans", "needle"),
    [("", "junk", "spans must be a list"), ("   ", [[0, 99]], "span [0, 99] is not within the text"),
     ("\u200b", [[0, 1, 2]], "pair of integers")],
)
def test_whole_empty_documents_still_check_their_spans(small, text, spans, needle):
    """``empty_documents="whole"`` gives a document with no token one row of its whole text; its spans were
    then not read at all, so a spans entry that is no list of pairs, or a span past the text, was accepted
    without a word (as the same spans on a document with tokens are not). They are checked first."""
    with pytest.raises(OptionError, match=re.escape(needle)):
        small.encode_chunks([text, "hi"], chunks="spans", spans=[spans, [[0, 2]]], empty_documents="whole")
    if text:  # a valid span over a document of no token: still its one whole row
        rows = small.encode_chunks([text, "hi"], chunks="spans", spans=[[[0, len(text)]], [[0, 2]]],
                                   empty_documents="whole")  # fmt: skip
        assert rows.doc.tolist() == [0, 1] and (rows.start[0], rows.end[0]) == (0, len(text))
