"""`tokenpool serve` on infinity's unprefixed OpenAI paths (``POST /embeddings``, ``GET /models``), for clients whose
base URL has no ``/v1``. Servers bind 127.0.0.1 on free ports and stop by themselves; the fake runner keeps them
fast."""

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
