"""Stop 65, spans: a spans spec as `parse_chunks` reads it (" Spans", "SPANS") is spans for the CLI's and the
server's checks of the spans that go with it, as it is for `Encoder.encode_chunks`."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402

TEXTS = ["Cats purr softly. Dogs bark at night.", "short one"]
SPANS = [[[18, 37], [0, 17]], [[0, 9]]]


@pytest.mark.parametrize("spec", ["SPANS", " Spans "])
def test_unread_options_reads_the_spec_as_parse_chunks_does(spec):
    """`unread_options` compared the raw string: "SPANS" was no spans spec; an unparsed spec still is none."""
    from tokenpool.model.request import unread_options

    assert unread_options({"spans"}, chunks=spec, precision="float32", calibration=None) == []
    for other in ("tokens:8", "bogus", None):
        assert unread_options({"spans"}, chunks=other, precision="float32", calibration=None) == [
            ("spans", "spans chunks")
        ]


def test_embed_chunks_upper_case_spans_takes_a_spans_field(run, tiny_bert_folder, tmp_path):
    """`tokenpool embed --chunks SPANS --spans-field marks` exited "--spans-field is not supported without
    --chunks spans" though --chunks SPANS alone reads spans; now its rows are encode_chunks' for "SPANS"."""
    import pyarrow.parquet as pq

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "marks": s}) + "\n" for t, s in zip(TEXTS, SPANS, strict=True)))
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", src, "-o", out, "--chunks", "SPANS", "--spans-field", "marks",
                       "--model", tiny_bert_folder, "--max-length", 16, "-q")  # fmt: skip
    assert code == 0, err
    table = pq.read_table(out).to_pydict()
    want = Encoder(tiny_bert_folder, max_length=16, device="cpu").encode_chunks(TEXTS, chunks="SPANS", spans=SPANS)
    assert (table["doc"], table["start"], table["end"]) == (want.doc.tolist(), want.start.tolist(), want.end.tolist())
    np.testing.assert_allclose(np.array(table["embedding"]), want.vectors, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from serve_fakes import tiny_server

    from tokenpool.serve.settings import ServeSettings

    with tiny_server(tiny_bert_folder, ServeSettings()) as server:
        yield server


@pytest.mark.parametrize("spec", ["SPANS", " spans"])
def test_embed_documents_reads_an_upper_case_spans_spec(tiny, tiny_bert_folder, spec):
    """POST /embed_documents {"chunks": "SPANS", "spans": ...} was refused 422 "'spans' goes with "chunks":
    "spans", and only with it" though 'chunks' accepts "SPANS"; now its chunks are encode_chunks' for it."""
    from serve_fakes import assert_same_vectors, post

    response = post(tiny, "/embed_documents", {"documents": TEXTS, "chunks": spec, "spans": SPANS})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    small = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    want = small.encode_chunks(TEXTS, chunks=spec, spans=SPANS)
    assert [(d["document"], d["start"], d["end"]) for d in data] == list(
        zip(want.doc.tolist(), want.start.tolist(), want.end.tolist(), strict=True)
    )
    assert_same_vectors([d["embedding"] for d in data], want.vectors)


def test_embed_documents_upper_case_spans_without_spans_is_refused_as_spans_is(tiny, tiny_bert_folder):
    """{"chunks": "SPANS"} without 'spans' passed the check and failed later (no 422 naming 'spans');
    encode_chunks refuses it ("needs one list of spans per text"): now the 422 of "chunks": "spans"."""
    from serve_fakes import post

    from tokenpool.errors import OptionError

    small = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    with pytest.raises(OptionError, match="needs one list of spans per text"):
        small.encode_chunks(TEXTS, chunks="SPANS")
    same = post(tiny, "/embed_documents", {"documents": TEXTS, "chunks": "spans"})
    response = post(tiny, "/embed_documents", {"documents": TEXTS, "chunks": "SPANS"})
    assert (response.status_code, response.json()) == (same.status_code, same.json()) == (422, same.json())
    assert "'spans' goes with" in response.json()["error"]
