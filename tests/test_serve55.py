"""Stop 55: the server against what existing clients send. Each request body is the one a real client builds
(read from that client's source), and each answer is compared with an independent reference: `Encoder.encode`
on the same texts, or the protocol's documented error object. Servers bind 127.0.0.1 on free ports and are
stopped here."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from clitools import assert_one_error_line  # noqa: E402
from serve_fakes import TEXTS, assert_same_vectors, post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")


@pytest.fixture(scope="module")
def tiny(encoder):
    from tokenpool.serve.runner import EncoderRunner

    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings(max_inputs=8)) as server:
        yield server


def openai_error(response: httpx.Response, status: int, param: str, *named: str) -> str:
    """The OpenAI error object of a refusal with this status and ``param``, whose message names each of ``named``."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    for name in named:
        assert name in error["message"], error
    return error["message"]


@pytest.mark.parametrize("path", ["/embeddings", "/v1/embeddings"])
def test_the_body_infinitys_own_client_sends_is_embedded(tiny, encoder, path):
    """infinity's generated client (infinity_client's OpenAIEmbeddingInputText.to_dict) posts to /embeddings with
    ``"model": "default/not-specified"`` and ``"modality": "text"`` set by default; docs/serve.md serves infinity's
    paths for its clients, yet the server refused the body (400, unrecognized field 'modality'). Text is what the
    server embeds, so it is taken; another modality is refused, naming the field and the value."""
    body = {"input": TEXTS[:3], "model": "default/not-specified", "modality": "text"}
    answer = post(tiny, path, body)
    assert answer.status_code == 200, answer.text
    assert_same_vectors([row["embedding"] for row in answer.json()["data"]], encoder.encode(TEXTS[:3]))
    refused = post(tiny, path, {"input": "a photo", "modality": "image"})
    openai_error(refused, 400, "modality", "'modality'", '"image"', '"text"')


@pytest.fixture
def served(monkeypatch):
    """`tokenpool serve` up to the point where it would serve: each model it loads (``loaded``) and each server
    it would start (``started``), recorded; nothing listens."""
    from types import SimpleNamespace

    from tokenpool.cli import serve as cli_serve
    from tokenpool.serve import server

    seen = SimpleNamespace(loaded=[], started=[])
    load = cli_serve._runner

    def loading(options, name, settings):
        seen.loaded.append(name)
        return load(options, name, settings)

    def record(runner, settings, *, sock=None, **_):
        seen.started.append((runner, settings))
        if sock is not None:
            sock.close()
        return 0

    monkeypatch.setattr(cli_serve, "_runner", loading)
    monkeypatch.setattr(server, "serve_forever", record)
    return seen


@pytest.mark.parametrize("models", [1, 2])
def test_served_model_names_beside_named_models_are_refused_before_loading(run, served, tiny_bert_folder, models):
    """``tokenpool serve --model mini=FOLDER --served-model-name alias`` loaded the model, then stopped with
    "served_model_names names the one model of a single-model server; several models are named by their keys":
    one model was served, and neither `served_model_names` nor "keys" is anything the command line has. It is
    refused before any model loads, naming the options as typed; a model named by NAME= keeps that name."""
    from tokenpool.errors import OptionError
    from tokenpool.serve.runner import EncoderRunner

    specs = [arg for k in range(models) for arg in ("--model", f"m{k}={tiny_bert_folder}")]
    code, _, err = run("serve", "--port", "0", *specs, "--served-model-name", "alias")
    assert_one_error_line(code, err, "--served-model-name", "NAME=")
    assert "several" not in err and "keys" not in err
    assert served.loaded == [] and served.started == []
    code, _, err = run("serve", "--port", "0", *specs)  # the reference: the same models, named by NAME=
    assert code == 0, err
    assert served.loaded == [f"m{k}" for k in range(models)]
    assert list(served.started[0][0]) == served.loaded
    with pytest.raises(OptionError, match="served_model_names"):  # the Python API: a mapping is named by its keys
        start_server({"m0": EncoderRunner(served.started[0][0]["m0"].encoder)}, ServeSettings(served_model_names=("a",)))


@pytest.mark.parametrize("given", ["encoder", "named encoder", "folder"])
def test_a_server_of_something_not_a_runner_is_a_type_error_naming_it(encoder, tiny_bert_folder, given):
    """``start_server(Encoder(...))`` (the docs wrap it: ``EncoderRunner(Encoder())``) raised ``AttributeError:
    'Encoder' object has no attribute 'name'`` from inside the service (a mapping: "... no attribute 'info'"), and
    a folder path "'str' object has no attribute 'name'". It is a TypeError naming what was given, which model,
    what it lacks and how to serve a model; nothing is started."""
    from tokenpool.serve import create_app
    from tokenpool.serve.runner import EncoderRunner

    runners = {"encoder": encoder, "named encoder": {"mine": encoder}, "folder": str(tiny_bert_folder)}[given]
    for build in (start_server, create_app):
        with pytest.raises(TypeError) as refused:
            build(runners)
        message = str(refused.value)
        assert "EncoderRunner(" in message and "not a server runner" in message, message
        assert ("Encoder" if given != "folder" else "str") in message and "info" in message, message
        assert ("'mine'" in message) == (given == "named encoder"), message
    with start_server(EncoderRunner(encoder)) as server:  # the reference: the Encoder as the docs serve it
        assert post(server, "/embed", {"inputs": "x"}).status_code == 200
