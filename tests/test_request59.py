"""Stop 59, requests and long documents: options that a long-document mode would ignore, and the modes' vectors
against independent references."""

from __future__ import annotations

import pytest

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


@pytest.mark.xfail(strict=True, reason="needs the serve/service._check_documents change (not this helper's file)")
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
