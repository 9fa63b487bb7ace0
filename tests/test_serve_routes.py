"""`tokenpool serve`'s routes: unprefixed OpenAI paths, trailing slashes, TEI's root route, the API key's scheme.

Servers bind 127.0.0.1 on free ports and stop by themselves; the fake runner keeps them fast."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import TEXTS, FakeRunner, post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with start_server(FakeRunner(), ServeSettings(batch_size=4)) as running:
        yield running


def test_openai_client_without_v1_in_its_base_url(server):
    """The openai package pointed at the bare server URL (as infinity's clients are) gets the /v1 answers."""
    openai = pytest.importorskip("openai")
    bare = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    prefixed = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    got = bare.embeddings.create(model="text-embedding-3-small", input=TEXTS[:3])
    want = prefixed.embeddings.create(model="text-embedding-3-small", input=TEXTS[:3])
    np.testing.assert_array_equal([d.embedding for d in got.data], [d.embedding for d in want.data])
    assert got.usage.prompt_tokens == want.usage.prompt_tokens > 0
    assert [m.id for m in bare.models.list()] == [m.id for m in prefixed.models.list()] == ["fake-model"]
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        bare.embeddings.create(model="m", input="a", dimensions=0)


def test_unprefixed_paths_answer_openai_error_objects(server):
    """Errors on /embeddings are OpenAI's objects (400 with message/type/param), not TEI's (422 with error_type)."""
    response = post(server, "/embeddings", {"input": []})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "input" in error["message"]
    assert post(server, "/embed", {"inputs": []}).json().get("error_type") == "Empty"  # TEI's route unchanged
    listed = httpx.get(server.url + "/nowhere").json()["error"]
    assert "/embeddings" in listed and "/models" in listed
    assert httpx.post(server.url + "/models").status_code == 405


KEY = "stop35-key"

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
    assert health.status_code == 200 and set(health.json()) == {"unix"}  # (infinity's body: test_serve56)
    assert httpx.put(keyed.url + "/", headers=AUTH).status_code == 405


def test_post_root_is_embed_sparse_for_a_sparse_model():
    with start_server(SparseFake(), ServeSettings(batch_size=4)) as server:
        response = post(server, "/", {"inputs": ["a b"]})
        assert response.status_code == 200, response.text
        assert response.json() == post(server, "/embed_sparse", {"inputs": ["a b"]}).json()
        assert set(response.json()[0][0]) == {"index", "value"}


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
