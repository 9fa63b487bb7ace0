"""Stop 49's fixes in `tokenpool serve`: integers past 64 bits named as the client sent them, and the threads of
several models served in one process. Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import FakeRunner, post  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow

BIG = 100000000000000000000  # 10**20: past both 64-bit ranges (orjson read it as the float 1e+20)
PAST_I64 = -9223372036854775809  # -2**63 - 1: 19 digits, past the signed range


@pytest.fixture(scope="module")
def fake():
    with start_server(FakeRunner(), ServeSettings(batch_size=4)) as server:
        yield server


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu")
    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings()) as server:
        yield server


def message(response: httpx.Response) -> str:
    body = response.json()
    return body["error"]["message"] if isinstance(body["error"], dict) else body["error"]


@pytest.mark.parametrize("value", [BIG, -BIG, PAST_I64, 2**64, 10**300])
@pytest.mark.parametrize(("path", "template"), [
    ("/v1/embeddings", '{"input": "x", "dimensions": N}'),
    ("/embed", '{"inputs": "x", "dimensions": N}'),
    ("/embed", '{"inputs": "x", "parameters": {"dimensions": N}}'),
])  # fmt: skip
def test_an_integer_past_64_bits_is_named_as_sent(fake, path, template, value):
    """``{"input": "x", "dimensions": 100000000000000000000}`` was refused as "'dimensions' must be an integer,
    got number 1e+20": orjson reads an integer past 64 bits as a float, so the message named a value the client
    never sent, and called its integer a number. It is now refused as the integer it is, digit for digit."""
    response = post(fake, path, template.replace("N", str(value)))
    assert response.status_code in (400, 422), response.text
    text = message(response)
    sent = str(value)  # (past 24 characters: shown by its first and last ten digits and its count, stop 59)
    shown = sent if len(sent) <= 24 else f"{sent[:10]}…{sent[-10:]} ({len(sent.lstrip('-'))} digits)"
    assert "'dimensions'" in text and shown in text, text
    assert "e+" not in text and "must be an integer" not in text, text


def test_a_float_sent_as_a_float_is_still_a_number(fake):
    """The reference: ``1e20`` and ``100000000000000000000.0`` are numbers as sent, and refused as such."""
    for literal in ("1e20", "100000000000000000000.0"):
        response = post(fake, "/v1/embeddings", '{"input": "x", "dimensions": N}'.replace("N", literal))
        assert response.status_code == 400
        assert message(response) == "'dimensions' must be an integer, got number 1e+20"


def test_a_long_integer_is_never_cut_into_another(fake):
    """A refusal shows at most 60 characters of the value; a 101-digit integer cut there named another integer
    (10**59). The cut is marked (stop 59: an integer shows its first and last ten digits and its count)."""
    response = post(fake, "/v1/embeddings", '{"input": "x", "user": N}'.replace("N", str(10**100)))
    assert response.status_code == 400
    assert message(response) == f"'user' must be a string, got integer {10**9}…{'0' * 10} (101 digits)"
    short = post(fake, "/v1/embeddings", '{"input": "x", "user": N}'.replace("N", str(BIG)))
    assert message(short) == f"'user' must be a string, got integer {BIG}"


def test_token_ids_past_64_bits_are_named_token_ids(fake):
    """``{"input": [100000000000000000000]}`` was "'input[0]' must be a string, got number 1e+20"; they are the
    token ids they are, as a list of small ones is, refused as ids past the largest one, named as sent."""
    for body, named in ((f'{{"input": [{BIG}]}}', "input[0]"), (f'{{"input": [[1, {BIG}]]}}', "input[0][1]")):
        response = post(fake, "/v1/embeddings", body)
        assert response.status_code == 400
        assert f"'{named}' must be a token id (an integer from 0 to" in message(response), message(response)
        assert message(response).endswith(str(BIG)), message(response)


def test_a_span_past_64_bits_is_named_as_sent(tiny):
    """A span end of 10**20 was refused as "must be a [start, end] pair of integers, got array [0,1e+20]"; it is
    a pair of integers, refused for lying outside its document, the end as sent."""
    body = '{"documents": ["a b c"], "chunks": "spans", "spans": [[[0, N]]]}'.replace("N", str(BIG))
    response = post(tiny, "/embed_documents", body)
    assert response.status_code == 422
    assert f"span [0, {BIG}] is not within the text" in message(response), message(response)


def test_digits_in_texts_read_as_before(fake):
    """A text of long digit runs (in a string, not a number: read again by Python's reader) embeds as the same
    text sent plainly."""
    text = "call 12345678901234567890123 now, [1234567890123456789012]"
    plain = post(fake, "/v1/embeddings", {"input": [text]}).json()["data"][0]["embedding"]
    spaced = post(fake, "/v1/embeddings", '{"input": [ "TEXT" ], "dimensions" : 8 }'.replace("TEXT", text)).json()
    assert spaced["data"][0]["embedding"] == plain


@pytest.mark.parametrize("depth", [300, 1000])
def test_a_deeply_nested_value_is_a_bad_request(fake, depth):
    """A field holding an array nested 1,000 deep (a body orjson reads: it takes 1,024 levels) was answered 500,
    "internal server error": its refusal showed the value through repr, which ran past Python's recursion limit.
    It is refused (400) as the array it is; past Python's reader's depth a big integer in it keeps orjson's
    reading (no field takes it)."""
    deep = '{"input": "x", "dimensions": ' + "[" * depth + str(BIG) + "]" * depth + "}"
    response = post(fake, "/v1/embeddings", deep)
    assert response.status_code == 400, response.text
    shown = "[[[" if depth == 300 else "(nested too deeply to show)"
    assert message(response).startswith(f"'dimensions' must be an integer, got array {shown}"), message(response)


def _recording(runner, seen: list) -> None:
    """Record, in each forward pass of ``runner`` (on its worker thread, after the batcher set its share), the
    torch threads and the CPUs that thread runs on."""
    import os

    import torch

    embed = runner.embed

    def recorded(tokens):
        seen.append((runner.name, torch.get_num_threads(), frozenset(os.sched_getaffinity(0))))
        yield from embed(tokens)

    runner.embed = recorded


def test_two_torch_models_split_the_cpus_and_threads(tiny_bert_folder):
    """Two models served in one process each took all the process's torch threads and CPUs for a lone pass
    (and the same k-th share of them for a shared one): under load on both, 2× the threads on the cores. Each
    CPU model now runs on its own share: half the torch threads (torch's OpenMP count is per calling thread)
    and half the CPUs, disjoint; a model served alone keeps them all, and threads started after the server
    stops get the process's count back."""
    import os
    import threading

    import torch

    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    cpus = frozenset(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runners = {name: EncoderRunner(Encoder(tiny_bert_folder, pooling="mean", max_length=16, device="cpu"),
                                       name=name) for name in ("a", "b")}  # fmt: skip
        seen: list = []
        for runner in runners.values():
            _recording(runner, seen)
        with start_server(runners, ServeSettings()) as server:
            for name in ("a", "b", "a", "b"):
                assert post(server, "/v1/embeddings", {"model": name, "input": "a text"}).status_code == 200
        assert {threads for _, threads, _ in seen} == {1}, seen  # 2 threads // 2 models
        used = {name: {cpu_set for n, _, cpu_set in seen if n == name} for name in runners}
        assert all(len(sets) == 1 for sets in used.values()), used  # each model always on the same CPUs
        a, b = (next(iter(used[name])) for name in ("a", "b"))
        assert not a & b and len(a) == len(b) == len(cpus) // 2 and a | b <= cpus, (a, b)
        later: list = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]  # the process's count, not a model's share, for threads started later
        seen.clear()
        with start_server(runners["a"], ServeSettings()) as server:  # the same runner alone: all of them again
            assert post(server, "/v1/embeddings", {"input": "a text"}).status_code == 200
        assert seen == [("a", 2, cpus)], seen
    finally:
        torch.set_num_threads(before)
        os.sched_setaffinity(0, cpus)
