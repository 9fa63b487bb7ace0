"""Stop 59, requests and long documents: options that a long-document mode would ignore, and the modes' vectors
against independent references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokenpool.errors import OptionError

# ------------------------------------------------------- truncation_direction where nothing is cut (server only)


@pytest.fixture(scope="module")
def tiny_server(tiny_bert_folder):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server
    from tokenpool.serve.settings import ServeSettings

    encoder = Encoder(tiny_bert_folder, device="cpu", pooling="mean", max_length=16, normalize=True)
    with start_server(EncoderRunner(encoder), ServeSettings(batch_size=4, max_inputs=16)) as server:
        yield server


@pytest.mark.parametrize(("path", "field", "status"), [("/embed", "inputs", 422), ("/v1/embeddings", "input", 400)])
@pytest.mark.parametrize(
    ("whole", "named"),
    [({"late_chunking": True}, "'late_chunking': true"), ({"long_documents": "windows"}, "'long_documents'")],
)
def test_truncation_direction_with_whole_documents_is_refused(tiny_server, path, field, status, whole, named):
    """`"truncation_direction": "Left"` with late chunking or windows was served as if it were not sent: the texts
    are read whole, nothing is cut, so the side has no effect. It is refused as `"truncate": true` is there, naming
    both fields; without it the request is served."""
    from serve_fakes import post

    body = {field: [" ".join(["word"] * 40), "tail words"], **whole}
    response = post(tiny_server, path, {**body, "truncation_direction": "Left"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert "'truncation_direction': \"left\"" in message and named in message and "nothing is cut" in message, message
    if path.startswith("/v1/"):
        assert error["param"] == "truncation_direction"
    assert post(tiny_server, path, body).status_code == 200
    assert post(tiny_server, path, {**body, "truncate": False}).status_code == 200


# ------------------------------------------------ long_documents='windows' with naive chunks (nothing read in windows)


def test_windows_mode_with_naive_chunks_is_refused_on_the_command_line(run, tiny_bert_folder, tmp_path):
    """``embed --long-documents windows --chunks spans --chunking naive`` was accepted, and a span longer than the
    window was encoded from its first max_length tokens, as in truncate mode: the mode asked for had no effect. It
    is refused now (exit 2, one line naming both flags), as ``--window-stride`` is there; late chunks read windows
    and keep it, and naive chunks without it run."""
    from clitools import assert_one_error_line

    text = " ".join(["word"] * 40)  # over the 16-token window
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": text, "spans": [[0, len(text)]]}) + "\n")
    common = ["embed", src, "--model", tiny_bert_folder, "--max-length", 16, "--chunks", "spans"]
    code, _, err = run(*common, "-o", tmp_path / "a.npy", "--chunking", "naive", "--long-documents", "windows")
    assert_one_error_line(code, err, "--long-documents windows would be ignored", "--chunking naive")
    assert not (tmp_path / "a.npy").exists()
    for i, extra in enumerate((["--chunking", "naive"], ["--long-documents", "windows"], ["--long-documents",
                                                                                          "truncate"])):
        code, _, err = run(*common, "-o", tmp_path / f"ok{i}.npy", *extra, "-q")
        assert code == 0, err


def test_windows_mode_with_naive_chunks_is_refused_by_the_request_check():
    """The one check, for every caller that states the mode for the call: a per-call ``long_documents`` (Python
    `Encoder.run`), the encoder options of the CLI and Ray (``caller="cli"``: flags); the default mode is not."""
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    naive = {"chunks": "tokens:8", "chunking": "naive"}
    with pytest.raises(OptionError, match=r"^long_documents='windows' would be ignored: chunking='naive' encodes"):
        EncodeRequest(**naive, long_documents="windows").check()
    with pytest.raises(OptionError, match=r"^--long-documents windows would be ignored: --chunking naive encodes"):
        EncodeRequest(**naive, caller="cli").check(EncoderOptions(long_documents="windows"))
    EncodeRequest(**naive).check(EncoderOptions())
    EncodeRequest(**naive, long_documents="truncate").check(EncoderOptions())
    EncodeRequest(chunks="tokens:8").check(EncoderOptions(long_documents="windows"))  # (a per-call mode: stop 61)
    EncodeRequest(long_documents="windows").check(EncoderOptions(long_documents="windows"))


def test_an_encoder_holding_windows_mode_still_makes_naive_chunks(small):
    """An `Encoder` may hold windows mode for its other calls: its naive chunks are refused only where the call
    itself states the mode; they equal `encode` of the chunk texts."""
    from tokenpool import Encoder
    from tokenpool.model.request import EncodeRequest

    encoder = Encoder(small.model_path, pooling="mean", max_length=16, normalize=False, device="cpu",
                      long_documents="windows")  # fmt: skip
    text = " ".join(["word"] * 40)
    rows = encoder.encode_chunks([text], chunks="tokens:8", chunking="naive")
    texts = [text[s:e] for s, e in zip(rows.start, rows.end, strict=True)]
    np.testing.assert_allclose(rows.vectors, small.encode(texts), atol=1e-6)
    with pytest.raises(OptionError, match="long_documents='windows' would be ignored"):
        encoder.run(EncodeRequest(output="chunks", chunks="tokens:8", chunking="naive", long_documents="windows"),
                    [text])  # fmt: skip


# --------------------------------------------------------------------- naive boundary chunks behind a prompt


def test_a_naive_boundary_chunk_over_max_length_behind_a_prompt_is_refused_not_truncated():
    """Boundary chunks are counted alone, without the prompt; behind a prompt whose last word joins a chunk's
    first ("query" + "fox" is query ##fo ##x in WordPiece), a naive chunk of MAX tokens came to 17 with the
    special tokens, over max_length 16, and was encoded from its first 16 tokens without a word (the docs: "no
    naive chunk is truncated"). It is refused now, as a naive token chunk is; without the prompt it fits and
    equals `encode` of its text."""
    pytest.importorskip("semantic_text_splitter")
    from tokenpool import Encoder

    encoder = Encoder(max_length=16, device="cpu")
    text = "dog " * 5 + "\n\n" + "fox " * 13
    chunk = "fox " * 12 + "fox"
    assert encoder.tokenization.encode([chunk], "query", truncation=None)[1][0] == 17  # (the independent count)
    with pytest.raises(OptionError, match=r"document 0, chunk 1: .* is 17 tokens .* over max_length 16"):
        encoder.encode_chunks([text], chunks="boundaries:13", chunking="naive", prompt="query")
    rows = encoder.encode_chunks([text], chunks="boundaries:13", chunking="naive")
    assert [text[s:e] for s, e in zip(rows.start, rows.end, strict=True)] == ["dog " * 4 + "dog", chunk]
    np.testing.assert_allclose(rows.vectors, encoder.encode(["dog " * 4 + "dog", chunk]), atol=1e-6)


def test_windows_mode_with_naive_chunks_is_refused_by_ray_before_the_dataset_is_read():
    """Ray's `embed_dataset` runs the same check on its encoder options, before anything of the dataset."""
    pytest.importorskip("ray")
    from tokenpool.integrations.ray import embed_dataset

    with pytest.raises(OptionError, match=r"^long_documents='windows' would be ignored: chunking='naive'"):
        embed_dataset(None, chunks="tokens:8", chunking="naive", long_documents="windows")
