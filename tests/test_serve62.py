"""Stop 62's hunt in `tokenpool serve`: what docs/serve.md tells a user who compares the server with TEI. Servers
bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serve_fakes import FakeRunner

from tokenpool.serve.server import start_server
from tokenpool.serve.settings import ServeSettings

SERVE_DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


def test_the_docs_say_a_browser_page_gets_no_cors_headers():
    """TEI answers a browser's CORS preflight with `--cors-allow-origin`; tokenpool serve has no CORS headers, so
    a web page on another origin that called TEI cannot call it, yet docs/serve.md's list of what TEI does that
    tokenpool does not left CORS out. The preflight's answer is checked here, and the list now names it."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    with start_server(FakeRunner(max_length=16), ServeSettings()) as server:
        answer = httpx.options(server.url + "/embed", headers=preflight)
    assert answer.status_code == 405 and "access-control-allow-origin" not in answer.headers
    docs = SERVE_DOCS.read_text(encoding="utf-8")
    missing = docs.split("## What TEI and infinity do that tokenpool serve does not (yet)", 1)[1]
    assert "--cors-allow-origin" in missing and "405" in " ".join(missing.split())


def _naive_counts(folder, documents: list[str], spans: list | None, chunks: str) -> tuple[list, list]:
    """Per naive chunk (as `Encoder.plan_chunks` plans them): the tokens its text is embedded from and the
    tokens cut, from transformers' own count of the chunk text with special tokens (window 16)."""
    from transformers import AutoTokenizer

    from tokenpool import Encoder

    tokenizer = AutoTokenizer.from_pretrained(folder)
    plan = Encoder(folder, max_length=16, device="cpu").plan_chunks(documents, chunks=chunks, spans=spans)
    rows = zip(plan.doc, plan.start, plan.end, strict=True)
    counts = [len(tokenizer(documents[d][s:e])["input_ids"]) for d, s, e in rows]
    return [min(count, 16) for count in counts], [max(count - 16, 0) for count in counts]


@pytest.mark.parametrize("chunks", ["spans", "tokens:5:1"])
def test_a_naive_request_split_into_passes_counts_every_chunk(tiny_bert_folder, chunks):
    """A naive /embed_documents request counts the tokens its chunks were embedded from (prompt_tokens) and
    those cut from a span over the window (truncated_tokens, tokenpool_tokens_truncated_total), over all its
    documents also when the server runs them in several passes (--batch-size 1): `service.joined` kept the
    first pass's per-chunk counts, so a split request counted one document's chunks (or failed on lengths).
    Before, usage counted each document's own tokens and no cut at all."""
    pytest.importorskip("uvicorn")
    from serve_fakes import metric_value, post, tiny_server
    from transformers import AutoTokenizer

    long = " ".join(f"w{k}" for k in range(20))
    documents = ["Short note on a cat.", long, "A second, longer note: " + long]
    spans = [[[0, 5], [6, 20]], [[0, len(long)], [3, 9]], [[0, len(documents[2])]]]
    spans = spans if chunks == "spans" else None
    embedded, cut = _naive_counts(tiny_bert_folder, documents, spans, chunks)
    assert (sum(cut) > 0) == (chunks == "spans")  # only a span is cut to the window
    body = {"documents": documents, "chunks": chunks, "chunking": "naive", "spans": spans}
    with tiny_server(tiny_bert_folder, ServeSettings(batch_size=1, max_wait_ms=0)) as server:
        before = metric_value(server, "tokenpool_tokens_truncated_total")
        answer = post(server, "/embed_documents", body)
        assert answer.status_code == 200, answer.text
        rise = metric_value(server, "tokenpool_tokens_truncated_total") - before
        late = post(server, "/embed_documents", {**body, "chunking": "late"}).json()["usage"]
    data = answer.json()
    assert len(data["data"]) == len(embedded)
    tokens = sum(embedded)
    assert data["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_tokens": sum(cut)}
    assert rise == sum(cut)
    own = sum(len(AutoTokenizer.from_pretrained(tiny_bert_folder)(d)["input_ids"]) for d in documents)
    assert late == {"prompt_tokens": own, "total_tokens": own, "truncated_tokens": 0}  # late: the documents'


def test_joined_parts_keep_each_chunks_token_counts_in_document_order(small):
    """`service.joined` puts a whole-document job's parts (documents taken in any order, a few a pass) back
    in document order: the naive chunks' token counts must follow their chunks, as in one `encode_chunks`."""
    from tokenpool.serve.service import joined

    long = " ".join(f"w{k}" for k in range(20))
    documents = ["Short note.", long, "Another " + long, "x y"]
    spans = [[[0, 5]], [[0, len(long)], [2, 7]], [[0, len(documents[2])]], [[0, 3]]]
    whole = small.encode_chunks(documents, chunks="spans", spans=spans, chunking="naive")
    parts = [(taken, small.encode_chunks([documents[i] for i in taken], chunks="spans",
                                         spans=[spans[i] for i in taken], chunking="naive"))
             for taken in ([2, 0], [3], [1])]  # fmt: skip
    found = joined(parts)
    for name in ("doc", "chunk", "start", "end", "tokens", "truncated"):
        np.testing.assert_array_equal(getattr(found, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(found.vectors, whole.vectors)
    late = joined([([1], small.encode_chunks([long], chunks="tokens:4")),
                   ([0], small.encode_chunks(["a b c"], chunks="tokens:4"))])  # fmt: skip
    assert late.tokens is None and late.truncated is None  # late chunks: none
    assert list(late.doc) == [0] + [1] * (len(late.doc) - 1)
