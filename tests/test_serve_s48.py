"""Stop 48's hunt in `tokenpool serve`: what existing OpenAI and TEI clients, and a server of several models, run
into. Servers bind 127.0.0.1 on free ports and are stopped here; the CLI tests never start one (`serve_forever` is
replaced by a recorder, the `served` fixture)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, post  # noqa: E402
from test_serve_corners import served  # noqa: E402, F401  (the fixture: what `tokenpool serve` would serve)

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow


def test_info_names_the_model_not_its_folder_on_disk(tiny_bert_folder):
    """/info (open to every client without --api-key) showed ``model_path``: the absolute path of the model
    folder (a home directory, a user name, the layout of the disk). TEI's /info names the model by its id; the
    served name is all a client needs."""
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny_bert_folder, max_length=16, device="cpu")
    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings()) as server:
        info = httpx.get(server.url + "/info").json()
    assert info["model_id"] == info["models"][0]["model_id"] == "tiny"
    assert str(tiny_bert_folder) not in str(info) and tiny_bert_folder.name not in str(info)


def test_a_served_name_with_a_slash_names_its_model(run, served, tiny_bert_folder):  # noqa: F811
    """``--model org/model=FOLDER`` (an OpenAI-style id, as clients send it) was read as one folder called
    "org/model=FOLDER": with one model "does not exist", with several "several --model options each need a
    name". A NAME may hold "/"; a spec that is an existing path is still a folder."""
    code, _, err = run("serve", "--port", "0", "--model", f"org/a={tiny_bert_folder}",
                       "--model", f"org/b={tiny_bert_folder},dim=8")  # fmt: skip
    assert code == 0, err
    assert list(served.runners[0]) == ["org/a", "org/b"]
    assert served.runners[0]["org/b"].dimension == 8
    with start_server(served.runners[0], ServeSettings()) as server:
        answer = post(server, "/v1/embeddings", {"model": "org/b", "input": "a text"}).json()
        assert answer["model"] == "org/b" and len(answer["data"][0]["embedding"]) == 8
        assert httpx.get(server.url + "/v1/models/org/b").json()["id"] == "org/b"
        assert post(server, "/v1/embeddings", {"model": "org/c", "input": "a text"}).status_code == 404


def test_a_folder_path_holding_an_equals_sign_is_still_a_folder(run, served, tiny_bert_folder, tmp_path):  # noqa: F811
    """A folder whose path holds "=" (``runs/lr=0.1``) is served as the folder it is."""
    folder = tmp_path / "lr=0.1"
    folder.symlink_to(tiny_bert_folder)
    code, _, err = run("serve", "--port", "0", "--model", str(folder))
    assert code == 0, err
    assert served.runners[0].name == "lr=0.1"


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings()) as server:
        yield server


@pytest.mark.parametrize(("spans", "where", "shown"), [
    ([[["a", 2]]], "spans[0][0]", 'array ["a",2]'),
    ([[[0, 3], None]], "spans[0][1]", "null"),  # ("null null" before stop 65: test_serve65)
    ([[[True, 2]]], "spans[0][0]", "array [true,2]"),
    ([[[1, 2, 3]]], "spans[0][0]", "array [1,2,3]"),
    ([[[1.5, 2]]], "spans[0][0]", "array [1.5,2]"),
    ([[[0, 2]], {"a": 1}], "spans[1]", 'object {"a":1}'),
])  # fmt: skip
def test_a_bad_span_is_named_as_the_client_sent_it(tiny, spans, where, shown):
    """A bad span was refused in the model's pass by the library's check, in Python's words: "document 0: a span
    must be a pair of integers [start, end], got ['a', 2]" (``None``, ``[True, 2]``), which no JSON client sent.
    Now the field check names the span (``spans[0][1]``) and shows it as JSON, before the request queues."""
    documents = ["hello world foo", "another one"][: len(spans)]
    response = post(tiny, "/embed_documents", {"documents": documents, "chunks": "spans", "spans": spans})
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert message.startswith(f"'{where}' must be ") and message.endswith(f", got {shown}"), message
    assert not any(word in message for word in ("None", "True", "'a'"))
    fine = post(tiny, "/embed_documents", {"documents": ["hello world foo"], "chunks": "spans", "spans": [[[0, 5]]]})
    assert fine.status_code == 200, fine.text


def test_spans_over_the_chunk_limit_are_refused_before_each_is_read(tiny_bert_folder):
    """The spans are counted against --max-chunks before each pair is checked: a 16 MB body holds millions of
    pairs, whose walk would hold the event loop (and every other client) for seconds."""
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny_bert_folder, max_length=16, device="cpu")
    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings(max_chunks=3)) as server:
        spans = [[[0, 1], [1, 2], [2, 3], None]]
        response = post(server, "/embed_documents", {"documents": ["hello"], "chunks": "spans", "spans": spans})
        assert response.status_code == 413, response.text
        assert "makes 4 chunks" in response.json()["error"]
        response = post(server, "/embed_documents", {"documents": ["hello"], "chunks": "spans", "spans": [[None]]})
        assert response.status_code == 422 and "'spans[0][0]'" in response.json()["error"]


@pytest.mark.parametrize("name", ["", "  ", 1, None])
def test_a_model_named_no_string_is_refused(name):
    """``create_app({"": runner})`` served a model named "" (``{1: runner}`` listed the id 1, a number, in
    /v1/models, where OpenAI clients read a string); each served name must be a non-empty string, as
    ``served_model_names`` and ``--model NAME=`` already ask."""
    from tokenpool.errors import OptionError
    from tokenpool.serve.app import create_app

    with pytest.raises(OptionError, match=f"a served model name must be a non-empty string, got {name!r}"):
        create_app({"a": FakeRunner(), name: FakeRunner()})
    runner = FakeRunner()
    runner.name = name
    with pytest.raises(OptionError, match="a served model name must be a non-empty string"):
        create_app(runner)
