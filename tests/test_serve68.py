"""Stop 68 (serve): inputs sent as token ids (OpenAI's and TEI's four forms, TEI's mixed batches) and TEI's
/embed_all, through real HTTP on 127.0.0.1. References are independent of the server: `Encoder.encode` of the
text the ids came from (its own tokenisation and truncation) and ``Encoder.encode(output="tokens")`` (the window
engine's token states). Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import base64

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, post, tiny_server  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

TEXTS = ["hello world", "a cat sleeps on the mat", "naïve café"]
LONG = "the quick brown fox jumps over the lazy dog " * 4  # 36 words: over the 16-token window


@pytest.fixture(scope="module")
def encoder(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")  # as tiny_server's


@pytest.fixture(scope="module")
def served(tiny_bert_folder):
    with tiny_server(tiny_bert_folder, ServeSettings(max_inputs=64, max_input_chars=400)) as server:
        yield server


def ids_of(encoder, texts: list[str]) -> list[list[int]]:
    """The model's own token ids of each text, special tokens included (the tokenizer itself, not the server)."""
    return [list(encoder.tokenizer(text)["input_ids"]) for text in texts]


def message(response: httpx.Response) -> str:
    error = response.json()["error"]
    return error["message"] if isinstance(error, dict) else error


# ------------------------------------------------------------------------------------------- token-id inputs


def test_ids_embed_as_the_text_they_came_from_on_every_route_and_form(served, encoder):
    """Token ids were refused (400/422 "send strings"); they are now read as ids of the served model's tokenizer,
    as TEI and vLLM read them: ids from the model's tokenizer give the vector of their text, in each form a client
    sends (one input's ids, a list of them, TEI's batch mixing texts and ids)."""
    want = encoder.encode(TEXTS)
    ids = ids_of(encoder, TEXTS)
    batch = post(served, "/embed", {"inputs": ids})
    assert batch.status_code == 200, batch.text
    np.testing.assert_allclose(batch.json(), want, rtol=1e-5, atol=1e-6)
    mixed = post(served, "/embed", {"inputs": [TEXTS[0], ids[1], TEXTS[2]]})
    assert mixed.status_code == 200, mixed.text
    np.testing.assert_allclose(mixed.json(), want, rtol=1e-5, atol=1e-6)
    one = post(served, "/v1/embeddings", {"input": ids[1], "model": "tiny"})
    assert one.status_code == 200, one.text
    [row] = one.json()["data"]
    np.testing.assert_allclose(row["embedding"], want[1], rtol=1e-5, atol=1e-6)
    assert one.json()["usage"]["prompt_tokens"] == len(ids[1])
    packed = post(served, "/v1/embeddings", {"input": ids, "encoding_format": "base64"})
    assert packed.status_code == 200, packed.text
    got = [np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in packed.json()["data"]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert packed.json()["usage"] == {"prompt_tokens": sum(map(len, ids)), "total_tokens": sum(map(len, ids)),
                                      "truncated_tokens": 0}  # fmt: skip
    root = post(served, "/", {"inputs": ids[0]})  # TEI's compatibility route
    np.testing.assert_allclose(root.json(), want[:1], rtol=1e-5, atol=1e-6)


def test_ids_get_no_special_tokens_added(served, encoder):
    """Ids are the model's whole input, as TEI (which encodes them with add_special_tokens=false) and vLLM take
    them: ids without [CLS]/[SEP] run without them, so they embed as the bare tokens, not as their text."""
    [bare] = [list(encoder.tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"])]
    got = post(served, "/embed", {"inputs": [bare]})
    assert got.status_code == 200, got.text
    assert got.headers["x-compute-tokens"] == str(len(bare))
    tokens = encoder.tokenize([TEXTS[1]])  # the text's row, to strip its frame: the reference is its body alone
    body = tokens.ids[0][1:-1]
    assert body == bare
    framed = next(encoder.pool_ids(type(tokens)([bare], np.array([len(bare)])), finish=False))[1]
    np.testing.assert_allclose(got.json(), framed, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got.json(), encoder.encode([TEXTS[1]]), atol=1e-3)


@pytest.mark.parametrize("side", ["right", "left"])
def test_long_ids_are_cut_as_their_text_is(served, encoder, side):
    """Ids over the window follow the text's rules: TEI refuses them (413 naming the input and its count) unless
    "truncate": true, OpenAI cuts them; a row framed by the model's special tokens keeps them, so the vector is
    the text's cut the same way, and usage counts the tokens cut."""
    [ids] = ids_of(encoder, [LONG])
    refused = post(served, "/embed", {"inputs": [TEXTS[0], ids]})
    assert refused.status_code == 413
    assert message(refused).startswith(f"'inputs[1]' has {len(ids)} tokens but the model takes at most 16")
    encoder.tokenizer.truncation_side = side
    try:
        want = encoder.encode([LONG])  # (the library's own cut, on the tokenizer's side)
    finally:
        encoder.tokenizer.truncation_side = "right"
    direction = side.capitalize()
    cut = post(served, "/embed", {"inputs": [ids], "truncate": True, "truncation_direction": direction})
    assert cut.status_code == 200, cut.text
    np.testing.assert_allclose(cut.json(), want, rtol=1e-5, atol=1e-6)
    assert cut.headers["x-truncated-tokens"] == str(len(ids) - 16)
    openai = post(served, "/v1/embeddings", {"input": [ids], "truncation_direction": side})
    assert openai.json()["usage"]["truncated_tokens"] == len(ids) - 16
    np.testing.assert_allclose(openai.json()["data"][0]["embedding"], want[0], rtol=1e-5, atol=1e-6)


def test_ids_without_the_frame_are_cut_as_they_are(served, encoder):
    """A row that does not begin and end with the model's special tokens has no frame to keep: its first 16 ids
    (right) or last 16 (left) run, as sent alone."""
    ids = [1000 + k for k in range(30)]
    for side, kept in (("Right", ids[:16]), ("Left", ids[-16:])):
        cut = post(served, "/embed", {"inputs": [ids], "truncate": True, "truncation_direction": side})
        alone = post(served, "/embed", {"inputs": [kept]})
        assert cut.status_code == alone.status_code == 200, cut.text
        np.testing.assert_array_equal(cut.json(), alone.json())


@pytest.mark.parametrize(("path", "body", "named", "status"), [
    ("/v1/embeddings", {"input": [[101, 30522, 102]]}, "'input[0][1]' is 30522, not a token id of tiny", 400),
    ("/v1/embeddings", {"input": [101, 99999]}, "'input[1]' is 99999, not a token id of tiny", 400),
    ("/embed", {"inputs": ["ok", [7, 2**32]]}, "'inputs[1][1]' must be a token id", 422),
    ("/v1/embeddings", {"input": [[1, -3]]}, "'input[0][1]' must be a token id (an integer from 0 to", 400),
    ("/v1/embeddings", {"input": [[1, 2.0]]}, "'input[0][1]' must be a token id", 400),
    ("/v1/embeddings", {"input": [1, True]}, "'input[1]' must be a token id", 400),
    ("/embed", {"inputs": [[True, 1]]}, "'inputs[0][0]' must be a token id", 422),
    ("/v1/embeddings", {"input": [[1, 2], []]}, "'input[1]' is an empty list of token ids", 400),
    ("/embed", {"inputs": [[]]}, "'inputs[0]' is an empty list of token ids", 400),
    ("/v1/embeddings", {"input": ["ok", 5]}, "'input[1]' must be a string, got integer 5", 400),
    ("/v1/embeddings", {"input": [5, "ok"]}, "'input[1]' must be a token id", 400),
    ("/v1/embeddings", {"input": ["ok", [5]]}, "'input[1]' must be a string, got array [5]", 400),
    ("/v1/embeddings", {"input": [[5], "ok"]}, "'input[1]' must be a list of token ids, got string", 400),
    ("/embed", {"inputs": ["ok", 5]}, "'inputs[1]' must be a string or a list of token ids, got integer 5", 422),
    ("/embed", {"inputs": [[101, 102]], "prompt_name": "query"}, "'prompt_name' does not go with token ids", 422),
    ("/embed", {"inputs": [[101, 102]], "late_chunking": True}, "token ids ('inputs[0]') do not go with", 422),
    ("/v1/embeddings", {"input": [[101, 102]], "long_documents": "windows"}, "do not go with 'long_documents'", 400),
    ("/tokenize", {"inputs": [[101, 102]]}, "'inputs' holds token ids", 422),
    ("/embed_documents", {"documents": [[101, 102]], "chunks": "spans"}, "'documents' holds token ids", 422),
    ("/embed", {"inputs": [list(range(1000, 1401))]}, "'inputs[0]' has 401 token ids; this server takes at most 400", 413),
])  # fmt: skip
def test_bad_token_ids_are_refused_naming_the_item(served, path, body, named, status):
    """Each bad id, row or mix is refused in its protocol's error shape (OpenAI: 400 with the error object, TEI:
    422/413/400 with error and error_type), the message naming the offending item as the client sent it; no id
    outside the vocabulary reaches the model (where the tokenizer would drop it, or the embedding lookup fail)."""
    response = post(served, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if path.startswith("/v1/"):
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    else:
        assert set(response.json()) == {"error", "error_type"}, response.text
    assert named in message(response), message(response)


def test_a_server_whose_runner_cannot_read_ids_says_so():
    """A runner without ``tokenize_ids`` (a custom one) refuses ids with the protocol's status, naming the input
    and how LangChain's client sends text, not a 500."""
    with start_server(FakeRunner(), ServeSettings()) as server:
        refused = post(server, "/v1/embeddings", {"input": [[9906, 1917]]})
        tei = post(server, "/embed", {"inputs": ["ok", [9906]]})
    assert refused.status_code == 400 and "'input[0]' holds token ids" in message(refused), refused.text
    assert "check_embedding_ctx_length=False" in message(refused)
    assert tei.status_code == 422 and "'inputs[1]' holds token ids" in message(tei), tei.text


# ------------------------------------------------------------------------------------------------- /embed_all


def test_embed_all_gives_every_tokens_vector(served, encoder):
    """TEI's /embed_all was a 404. It answers, per input, every token's vector (special tokens included) as the
    library's ``output="tokens"`` gives them, for texts and ids alike; one string is a list of one, as TEI's."""
    want = encoder.encode(TEXTS, output="tokens")
    got = post(served, "/embed_all", {"inputs": [TEXTS[0], ids_of(encoder, TEXTS[1:2])[0], TEXTS[2]]})
    assert got.status_code == 200, got.text
    assert [np.shape(rows) for rows in got.json()] == [rows.shape for rows in want]
    for rows, expected in zip(got.json(), want, strict=True):
        np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-5)
    assert got.headers["x-compute-tokens"] == str(sum(len(rows) for rows in want))
    one = post(served, "/embed_all", {"inputs": TEXTS[0]})
    assert np.shape(one.json()) == (1, *want[0].shape)
    tokens = post(served, "/tokenize", {"inputs": TEXTS[0]}).json()[0]  # one vector per token /tokenize lists
    assert len(one.json()[0]) == len(tokens)


def test_embed_all_follows_the_truncation_rules(served, encoder):
    refused = post(served, "/embed_all", {"inputs": [LONG]})
    assert refused.status_code == 413 and "'inputs[0]' has" in message(refused), refused.text
    cut = post(served, "/embed_all", {"inputs": LONG, "truncate": True})
    assert cut.status_code == 200 and cut.headers["x-truncated-tokens"] != "0"
    want = encoder.encode([LONG], output="tokens")[0]  # (the library's truncate mode: the first window)
    np.testing.assert_allclose(cut.json()[0], want, rtol=1e-4, atol=1e-5)
    unknown = post(served, "/embed_all", {"inputs": "x", "normalize": True})  # (TEI's fields only)
    assert unknown.status_code == 422 and "'normalize'" in message(unknown)


def test_embed_all_is_bounded_and_sparse_models_take_ids_on_embed_sparse(tiny_bert_folder, tmp_path):
    """One vector per token: a request's tokens are bounded by --max-batch-tokens (413 naming it). A SPLADE model
    has no token vectors to give (400 naming /embed_sparse, as TEI refuses it); its /embed_sparse takes ids, which
    give the SPLADE rows of their text."""
    from tinymodels import bert_weights

    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    dense = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    splade = Encoder(bert_weights(tmp_path / "mlm", mlm=True), pooling="splade", device="cpu")
    runners = {"dense": EncoderRunner(dense), "splade": EncoderRunner(splade)}
    with start_server(runners, ServeSettings(max_batch_tokens=20)) as server:
        ok = post(server, "/embed_all", {"inputs": ["one two three", "four five"]})
        over = post(server, "/embed_all", {"inputs": ["one two three four five six seven eight nine ten"] * 2})
        refused = post(server, "/embed_all", {"inputs": ["x"], "model": "splade"})
        sparse = post(server, "/embed_sparse", {"inputs": ids_of(splade, TEXTS[:2])})
    assert ok.status_code == 200, ok.text
    assert over.status_code == 413 and "(--max-batch-tokens)" in message(over), over.text
    assert refused.status_code == 400 and "/embed_sparse" in message(refused), refused.text
    assert sparse.status_code == 200, sparse.text
    want = splade.encode(TEXTS[:2])
    got = np.zeros_like(want)
    for row, entries in zip(got, sparse.json(), strict=True):
        row[[e["index"] for e in entries]] = [e["value"] for e in entries]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_onnx_model_serves_ids(tiny, tiny_onnx):
    """The ONNX runtime's tokenizer (`FolderTokenizer`, tokenizer.json alone) has no ``len``: the vocabulary the
    ids are checked against is the Rust tokenizer's count, so an ONNX model serves (and takes ids) as a torch one."""
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny, runtime="onnx", onnx_file=tiny_onnx, device="cpu")
    runner = EncoderRunner(encoder)
    assert runner.vocabulary_size == encoder.tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=True)
    with start_server(runner, ServeSettings()) as server:
        ids = ids_of(encoder, TEXTS[:2])
        got = post(server, "/embed", {"inputs": ids})
        past = post(server, "/embed", {"inputs": [[ids[0][0], runner.vocabulary_size]]})
    assert got.status_code == 200, got.text
    np.testing.assert_allclose(got.json(), encoder.encode(TEXTS[:2]), rtol=1e-5, atol=1e-6)
    assert past.status_code == 422 and "'inputs[0][1]' is" in message(past), past.text
