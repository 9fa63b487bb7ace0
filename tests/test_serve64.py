"""Stop 64's hunt in `tokenpool serve`: what a client or an operator is told names what they sent. Servers bind
127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("pair", "flag"), [
    ("precision=int8", "--precision=int8"),
    ("pool=mean", "--pool=mean"),
    ("colour=false", "--no-colour"),
    ("colour=true", "--colour"),
])  # fmt: skip
def test_an_unknown_model_option_is_named_as_the_list_wrote_it(capsys, pair, flag):
    """``--model a=./m,precision=int8`` said "unrecognized arguments: --precision=int8": a flag the user never
    typed (and ``colour=false`` became ``--no-colour``). The refusal now names the pair as written in the list."""
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs

    args = build_parser().parse_args(["serve", "--model", f"a=./m,dim=8,{pair}"])
    with pytest.raises(SystemExit) as exit_:
        _model_specs(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert f"--model 'a=./m,dim=8,{pair}': unrecognized arguments: {pair} " in err, err
    assert flag not in err and "dim" not in err.split("unrecognized", 1)[1], err


def test_known_model_options_still_parse():
    from tokenpool.cli import build_parser
    from tokenpool.cli.serve import _model_specs

    args = build_parser().parse_args(["serve", "--model", "a=./m,dim=8,normalize=false,prompt=query: x, y"])
    [(name, options)] = _model_specs(args)
    assert (name, options.model, options.truncate_dim, options.normalize, options.prompt) == ("a", "./m", 8, False, "query: x, y")


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    pytest.importorskip("uvicorn")
    from serve_fakes import tiny_server

    from tokenpool.serve.settings import ServeSettings

    with tiny_server(tiny_bert_folder, ServeSettings()) as server:
        yield server


@pytest.mark.parametrize(("body", "named"), [
    ({"documents": ["ok then", "hello    world"], "chunks": "spans", "spans": [[[0, 2]], [[0, 5], [6, 9]]]},
     "'documents[1]': span 1 [6, 9] covers no token"),
    ({"documents": ["ok then", "hello world " * 4], "chunks": "tokens:15"}, "'documents[0]': chunk size 15 exceeds"),
    ({"documents": "hello world " * 4, "chunks": "boundaries:15"}, "'documents': chunk maximum 15 exceeds"),
])  # fmt: skip
def test_a_document_refused_in_its_pass_is_named_as_sent(tiny, body, named):
    """/embed_documents refused a span of whitespace, or a chunk size over the window (the tiny model's 16 tokens
    less its 2 special ones), in the model's pass with the library's spelling, "document 1: span [6, 9] covers no
    token", naming a document by a number the client never sent. It now names the document as sent
    ('documents[1]'; one string: 'documents'), as the checks before the queue do."""
    from serve_fakes import post

    answer = post(tiny, "/embed_documents", body)
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]
    assert named in message and "document 0" not in message and "document 1" not in message, message


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1"), ("POST", "/v1/"), ("GET", "/v1/nothing")])
def test_an_unknown_path_under_v1_gets_an_openai_error(tiny, method, path):
    """``GET /v1`` (an OpenAI client whose base URL lost its path, or a probe of it) was answered with TEI's
    ``{"error": "...", "error_type": "NotFound"}``, which OpenAI's clients cannot read, while every other path
    under /v1 gets OpenAI's error object."""
    import httpx

    answer = httpx.request(method, tiny.url + path, timeout=30)
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, answer.text
    assert error["type"] == "invalid_request_error" and "/v1" in error["message"], error
    assert isinstance(httpx.get(tiny.url + "/v1embeddings", timeout=30).json()["error"], str)  # (TEI's: not under /v1)


def test_tokenize_without_a_model_shows_the_tokens_embed_runs(tiny_bert_folder, tmp_path):
    """With a SPLADE model listed first, /embed (no ``model``) runs the first dense model, but /tokenize and
    /decode (no ``model``) answered with the SPLADE model's tokenizer and prompt: /tokenize's tokens were not the
    ones /embed runs (docs/serve.md), here ones without the dense model's prompt. Both now take /embed's model."""
    pytest.importorskip("uvicorn")
    from serve_fakes import post
    from tinymodels import bert_weights

    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    mlm = bert_weights(tmp_path / "mlm", mlm=True)
    runners = {"splade": EncoderRunner(Encoder(mlm, pooling="splade", device="cpu")),
               "dense": EncoderRunner(Encoder(tiny_bert_folder, pooling="mean", device="cpu"), default_prompt="query: ")}
    with start_server(runners) as server:
        tokens = post(server, "/tokenize", {"inputs": "hello world"}).json()[0]
        embedded = post(server, "/embed", {"inputs": "hello world"})
        assert embedded.status_code == 200, embedded.text
        assert len(tokens) == int(embedded.headers["x-compute-tokens"])  # the tokens /embed ran
        assert [t["text"] for t in tokens[1:3]] == ["query", ":"], tokens
        assert tokens == post(server, "/tokenize", {"inputs": "hello world", "model": "dense"}).json()[0]
        assert post(server, "/decode", {"ids": [t["id"] for t in tokens]}).json() == ["query : hello world"]  # (no clean-up, as TEI)


def test_long_documents_truncate_cuts_on_the_tei_routes(tiny, tiny_bert_folder):
    """``/embed {"inputs": LONG, "long_documents": "truncate"}`` asks for the library's truncate mode by name, and
    was refused 413 "send "truncate": true to cut it" (the TEI routes refuse a long input unless told to cut).
    It is now cut as `Encoder.encode` cuts it (long_documents="truncate"); "truncate": false still refuses."""
    import numpy as np
    from serve_fakes import post

    from tokenpool import Encoder

    text = "the river ran slowly past the old mill at noon " * 4
    reference = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    answer = post(tiny, "/embed", {"inputs": [text], "long_documents": "truncate"})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json(), reference.encode([text], long_documents="truncate"), rtol=1e-5, atol=1e-6)
    assert int(answer.headers["x-truncated-tokens"]) > 0
    refused = post(tiny, "/embed", {"inputs": [text], "long_documents": "truncate", "truncate": False})
    assert refused.status_code == 413, refused.text


@pytest.mark.parametrize("body", [{"inputs": "hi", "k" * 100_000: 1}, {"inputs": "hi", **{f"f{k}": 1 for k in range(20_000)}}])
def test_unknown_fields_are_named_in_a_bounded_message(tiny, body):
    """An unknown field was echoed whole (a 100,000-character key: a 100 kB error message and ``param``; 20,000
    unknown keys: every one of them), where every other message cuts a client's value (`http.cut`)."""
    from serve_fakes import post

    answer = post(tiny, "/embed", body)
    assert answer.status_code == 422 and ("field(s) 'kkkk" in answer.text or "field(s) 'f0', 'f1'" in answer.text)
    assert len(answer.content) < 1000, len(answer.content)
    openai = post(tiny, "/v1/embeddings", {"input": "hi", "x" * 100_000: 1}).json()["error"]
    assert len(openai["message"]) < 500 and len(openai["param"]) <= 61, openai
