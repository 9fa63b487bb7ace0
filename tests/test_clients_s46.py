"""Stop 46's client hunt: `tokenpool serve` through huggingface_hub's InferenceClient, the client TEI's own docs
recommend (the openai package, LlamaIndex and httpx are tested in test_serve.py). A tiny random BERT behind a
server on 127.0.0.1 (a free port), stopped here; vectors against `Encoder.encode` (`small`: the same model)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
hub = pytest.importorskip("huggingface_hub")

from serve_fakes import TEXTS, assert_same_vectors, tiny_server  # noqa: E402

from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    with tiny_server(tiny_bert_folder, ServeSettings(api_key="k3y")) as server:
        yield server


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1, which makes huggingface_hub refuse every URL, 127.0.0.1 included."""
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize("path", ["", "/embed"])  # TEI's root route, as the client posts a URL model; and /embed
def test_inference_client_feature_extraction_gets_encoder_vectors(tiny, small, path):
    client = hub.InferenceClient(model=tiny.url + path, token="k3y", timeout=60)
    assert_same_vectors(client.feature_extraction(TEXTS, truncate=True), small.encode(TEXTS))
    one = client.feature_extraction(TEXTS[1], normalize=True, dimensions=8, truncate=True)
    assert_same_vectors(one, small.encode(TEXTS[1:2], normalize=True, truncate_dim=8))
    left = client.feature_extraction(TEXTS[1], truncate=True, truncation_direction="left")
    assert not np.allclose(left, small.encode(TEXTS[1:2]))  # the text's last tokens, not its first
    with pytest.raises(hub.errors.HfHubHTTPError, match="send \"truncate\": true") as refused:
        client.feature_extraction(TEXTS[1])  # over the 16-token window, as TEI without --auto-truncate
    assert refused.value.response.status_code == 413
    with pytest.raises(hub.errors.HfHubHTTPError, match="prompt_name 'nope'"):
        client.feature_extraction("x", prompt_name="nope")
    with pytest.raises(hub.errors.HfHubHTTPError, match="incorrect API key"):
        hub.InferenceClient(model=tiny.url + path, token="wrong").feature_extraction("x")


def test_async_inference_client(tiny, small):
    async def run():
        client = hub.AsyncInferenceClient(model=tiny.url, token="k3y", timeout=60)
        return await asyncio.gather(*(client.feature_extraction(text, truncate=True) for text in TEXTS))

    assert_same_vectors(np.concatenate(asyncio.run(run())), small.encode(TEXTS))
