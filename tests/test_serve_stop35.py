"""Corners of `tokenpool serve` found by the stop-35 bug hunt. Servers bind 127.0.0.1 on free ports and stop by
themselves; a tiny random BERT (`tiny_bert_folder`) or the fake runner (`serve_fakes.FakeRunner`) keeps them fast."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "stop35-key"


class CountingRunner:
    """An `EncoderRunner` that counts its whole-document calls (each one runs forward passes)."""

    def __init__(self, runner):
        self._runner = runner
        self.document_calls = 0

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def embed_documents(self, *args, **kwargs):
        self.document_calls += 1
        return self._runner.embed_documents(*args, **kwargs)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, device="cpu", pooling="mean", max_length=16, normalize=True)


@pytest.fixture(scope="module")
def limited(tiny_encoder):
    """The tiny model behind a server of at most 10 chunks per request."""
    from tokenpool.serve.runner import EncoderRunner

    runner = CountingRunner(EncoderRunner(tiny_encoder))
    with start_server(runner, ServeSettings(batch_size=4, max_chunks=10, max_inputs=16, max_queue=64)) as server:
        server.runner = runner
        yield server


def _words(n: int) -> str:
    return " ".join(["word"] * n)  # one token each


@pytest.mark.parametrize(
    ("body", "count"),
    [
        ({"documents": [_words(11)], "chunks": "tokens:1"}, "11"),
        ({"documents": [_words(6), _words(5)], "chunks": "tokens:1"}, "11"),
        ({"documents": [_words(40)], "chunks": "tokens:4:1"}, "13"),  # starts 0, 3, ..., 36
        ({"documents": [_words(12)], "chunks": "spans", "spans": [[[0, 4]] * 11]}, "11"),
        ({"documents": [_words(44)], "chunks": "boundaries:4"}, "at least 11"),
        ({"inputs": [_words(1)] * 11, "late_chunking": True}, "11"),
    ],
)
def test_the_chunks_of_one_request_are_bounded_before_any_forward_pass(limited, body, count):
    """A whole-document request over a 1 MB document with "chunks": "tokens:1" answered ~250k vectors (~1 GB of
    JSON): nothing bounded the chunks of a request. Past --max-chunks it is now refused (413, naming the count
    and the limit) before any forward pass."""
    path = "/embed" if "inputs" in body else "/embed_documents"
    before = limited.runner.document_calls
    response = post(limited, path, body)
    assert response.status_code == 413, response.text
    message = response.json()["error"]
    assert f"makes {count} chunks" in message and "at most 10" in message and "--max-chunks" in message, message
    assert limited.runner.document_calls == before  # refused before the model ran


@pytest.mark.parametrize(
    "body",
    [
        {"documents": [_words(10)], "chunks": "tokens:1"},
        {"documents": [_words(4), _words(6)], "chunks": "tokens:1"},
        {"documents": [_words(30)], "chunks": "tokens:4:1"},  # starts 0, 3, ..., 27: 10 chunks
        {"documents": [_words(12)], "chunks": "spans", "spans": [[[0, 4]] * 10]},
        {"inputs": [_words(1)] * 10, "late_chunking": True},
    ],
)
def test_a_request_of_exactly_max_chunks_is_served(limited, body):
    path = "/embed" if "inputs" in body else "/embed_documents"
    response = post(limited, path, body)
    assert response.status_code == 200, response.text
    rows = response.json() if "inputs" in body else response.json()["data"]
    assert len(rows) == 10


def test_max_chunks_is_a_checked_setting():
    from tokenpool.errors import OptionError

    assert ServeSettings().max_chunks == 4096
    with pytest.raises(OptionError, match="max_chunks"):
        ServeSettings(max_chunks=0)


AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed():
    """The fake model behind a server that needs an API key."""
    with start_server(FakeRunner(), ServeSettings(batch_size=4, api_key=KEY)) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "body"),
    [("/embed/", {"inputs": ["a b", "c"]}), ("/v1/embeddings/", {"input": ["a b", "c"]}), ("/embed//", {"inputs": "a"})],
)
def test_a_trailing_slash_is_the_route_without_it(keyed, path, body):
    """``POST /embed/`` was answered Starlette's 307 redirect to a Location built from the Host header (a POST
    redirected, and a client that follows it may lose its body); it is now the route without the slash."""
    response = post(keyed, path, body, headers=AUTH)
    assert response.status_code == 200, (response.status_code, response.headers)
    assert "location" not in response.headers
    assert response.json() == post(keyed, path.rstrip("/"), body, headers=AUTH).json()


def test_trailing_slashes_on_the_other_routes(keyed):
    assert httpx.get(keyed.url + "/health/").status_code == 200  # public, as /health
    assert httpx.get(keyed.url + "/info/").status_code == 401  # gated, as /info
    models = httpx.get(keyed.url + "/v1/models/", headers=AUTH)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "fake-model"
    unknown = post(keyed, "/nowhere/", {"inputs": "a"}, headers=AUTH)
    assert unknown.status_code == 404 and "location" not in unknown.headers
    assert "no endpoint /nowhere;" in unknown.json()["error"], unknown.text


class SparseFake(FakeRunner):
    """The fake model as a sparse (SPLADE) one."""

    name = "sparse-fake"
    is_sparse = True


def test_post_root_is_teis_compatibility_route(keyed):
    """TEI serves ``POST /`` as its compatibility route (``/embed`` for an embedding model) and ``GET /`` as a
    public health check; both were a 404 here, so TEI clients pointed at the root failed."""
    body = {"inputs": ["a b", "c"], "normalize": False}
    response = post(keyed, "/", body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == post(keyed, "/embed", body, headers=AUTH).json()
    assert "x-total-tokens" in response.headers
    refused = post(keyed, "/", {"inputs": 5}, headers=AUTH)  # TEI's error object, as /embed
    assert refused.status_code == 422 and refused.json()["error_type"] == "Validation", refused.text
    assert post(keyed, "/", body).status_code == 401  # the key gates it
    health = httpx.get(keyed.url + "/")  # public, as /health
    assert health.status_code == 200 and health.content == b""
    assert httpx.put(keyed.url + "/", headers=AUTH).status_code == 405


def test_post_root_is_embed_sparse_for_a_sparse_model():
    with start_server(SparseFake(), ServeSettings(batch_size=4)) as server:
        response = post(server, "/", {"inputs": ["a b"]})
        assert response.status_code == 200, response.text
        assert response.json() == post(server, "/embed_sparse", {"inputs": ["a b"]}).json()
        assert set(response.json()[0][0]) == {"index", "value"}


@pytest.fixture(scope="module")
def fake():
    with start_server(FakeRunner(max_length=16), ServeSettings(batch_size=4, max_input_chars=50)) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v1/embeddings", {"input": ""}, "'input'"),
        ("/v1/embeddings", {"input": ["a", ""]}, "'input[1]'"),
        ("/embed", {"inputs": "x" * 51}, "'inputs'"),
        ("/embed", {"inputs": ["a", "x" * 51]}, "'inputs[1]'"),
        ("/embed", {"inputs": " ".join(["w"] * 20)}, "'inputs'"),  # over the 16-token window
        ("/embed", {"inputs": ["a", " ".join(["w"] * 20)]}, "'inputs[1]'"),
        ("/embed_documents", {"documents": "", "chunks": "tokens:4"}, "'documents'"),
    ],
)
def test_an_input_sent_as_one_string_is_named_by_its_field(fake, path, body, named):
    """`{"input": ""}` (one string, not a list) was refused as "'input[0]' is an empty string": an index into a
    list the client never sent. A single string is now named by its field; a list's entries keep their index."""
    response = post(fake, path, body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert message.startswith(named + " "), message


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        ("Basic dXNlcjpzdGFwMzUta2V5", "uses the Basic scheme; this server expects the API key as a Bearer token"),
        (f"Token {KEY}", "uses the Token scheme; this server expects the API key as a Bearer token"),
        (KEY, "has no scheme; send the API key as 'Authorization: Bearer <key>'"),
        (None, "missing API key"),
        ("Bearer wrong", "incorrect API key"),
    ],
)
@pytest.mark.parametrize("path", ["/embed", "/v1/embeddings"])
def test_a_credential_of_another_scheme_is_told_a_bearer_token_is_expected(keyed, path, authorization, expected):
    """`Authorization: Basic ...` against a server with an API key was answered "missing API key", though the
    client had sent one (in another scheme). It now hears which scheme it used and that a Bearer token is
    expected; the credentials themselves are never repeated."""
    headers = {} if authorization is None else {"Authorization": authorization}
    response = post(keyed, path, {"input" if path.startswith("/v1/") else "inputs": "a"}, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert expected in message and "API key" in message, message
    assert "dXNlcjpzdGFwMzUta2V5" not in message and KEY not in message


@pytest.mark.parametrize(("path", "field", "status"), [("/embed", "inputs", 422), ("/v1/embeddings", "input", 400)])
@pytest.mark.parametrize(
    ("whole", "named"),
    [({"late_chunking": True}, "'late_chunking': true"), ({"long_documents": "windows"}, "'long_documents'")],
)
def test_truncate_with_whole_documents_is_refused(limited, path, field, status, whole, named):
    """`"truncate": true` with late chunking (or windows) was silently ignored: the texts were read whole, nothing
    cut, and the answer looked like a truncated one. The combination is now refused, naming both fields;
    `"truncate": false` says what happens and is served."""
    text = " ".join(["word"] * 40)  # over the 16-token window
    body = {field: [text, "tail words"], "truncate": True, **whole}
    response = post(limited, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert "'truncate': true" in message and named in message and "nothing is cut" in message, message
    if path.startswith("/v1/"):
        assert error["param"] == "truncate"
    served = post(limited, path, {**body, "truncate": False})
    assert served.status_code == 200, served.text


def test_max_chunks_is_a_command_line_option():
    """`tokenpool serve --max-chunks N` reaches `ServeSettings.max_chunks` (the 413 message names the option)."""
    from tokenpool.cli.serve import add_parser, settings_from

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert settings_from(parser.parse_args(["serve", "--max-chunks", "7"])).max_chunks == 7
    assert settings_from(parser.parse_args(["serve"])).max_chunks == 4096
