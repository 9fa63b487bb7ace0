"""Stop 45's hunt for where `tokenpool serve` answers otherwise than TEI and OpenAI, or gives a 500 to bad input.

Servers bind 127.0.0.1 on free ports and are stopped here; a tiny random BERT (`tiny_bert_folder`, with
all-MiniLM-L6-v2's tokenizer) or the fake runner (`serve_fakes.FakeRunner`) keeps them fast."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from clitools import assert_one_error_line  # noqa: E402
from serve_fakes import TEXTS, FakeRunner, assert_same_vectors, post, tiny_server  # noqa: E402
from test_serve_corners import served  # noqa: E402, F401  (the fixture: what `tokenpool serve` would serve)

from tokenpool.errors import one_line  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    with tiny_server(tiny_bert_folder, ServeSettings(batch_size=4)) as server:
        yield server


@pytest.fixture(scope="module")
def fake():
    with start_server(FakeRunner(), ServeSettings(batch_size=4)) as server:
        yield server


@pytest.mark.parametrize("chunks", ["tokens:99999999999999999999", "tokens:99999999999999999999:3",
                                    "boundaries:99999999999999999999"])  # fmt: skip
def test_a_chunk_size_past_int64_is_the_librarys_refusal_not_a_500(tiny, small, chunks):
    """A chunk size past int64 overflowed the server's chunk count (numpy): 500 "internal server error". Now it
    is refused as `Encoder.encode_chunks` refuses it, with its message naming the field as JSON, as every bad chunk
    spec (422; since stop 56 the spec's own check refuses sizes from 2**63, before any count)."""
    document = "a few words of one document"
    with pytest.raises(ValueError) as refusal:
        small.encode_chunks([document], chunks=chunks)
    response = post(tiny, "/embed_documents", {"documents": [document], "chunks": chunks})
    assert response.status_code == 422, response.text
    said = one_line(refusal.value).replace(f"chunks={chunks!r}", f"'chunks': \"{chunks}\"")  # (its JSON spelling)
    assert response.json() == {"error": said, "error_type": "Validation"}


def test_an_openai_client_without_v1_in_its_base_url_looks_its_model_up(fake):
    """``GET /models/{id}`` was a 404 in TEI's error object: the openai package pointed at the bare server URL
    listed the models but could not retrieve one. It now answers as ``GET /v1/models/{id}``."""
    openai = pytest.importorskip("openai")
    bare = openai.OpenAI(base_url=fake.url, api_key="unused", max_retries=0)
    prefixed = openai.OpenAI(base_url=fake.url + "/v1", api_key="unused", max_retries=0)
    for name in ("fake-model", "text-embedding-3-small", "org/model"):  # (infinity's paths name no owner: test_serve56)
        assert bare.models.retrieve(name).model_copy(update={"owned_by": "tokenpool"}) == prefixed.models.retrieve(name)


def test_an_unknown_model_on_the_unprefixed_path_is_openais_404():
    openai = pytest.importorskip("openai")
    with start_server(FakeRunner(), ServeSettings(batch_size=4, strict_model_name=True)) as server:
        errors = []
        for base in (server.url, server.url + "/v1"):
            with pytest.raises(openai.NotFoundError) as refused:
                openai.OpenAI(base_url=base, api_key="unused", max_retries=0).models.retrieve("nope")
            errors.append(refused.value.body)
    assert errors[0] == errors[1] and errors[0]["code"] == "model_not_found", errors


def test_info_has_teis_served_model_name(fake):
    """TEI's /info names its model for OpenAI requests (``served_model_name``, v1.9); tokenpool's /info had only
    its own list. It is the name the OpenAI route answers with."""
    info = httpx.get(fake.url + "/info").json()
    answered = post(fake, "/v1/embeddings", {"input": "a", "model": "anything"}).json()["model"]
    assert info["served_model_name"] == answered == info["served_model_names"][0]


@pytest.mark.parametrize("path", ["/embed", "/"])
def test_tei_routes_send_teis_compute_headers(tiny, small, path):
    """TEI answers ``x-compute-tokens`` (the tokens embedded) and ``x-compute-characters`` (the inputs'
    characters); tokenpool sent neither, only its own ``x-total-tokens``."""
    texts = [TEXTS[3], "word " * 40, ""]  # non-ASCII, one cut at the window, an empty one
    response = post(tiny, path, {"inputs": texts, "truncate": True})
    assert response.status_code == 200, response.text
    tokens = sum(min(len(small.tokenizer(text)["input_ids"]), small.max_length) for text in texts)
    assert response.headers["x-compute-tokens"] == str(tokens) == response.headers["x-total-tokens"]
    assert response.headers["x-compute-characters"] == str(sum(len(text) for text in texts))


def test_an_empty_api_key_in_the_environment_is_refused_as_on_the_command_line(run, served, monkeypatch):  # noqa: F811
    """``TOKENPOOL_API_KEY=$KEY`` with KEY unset (a compose file, say) served every endpoint without a key, while
    ``--api-key "$KEY"`` is refused for that very reason; both are now refused, each naming where the key came
    from."""
    code, _, err = run("serve", "--port", "0", "--api-key", "")  # the reference: the command line's refusal
    assert_one_error_line(code, err, "--api-key is empty")
    monkeypatch.setenv("TOKENPOOL_API_KEY", "")
    code, _, err = run("serve", "--port", "0")
    assert_one_error_line(code, err, "TOKENPOOL_API_KEY is empty")
    assert not served


@pytest.mark.parametrize("path", ["/", "/embed"])
def test_teis_parameters_object_is_taken_as_langchain_sends_it(tiny, small, path):
    """LangChain's HuggingFaceEndpointEmbeddings (pointed at a TEI URL) posts ``{"inputs": [...], "parameters":
    {}}`` to ``/``; TEI takes it, tokenpool refused it (422 "unrecognized request field(s) 'parameters'"). Its
    fields are now read as top-level ones (TEI ignores them; so none is dropped without a word)."""
    texts = ["a man plays a guitar", "word " * 40]
    plain = post(tiny, path, {"inputs": texts, "truncate": True, "parameters": {}})
    assert plain.status_code == 200, plain.text
    assert_same_vectors(plain.json(), small.encode(texts))
    inner = post(tiny, path, {"inputs": texts, "parameters": {"truncate": True, "normalize": True}})
    assert inner.status_code == 200, inner.text
    assert_same_vectors(inner.json(), small.encode(texts, normalize=True))
    twice = post(tiny, path, {"inputs": texts, "truncate": True, "parameters": {"truncate": False}})
    assert twice.status_code == 422 and "'truncate'" in twice.json()["error"], twice.text
    openai = post(tiny, "/v1/embeddings", {"input": texts, "parameters": {}})  # not an OpenAI field
    assert openai.status_code == 400 and "'parameters'" in openai.json()["error"]["message"], openai.text


@pytest.mark.parametrize(("field", "body", "named", "value"), [
    ("input", {"input": ["ok", None]}, "input[1]", None),
    ("input", {"input": "ok", "normalize": "yes"}, "normalize", "yes"),
    ("input", {"input": "ok", "user": True}, "user", True),
    ("input", {"input": {"text": "ok"}}, "input", {"text": "ok"}),
    ("input", {"input": ["ok", 5]}, "input[1]", 5),  # a bad entry, not token ids
    ("inputs", {"inputs": ["ok", 5]}, "inputs[1]", 5),
    ("inputs", {"inputs": ["ok"], "truncate": None, "dimensions": [3]}, "dimensions", [3]),
])  # fmt: skip
def test_a_bad_value_is_shown_as_the_json_the_client_sent(fake, field, body, named, value):
    """A bad value was shown as Python writes it: ``got null None``, ``got boolean True``, ``{'text': 'ok'}``;
    and ``["ok", 5]`` was said to hold token ids. The message now shows the value as JSON (as sent)."""
    import json

    response = post(fake, "/v1/embeddings" if field == "input" else "/embed", body)
    error = response.json()["error"]
    message = error["message"] if field == "input" else error
    assert response.status_code == (400 if field == "input" else 422), message
    assert message.startswith(f"'{named}' must be ") and "holds token ids" not in message, message
    assert message.endswith(" " + json.dumps(value, separators=(",", ":"))), message


def test_teis_ping_health_route_answers_as_health():
    """TEI serves its health check on ``/health``, ``GET /`` and ``/ping`` (AWS SageMaker's probe), all without
    the API key; ``/ping`` was a 401 (404 without a key), so such a probe saw a dead server."""
    with start_server(FakeRunner(), ServeSettings(batch_size=4, api_key="k3y")) as server:
        for method in ("GET", "HEAD"):
            health = httpx.request(method, server.url + "/health")
            ping = httpx.request(method, server.url + "/ping")
            assert (ping.status_code, ping.headers["content-type"]) == (health.status_code,
                    health.headers["content-type"]) == (200, "application/json")  # (infinity's body: test_serve56)
        assert httpx.post(server.url + "/ping").status_code == 405


@pytest.mark.parametrize("path", ["/", "/embed"])
def test_the_inference_apis_options_are_taken_as_tei_takes_them(tiny, small, path):
    """LangChain's HuggingFaceInferenceAPIEmbeddings (its ``api_url`` pointed at a TEI server) posts ``{"inputs":
    [...], "options": {"wait_for_model": true, "use_cache": true}}``; TEI takes it, tokenpool refused it (422
    "unrecognized request field(s) 'options'"). Those options are about the hosted API: checked, then left."""
    texts = ["a man plays a guitar", "a cat sleeps"]
    answer = post(tiny, path, {"inputs": texts, "options": {"wait_for_model": True, "use_cache": True}})
    assert answer.status_code == 200, answer.text
    assert_same_vectors(answer.json(), small.encode(texts))
    for options in ({"wait_for_model": "yes"}, {"truncate": True}, ["wait_for_model"]):
        refused = post(tiny, path, {"inputs": texts, "options": options})
        assert refused.status_code == 422 and "'options'" in refused.json()["error"], refused.text


def test_the_event_loop_never_waits_for_a_tokenizer_busy_in_another_thread(tiny, small):
    """A large request is tokenised in a thread, holding the tokenizer (as a worker does with a whole document);
    a small request then tokenised on the event loop waited there for it, and the whole server with it: /health
    took 6 s behind a 12 MB request. A small request now waits in a thread when the tokenizer is busy."""
    import threading

    lock = tiny.service.models[0].runner.encoder.tokenization.lock
    held, release = threading.Event(), threading.Event()

    def busy_tokenizer() -> None:  # what a long tokenisation in another thread does to the tokenizer
        with lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=busy_tokenizer)
    holder.start()
    answers: list = []
    try:
        assert held.wait(10)
        client = threading.Thread(target=lambda: answers.append(post(tiny, "/embed", {"inputs": ["a cat sleeps"]})))
        client.start()
        threading.Event().wait(0.3)  # the small request has reached its tokenisation
        assert httpx.get(tiny.url + "/health", timeout=3).status_code == 200
        assert not answers  # still waiting for the tokenizer
    finally:
        release.set()
        holder.join()
    client.join(30)
    assert answers[0].status_code == 200, answers[0].text
    assert_same_vectors(answers[0].json(), small.encode(["a cat sleeps"]))


@pytest.mark.parametrize(("path", "body", "field", "options"), [
    ("/v1/embeddings", {"input": "ok", "encoding_format": "hex"}, "encoding_format", ("float", "base64")),
    ("/embed", {"inputs": "ok", "truncation_direction": "up"}, "truncation_direction", ("right", "left")),
])  # fmt: skip
def test_a_fields_choices_are_shown_as_json_too(fake, path, body, field, options):
    """The choices of a field were shown as Python strings ('float' or 'base64') next to the value as JSON."""
    import json

    error = post(fake, path, body).json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert message == f"'{field}' must be {' or '.join(map(json.dumps, options))}, got string {json.dumps(body[field])}"


def test_an_encoder_reading_windows_is_refused_naming_the_request_field_that_does(tiny_bert_folder, tiny):
    """An `Encoder(long_documents="windows")` was refused with "long_documents='windows' is not served yet",
    though a request gets windows by asking for them; the message now says so, and a request does get them."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError
    from tokenpool.serve.runner import EncoderRunner

    windows = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, long_documents="windows")
    with pytest.raises(OptionError) as refusal:
        EncoderRunner(windows)
    assert '"long_documents": "windows"' in str(refusal.value), refusal.value
    text = "word " * 40  # beyond the 16-token window
    answer = post(tiny, "/embed", {"inputs": [text], "long_documents": "windows"})
    assert answer.status_code == 200, answer.text
    assert_same_vectors(answer.json(), windows.encode([text]))


def test_auto_truncate_cuts_long_inputs_on_the_tei_routes_as_tei_does(tiny_bert_folder, small, run, served):  # noqa: F811
    """TEI truncates an input over the window unless its request sends "truncate": false (``--auto-truncate``,
    on by default since v1.9); tokenpool's TEI routes could only refuse it (413), so such a client failed. With
    ``--auto-truncate`` they cut it as TEI does (the default stays the refusal)."""
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    code, _, err = run("serve", "--port", "0", "--model", tiny_bert_folder, "--auto-truncate")
    assert code == 0, err
    assert served[-1].auto_truncate
    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    texts = ["word " * 40, "a cat sleeps"]  # the first over the 16-token window
    with start_server(EncoderRunner(encoder), ServeSettings(batch_size=4, auto_truncate=True)) as server:
        for path in ("/embed", "/"):
            answer = post(server, path, {"inputs": texts})
            assert answer.status_code == 200, answer.text
            assert_same_vectors(answer.json(), small.encode(texts))
            assert answer.headers["x-truncated-tokens"] != "0"
        assert post(server, "/embed", {"inputs": texts, "truncate": False}).status_code == 413
        assert httpx.get(server.url + "/info").json()["auto_truncate"] is True


@pytest.mark.parametrize("order", [("sparse", "dense"), ("dense", "sparse")])
def test_post_root_goes_by_the_model_the_request_names(order):
    """With several models, ``POST /`` went to /embed or /embed_sparse by the FIRST model's kind, so a request
    naming a model of the other kind got 400 ("/embed_sparse needs a sparse (SPLADE) model"). It now goes by the
    model the request names (at the top level or in TEI's ``parameters``); a request naming none (or an unknown
    one) goes by the first model's kind, as before."""
    from test_serve_routes import SparseFake

    runners = {name: SparseFake() if name == "sparse" else FakeRunner() for name in order}
    routes = {"sparse": "/embed_sparse", "dense": "/embed"}
    with start_server(runners, ServeSettings(batch_size=4)) as server:
        for name, path in routes.items():
            body = {"inputs": ["a b", "c"], "model": name}
            response = post(server, "/", body)
            assert response.status_code == 200, (name, response.text)
            assert response.json() == post(server, path, body).json()
            wrapped = post(server, "/", {"inputs": ["a b", "c"], "parameters": {"model": name}})
            assert wrapped.status_code == 200 and wrapped.json() == response.json(), wrapped.text
        first = routes[order[0]]
        assert post(server, "/", {"inputs": ["a b"]}).json() == post(server, first, {"inputs": ["a b"]}).json()
        unknown = post(server, "/", {"inputs": ["a b"], "model": "nope"})
        assert unknown.status_code == 404 and "does not exist" in unknown.json()["error"], unknown.text
        refused = post(server, "/", {"inputs": "a", "model": ["not", "a", "name"]})  # checked as /embed checks it
        assert refused.status_code == 422 and "'model' must be a string" in refused.json()["error"], refused.text


def test_retrieving_a_listed_model_id_answers_that_id():
    """``GET /v1/models/{alias}`` answered the card of the model's first name, though ``GET /v1/models`` lists
    every alias as a model of its own and OpenAI's retrieve answers the id it was asked for. Every listed id now
    retrieves its own card (the card the list holds); a name not listed is still the card of the model that
    answers it (one model, no --strict-model-name)."""
    openai = pytest.importorskip("openai")
    with start_server(FakeRunner(), ServeSettings(batch_size=4, served_model_names=("mine", "alias"))) as server:
        for base in (server.url + "/v1", server.url):
            client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
            listed = list(client.models.list())
            assert [card.id for card in listed] == ["mine", "alias"]
            assert [client.models.retrieve(card.id) for card in listed] == listed
            assert client.models.retrieve("text-embedding-3-small").id == "mine"


def test_the_command_lines_defaults_follow_the_settings(monkeypatch):
    """`ServeSettings` is the one place of the server's defaults: --batch-size's was a second copy (32) in
    cli/serve.py, and --strict-model-name's and --auto-truncate's were argparse's False, so a changed default
    there left the command on the old one. With other defaults in the settings, the command now follows."""
    import argparse
    import dataclasses

    from tokenpool.cli import serve as command

    @dataclasses.dataclass(frozen=True)
    class Other(ServeSettings):
        batch_size: int = 5
        strict_model_name: bool = True
        auto_truncate: bool = True
        max_queue: int = 5000
        read_timeout: float = 3.0

    monkeypatch.delenv(command.API_KEY_ENV, raising=False)
    monkeypatch.setattr(command, "ServeSettings", Other)
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    assert dataclasses.asdict(command.settings_from(parser.parse_args(["serve"]))) == dataclasses.asdict(Other())


def test_the_command_listens_where_the_server_does_unless_told():
    """--host, --port and --log-level default to `serve_forever`'s own defaults (one place: serve.settings)."""
    import argparse
    import inspect

    from tokenpool.cli.serve import add_parser
    from tokenpool.serve.server import serve_forever

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve"])
    for name, parameter in inspect.signature(serve_forever).parameters.items():
        if name in ("host", "port", "log_level"):
            assert getattr(args, name) == parameter.default, name


KEY = "s45-key"


@pytest.fixture(scope="module")
def keyed():
    with start_server(FakeRunner(), ServeSettings(batch_size=4, api_key=KEY)) as server:
        yield server


def test_the_routes_table_says_which_routes_are_public(keyed):
    """Which requests need no API key was a list of paths in http.py apart from the routes table; the table's
    PUBLIC rows now say it. Each of them answers without the key, every other route asks for it; a public path
    with another method is still its 405 (no key needed to hear the method is wrong), ``POST /`` is keyed."""
    from tokenpool.serve.app import PUBLIC, ROUTES

    for path, _, _, method, passes in ROUTES:
        url = keyed.url + path.replace("{model:path}", "fake-model")
        for sent in (method, "HEAD") if method == "GET" else (method,):
            status = httpx.request(sent, url).status_code
            assert (status == 200) if passes == PUBLIC else (status == 401), (sent, path, status)
    assert httpx.post(keyed.url + "/health").status_code == 405
    assert httpx.put(keyed.url + "/").status_code == 401


def test_api_key_help_names_the_public_routes():
    """--api-key's help said the key is asked on "every endpoint but GET /health and GET /": /ping (SageMaker's
    health route) is public too. It now names the paths the routes table marks public."""
    import argparse
    import re

    from tokenpool.cli.serve import add_parser
    from tokenpool.serve.app import PUBLIC, ROUTES

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    serve = parser._subparsers._group_actions[0].choices["serve"]
    text = next(action.help for action in serve._actions if "--api-key" in action.option_strings)
    named = re.search(r"health checks \(GET ([^;)]*)", text).group(1)
    assert set(re.split(r", | and ", named)) == {path for path, *_, passes in ROUTES if passes == PUBLIC}, text
