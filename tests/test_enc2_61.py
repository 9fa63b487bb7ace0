"""Stop 61 (enc2): a per-call long_documents with late chunks is refused, not ignored; token_spans returns spans
on an encoder with a truncate_dim (docs/long-documents.md)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions
from tokenpool.model.request import EncodeRequest

TEXT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " * 3


@pytest.mark.parametrize("mode", ["windows", "truncate"])
@pytest.mark.parametrize("caller, said", [
    ("python", ("long_documents='{mode}'", "chunking='late'")),
    ("cli", ("--long-documents {mode}", "--chunking late")),
])  # fmt: skip
def test_a_per_call_long_documents_with_late_chunks_is_refused(mode, caller, said):
    # late chunks are pooled from the whole document's windows in either mode: the call's mode would be ignored
    request = EncodeRequest(output="chunks", chunks="tokens:8", chunking="late", long_documents=mode, caller=caller)
    for options in (None, EncoderOptions(long_documents="windows")):
        with pytest.raises(OptionError) as err:
            request.check(options)
        for part in said:
            assert part.format(mode=mode) in str(err.value)


@pytest.mark.parametrize("mode", ["windows", "truncate"])
def test_encoder_run_refuses_the_pair_and_the_encoders_own_mode_still_chunks(small, tiny_bert_folder, mode):
    request = EncodeRequest(output="chunks", chunks="tokens:8", long_documents=mode)
    with pytest.raises(OptionError, match=f"long_documents='{mode}'"):
        small.run(request, [TEXT])
    # an Encoder built with windows: its late chunks are those of a truncate-mode encoder (windows read in either
    # mode, docs/long-documents.md), and its naive chunks are `encode(chunk_texts)`
    windows = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu",
                      long_documents="windows")  # fmt: skip
    late = windows.encode_chunks([TEXT], chunks="tokens:8")
    assert np.array_equal(late.vectors, small.encode_chunks([TEXT], chunks="tokens:8").vectors)
    naive = windows.encode_chunks([TEXT], chunks="tokens:8", chunking="naive")
    texts = [TEXT[s:e] for s, e in zip(naive.start, naive.end, strict=True)]
    assert np.allclose(naive.vectors, small.encode(texts), atol=1e-6)


def test_naive_chunks_honour_a_per_call_truncate_and_refuse_windows(small):
    # naive chunks are encoded as truncate mode encodes them: a per-call "truncate" is what happens, "windows"
    # would be ignored (refused since stop 4x)
    truncate = EncodeRequest(output="chunks", chunks="tokens:8", chunking="naive", long_documents="truncate")
    plain = small.encode_chunks([TEXT], chunks="tokens:8", chunking="naive")
    assert np.array_equal(small.run(truncate, [TEXT]).vectors, plain.vectors)
    windows = EncodeRequest(output="chunks", chunks="tokens:8", chunking="naive", long_documents="windows")
    with pytest.raises(OptionError, match="long_documents='windows' would be ignored"):
        small.run(windows, [TEXT])


def test_token_spans_on_an_encoder_with_truncate_dim_gives_the_spans(tiny_bert_folder, small):
    # token_spans returns ids and spans, no vectors (docs/long-documents.md): the encoder's truncate_dim, which
    # cuts pooled vectors, has nothing to cut there
    cut = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu", truncate_dim=8)
    for mode in ("truncate", "windows"):
        got, want = cut.token_spans([TEXT], long_documents=mode), small.token_spans([TEXT], long_documents=mode)
        for (ids, spans), (want_ids, want_spans) in zip(got, want, strict=True):
            assert np.array_equal(ids, want_ids) and np.array_equal(spans, want_spans)
    ids, spans = cut.token_spans("one two", special_tokens=False)
    assert [list(s) for s in spans] == [[0, 3], [4, 7]]
    with pytest.raises(OptionError, match="truncate_dim=8 cannot be used with output='tokens'"):
        cut.encode([TEXT], output="tokens")  # the vectors themselves stay refused


def test_tei_tokenize_on_a_server_with_a_dimension_answers_the_tokens(tiny_bert_folder):
    """``tokenpool serve --dim 8``'s ``POST /tokenize`` answered 422 "truncate_dim=8 cannot be used with
    output='tokens'" (it runs `Encoder.token_spans`); now the tokens, the transformers tokenizer's ids."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from serve_fakes import post
    from transformers import AutoTokenizer

    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server
    from tokenpool.serve.settings import ServeSettings

    cut = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu", truncate_dim=8)
    with start_server(EncoderRunner(cut, name="tiny"), ServeSettings()) as server:
        response = post(server, "/tokenize", {"inputs": [TEXT]})
    assert response.status_code == 200, response.text
    want = AutoTokenizer.from_pretrained(tiny_bert_folder, local_files_only=True)(TEXT)["input_ids"]
    assert [token["id"] for token in response.json()[0]] == want
