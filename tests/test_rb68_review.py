"""Review of stop 68's token-id inputs (serve): ids cut as their text is cut, on both sides, for a model whose
tokenizer frames rows with [CLS]/[SEP] (BERT), one whose tokenizer adds nothing while the encoder appends EOS (a
left-padded last-token decoder), and one that adds nothing at all (byte-level BPE); and /embed_all beside /embed
on one batcher. References: `Encoder.tokenize`/`Encoder.encode` of the text (the library's own cut, on the
tokenizer's side), never the server's code."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from serve_fakes import post  # noqa: E402

from tokenpool.serve.settings import ServeSettings  # noqa: E402

LONG = "the quick brown fox jumps over the lazy dog, naïve café " * 3  # over every model's 16-token window
SHORT = "a cat sleeps"
MODELS = ("small", "eos_decoder", "bpe")


@pytest.fixture(scope="module")
def encoders(request):
    return {name: request.getfixturevalue(name) for name in MODELS}


@pytest.fixture(scope="module")
def served(encoders):
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    runners = {name: EncoderRunner(encoder, name=name) for name, encoder in encoders.items()}
    with start_server(runners, ServeSettings(max_batch_tokens=64, batch_size=4)) as server:
        yield server


def cut_as_text(encoder, texts: list[str], side: str):
    """The library's cut of the texts on ``side``: the tokenizer's side set, as sentence-transformers cuts."""
    before = encoder.tokenizer.truncation_side
    encoder.tokenizer.truncation_side = side
    try:
        return encoder.tokenize(texts), encoder.encode(texts)
    finally:
        encoder.tokenizer.truncation_side = before


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", MODELS)
def test_cut_ids_cuts_a_texts_whole_row_as_the_text_is_cut(encoders, name, side):
    """`Tokenization.cut_ids` of a text's whole row (its special tokens and the EOS the encoder appends, as
    /tokenize lists them) is the text's own cut row, and its count the text's; a short row is kept as sent."""
    encoder = encoders[name]
    whole = encoder.tokenize([LONG, SHORT], truncation=None)
    cut = encoder.tokenization.cut_ids(whole.ids, side)
    want, _ = cut_as_text(encoder, [LONG, SHORT], side)
    assert len(whole.ids[0]) > encoder.max_length
    assert cut.ids == want.ids
    assert cut.counts.tolist() == want.counts.tolist() == [len(row) for row in whole.ids]
    assert encoder.tokenization.cut_ids(whole.ids, None).ids == whole.ids


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", MODELS)
def test_ids_embed_as_their_text_cut_on_either_side(served, encoders, name, side):
    """Through HTTP, a text's ids (as /tokenize gives them) embed as the text on TEI's /embed and OpenAI's route,
    cut on the side asked, and the tokens cut are counted (x-truncated-tokens, usage)."""
    encoder = encoders[name]
    listed = post(served, "/tokenize", {"inputs": [LONG, SHORT], "model": name})
    assert listed.status_code == 200, listed.text
    ids = [[token["id"] for token in row] for row in listed.json()]
    assert ids == encoder.tokenize([LONG, SHORT], truncation=None).ids
    _, want = cut_as_text(encoder, [LONG, SHORT], side)
    body = {"inputs": [ids[0], SHORT], "model": name, "truncate": True, "truncation_direction": side.capitalize()}
    tei = post(served, "/embed", body)
    assert tei.status_code == 200, tei.text
    np.testing.assert_allclose(tei.json(), want, rtol=1e-5, atol=1e-6)
    assert tei.headers["x-truncated-tokens"] == str(len(ids[0]) - encoder.max_length)
    openai = post(served, "/v1/embeddings", {"input": ids, "model": name, "truncation_direction": side})
    assert openai.status_code == 200, openai.text
    np.testing.assert_allclose([item["embedding"] for item in openai.json()["data"]], want, rtol=1e-5, atol=1e-6)
    cut = len(ids[0]) - encoder.max_length
    assert openai.json()["usage"] == {"prompt_tokens": sum(map(len, ids)) - cut,
                                      "total_tokens": sum(map(len, ids)) - cut, "truncated_tokens": cut}


def test_a_decoders_ids_without_its_eos_run_as_sent(served, encoders):
    """A last-token decoder whose tokenizer appends no EOS (the encoder appends it): the tokenizer's own ids
    (``tokenizer(text)["input_ids"]``) get no EOS added, as TEI takes ids; /tokenize's ids (EOS included) are
    the ones that give the text's vector."""
    encoder = encoders["eos_decoder"]
    bare = list(encoder.tokenizer(SHORT)["input_ids"])
    assert bare[-1] != encoder.tokenizer.eos_token_id
    got = post(served, "/embed", {"inputs": [bare, [*bare, encoder.tokenizer.eos_token_id]], "model": "eos_decoder"})
    assert got.status_code == 200, got.text
    assert got.headers["x-compute-tokens"] == str(2 * len(bare) + 1)
    want = encoder.encode([SHORT])[0]
    np.testing.assert_allclose(got.json()[1], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got.json()[0], want, atol=1e-3)


def test_embed_all_beside_embed_on_one_batcher(served, encoders):
    """/embed_all (a job run a pass at a time) and /embed requests sent at once, to a left-padded decoder and to
    BERT: each gets its own rows, as the library computes them."""
    texts = ["one two three", "a cat sleeps on the mat", "x", "naïve café au lait"]
    want_tokens = {name: encoders[name].encode(texts, output="tokens") for name in ("small", "eos_decoder")}
    want_vectors = {name: encoders[name].encode(texts) for name in ("small", "eos_decoder")}

    def call(k: int):
        name = ("small", "eos_decoder")[k % 2]
        path = "/embed_all" if k % 3 else "/embed"
        return name, path, post(served, path, {"inputs": texts, "model": name})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(24)))
    for name, path, response in answers:
        assert response.status_code == 200, response.text
        if path == "/embed":
            np.testing.assert_allclose(response.json(), want_vectors[name], rtol=1e-4, atol=1e-5)
            continue
        for rows, expected in zip(response.json(), want_tokens[name], strict=True):
            np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-5)


def test_the_onnx_runtime_cuts_ids_and_gives_token_vectors(tiny, tiny_onnx):
    """The ONNX runtime takes the same path: a text's ids cut on the left embed as the text cut on the left,
    and /embed_all gives the token states `encode(output="tokens")` gives."""
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    encoder = Encoder(tiny, runtime="onnx", onnx_file=tiny_onnx, device="cpu", max_length=16)
    ids = encoder.tokenize([LONG], truncation=None).ids[0]
    _, want = cut_as_text(encoder, [LONG], "left")
    with start_server(EncoderRunner(encoder), ServeSettings()) as server:
        cut = post(server, "/embed", {"inputs": [ids], "truncate": True, "truncation_direction": "Left"})
        every = post(server, "/embed_all", {"inputs": [SHORT, ids[:5]]})
    assert cut.status_code == 200 and every.status_code == 200, (cut.text, every.text)
    np.testing.assert_allclose(cut.json(), want, rtol=1e-5, atol=1e-6)
    rows = encoder.encode([SHORT], output="tokens")
    np.testing.assert_allclose(every.json()[0], rows[0], rtol=1e-4, atol=1e-5)
    assert np.shape(every.json()[1]) == (5, rows[0].shape[1])


def test_splade_ids_are_cut_as_their_text(tiny_bert_folder, tmp_path):
    """/embed_sparse with a text's ids over the window, cut on the left: the SPLADE row of the text cut so."""
    from tinymodels import bert_weights

    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server

    splade = Encoder(bert_weights(tmp_path / "mlm", mlm=True), pooling="splade", device="cpu", max_length=16)
    ids = splade.tokenize([LONG], truncation=None).ids[0]
    _, want = cut_as_text(splade, [LONG], "left")
    with start_server(EncoderRunner(splade), ServeSettings()) as server:
        got = post(server, "/embed_sparse", {"inputs": [ids], "truncate": True, "truncation_direction": "Left"})
    assert got.status_code == 200, got.text
    assert got.headers["x-truncated-tokens"] == str(len(ids) - 16)
    row = np.zeros_like(want[0])
    row[[e["index"] for e in got.json()[0]]] = [e["value"] for e in got.json()[0]]
    np.testing.assert_allclose(row, want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inputs", [[[101, 102]], ["x", [101, 102]], ["x", "y", [101, 102]]])
def test_a_body_holding_ids_is_checked_off_the_event_loop(served, monkeypatch, inputs):
    """Each id is checked (a body may hold millions): a TEI batch whose first input is a string and a later one
    ids (~1.5 s of checks for 100,000 rows) was checked on the event loop, which no other request could use."""
    import asyncio

    from tokenpool.serve import service

    where = []

    def spy(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            where.append("loop")
        except RuntimeError:
            where.append("thread")
        return checked(*args, **kwargs)

    checked = service.parse
    monkeypatch.setattr(service, "parse", spy)
    for path in ("/embed", "/"):
        assert post(served, path, {"inputs": inputs, "model": "small"}).status_code == 200
    assert where == ["thread", "thread"]
