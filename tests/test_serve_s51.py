"""Stop 51: TEI's ``POST /tokenize``, ``/decode`` and ``/similarity``, which TEI clients call (huggingface_hub's
``InferenceClient.sentence_similarity``, token counting in RAG frameworks). Each answer is compared with an
independent reference: the Hugging Face tokenizer's own ids, offsets and decoding, and numpy's cosine of /embed's
vectors; refusals carry TEI's statuses and error objects. Servers bind 127.0.0.1 on free ports and are stopped
here."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import TEXTS, post  # noqa: E402
from tinymodels import prompted_copy  # noqa: E402

from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

pytestmark = pytest.mark.slow

MAX_INPUTS = 8
MAX_CHARS = 400
LONG = " ".join(["the stock market fell sharply on monday"] * 6)  # 40+ tokens: past the 16-token window


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_bert_folder):
    """The tiny BERT (all-MiniLM-L6-v2's WordPiece tokenizer) with query/passage prompts."""
    return prompted_copy(tmp_path_factory.mktemp("prompted-s51"), tiny_bert_folder)


@pytest.fixture(scope="module")
def encoder(folder):
    from tokenpool import Encoder

    return Encoder(folder, pooling="mean", max_length=16, normalize=False, device="cpu")


@pytest.fixture(scope="module")
def tiny(encoder):
    from tokenpool.serve.runner import EncoderRunner

    settings = ServeSettings(max_inputs=MAX_INPUTS, max_input_chars=MAX_CHARS)
    with start_server(EncoderRunner(encoder, name="tiny"), settings) as server:
        yield server


@pytest.fixture(scope="module")
def hf(folder):
    """The model's tokenizer as transformers loads it: the reference."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def tei_error(response: httpx.Response, status: int, error_type: str, *named: str) -> str:
    """The TEI error object of a refusal with this status and type, whose message names each of ``named``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    for name in named:
        assert name in body["error"], body
    return body["error"]


def reference_tokens(hf, text: str, add_special_tokens: bool) -> list[dict]:
    """TEI's tokens of ``text`` from the transformers tokenizer's ids, special-token mask and character offsets:
    a special token is its vocabulary entry with no offsets, any other the text it covers, with its UTF-8 byte
    offsets (TEI's are the Rust tokenizer's byte offsets)."""
    out = hf(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
             return_special_tokens_mask=True)  # fmt: skip
    tokens = []
    for token, (start, stop), special in zip(out["input_ids"], out["offset_mapping"], out["special_tokens_mask"],
                                              strict=True):  # fmt: skip
        if special:
            tokens.append({"id": token, "text": hf.convert_ids_to_tokens(token), "special": True, "start": None,
                           "stop": None})  # fmt: skip
        else:
            tokens.append({"id": token, "text": text[start:stop], "special": False,
                           "start": len(text[:start].encode()), "stop": len(text[:stop].encode())})  # fmt: skip
    return tokens


@pytest.mark.parametrize("add_special_tokens", [None, True, False])
@pytest.mark.parametrize("prompt_name", [None, "query"])
def test_tokenize_gives_the_hf_tokenizers_tokens_with_tei_byte_offsets(tiny, hf, encoder, add_special_tokens,
                                                                       prompt_name):  # fmt: skip
    """POST /tokenize answers TEI's list (one per input) of tokens ``{id, text, special, start, stop}``: the
    prompt (``prompt_name``) in front of the text, special tokens unless ``add_special_tokens`` is false, never
    truncated; offsets in UTF-8 bytes of prompt + text, as TEI's. The ids are those /embed runs."""
    texts = [*TEXTS, LONG]
    body = {"inputs": texts}
    if add_special_tokens is not None:
        body["add_special_tokens"] = add_special_tokens
    if prompt_name is not None:
        body["prompt_name"] = prompt_name
    response = post(tiny, "/tokenize", body)
    assert response.status_code == 200, response.text
    prompt = {None: "", "query": "query: "}[prompt_name]
    expected = [reference_tokens(hf, prompt + text, add_special_tokens is not False) for text in texts]
    assert response.json() == expected
    assert len(expected[-1]) > 16  # not cut to the window
    if add_special_tokens is not False:  # the tokens /embed runs (untruncated)
        run = encoder.tokenize(texts, prompt=prompt, truncation=None).ids
        assert [[token["id"] for token in row] for row in response.json()] == run


def test_tokenize_takes_one_string_and_the_inference_api_form(tiny, hf):
    """One string is one input (TEI answers a list of one), and ``parameters`` is read as TEI's fields."""
    text = TEXTS[3]
    one = post(tiny, "/tokenize", {"inputs": text})
    assert one.status_code == 200, one.text
    assert one.json() == [reference_tokens(hf, text, True)]
    wrapped = post(tiny, "/tokenize", {"inputs": text, "parameters": {"add_special_tokens": False}})
    assert wrapped.json() == [reference_tokens(hf, text, False)]


@pytest.mark.parametrize(("body", "status", "error_type", "named"), [
    ({"inputs": []}, 400, "Empty", ["'inputs'"]),
    ({}, 422, "Validation", ["'inputs'"]),
    ({"inputs": 5}, 422, "Validation", ["'inputs'"]),
    ({"inputs": ["a", 3]}, 422, "Validation", ["'inputs[1]'"]),
    ({"inputs": ["a"] * (MAX_INPUTS + 1)}, 413, "Validation", ["'inputs'", str(MAX_INPUTS)]),
    ({"inputs": ["a", "b" * (MAX_CHARS + 1)]}, 413, "Validation", ["'inputs[1]'", str(MAX_CHARS)]),
    ({"inputs": "a", "add_special_tokens": "yes"}, 422, "Validation", ["'add_special_tokens'"]),
    ({"inputs": "a", "prompt_name": "nope"}, 422, "Validation", ["nope"]),
    ({"inputs": "a", "truncate": True}, 422, "Validation", ["'truncate'"]),  # no field of TEI's /tokenize
])  # fmt: skip
def test_tokenize_refuses_as_tei_does(tiny, body, status, error_type, named):
    tei_error(post(tiny, "/tokenize", body), status, error_type, *named)


@pytest.mark.parametrize("skip_special_tokens", [None, True, False])
def test_decode_gives_the_hf_tokenizers_text(tiny, hf, skip_special_tokens):
    """POST /decode answers one text per list of ids (one flat list: a list of one), as the tokenizer decodes
    them (special tokens skipped unless ``skip_special_tokens`` is false; TEI's Rust decode, no clean-up)."""
    rows = [hf(text)["input_ids"] for text in [*TEXTS, LONG]]
    skip = skip_special_tokens is not False
    extra = {} if skip_special_tokens is None else {"skip_special_tokens": skip_special_tokens}
    expected = [hf.decode(row, skip_special_tokens=skip, clean_up_tokenization_spaces=False) for row in rows]
    assert "[CLS]" in hf.decode(rows[0], skip_special_tokens=False)  # (the option makes a difference)
    for start in range(0, len(rows), MAX_INPUTS):
        response = post(tiny, "/decode", {"ids": rows[start : start + MAX_INPUTS], **extra})
        assert response.status_code == 200, response.text
        assert response.json() == expected[start : start + MAX_INPUTS]
    one = post(tiny, "/decode", {"ids": rows[3], **extra})
    assert one.status_code == 200, one.text
    assert one.json() == [expected[3]]


@pytest.mark.parametrize(("body", "status", "error_type", "named"), [
    ({"ids": []}, 400, "Empty", ["'ids'"]),
    ({"ids": [[101, 102], []]}, 400, "Empty", ["'ids[1]'"]),
    ({}, 422, "Validation", ["'ids'"]),
    ({"ids": "hello"}, 422, "Validation", ["'ids'"]),
    ({"ids": [101, -1]}, 422, "Validation", ["'ids[1]'", "-1"]),
    ({"ids": [101, 2.0]}, 422, "Validation", ["'ids[1]'"]),
    ({"ids": [101, True]}, 422, "Validation", ["'ids[1]'"]),
    ({"ids": [101, 2**40]}, 422, "Validation", ["'ids[1]'", str(2**40)]),
    ({"ids": [[101], 102]}, 422, "Validation", ["'ids[1]'"]),
    ({"ids": [101, 30522]}, 422, "Validation", ["'ids[1]'", "30522"]),  # past the vocabulary: TEI drops it
    ({"ids": [[101], [7592, 102, 40000]]}, 422, "Validation", ["'ids[1][2]'", "40000"]),
    ({"ids": [[101]] * (MAX_INPUTS + 1)}, 413, "Validation", ["'ids'", str(MAX_INPUTS)]),
    ({"ids": [101], "skip_special_tokens": 1}, 422, "Validation", ["'skip_special_tokens'"]),
    ({"ids": [101], "inputs": "a"}, 422, "Validation", ["'inputs'"]),
])  # fmt: skip
def test_decode_refuses_as_tei_does(tiny, body, status, error_type, named):
    tei_error(post(tiny, "/decode", body), status, error_type, *named)


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (b @ a) / (np.linalg.norm(a) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("parameters", [None, {}, {"prompt_name": "query"}, {"truncate": True}])
def test_similarity_is_the_cosine_of_embed_vectors(tiny, parameters):
    """POST /similarity answers the cosine of the source sentence and each sentence, from the vectors /embed
    gives for them (with the same prompt and truncation): numpy's cosine of /embed's answer."""
    source, sentences = TEXTS[0], [TEXTS[2], TEXTS[4], TEXTS[5]]
    fields = {} if parameters is None else parameters
    if "truncate" in fields:
        source = LONG  # over the window: refused without "truncate"
    body = {"inputs": {"source_sentence": source, "sentences": sentences}}
    if parameters is not None:
        body["parameters"] = parameters
    response = post(tiny, "/similarity", body)
    assert response.status_code == 200, response.text
    vectors = post(tiny, "/embed", {"inputs": [source, *sentences], **fields}).json()
    expected = cosine(vectors[0], vectors[1:])
    assert len(set(np.round(expected, 4))) == len(sentences)  # (distinct values: a mix-up would show)
    np.testing.assert_allclose(response.json(), expected, rtol=0, atol=2e-6)
    assert int(response.headers["x-compute-tokens"]) > 0


def test_inference_client_sentence_similarity(tiny, monkeypatch):
    """huggingface_hub's ``InferenceClient.sentence_similarity`` posts ``{"inputs": {"source_sentence",
    "sentences"}, "parameters": {}}`` to the base URL (``POST /``): it gets the cosines, as from /similarity."""
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)  # (its hook refuses every URL offline; this is local)
    source, sentences = TEXTS[2], [TEXTS[0], TEXTS[4]]
    expected = post(tiny, "/similarity", {"inputs": {"source_sentence": source, "sentences": sentences}}).json()
    client = hub.InferenceClient(model=tiny.url)
    got = client.sentence_similarity(source, other_sentences=sentences)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    plain = post(tiny, "/", {"inputs": [source]})  # the root still embeds a string or a list of them
    assert plain.status_code == 200 and len(plain.json()[0]) == 32, plain.text


@pytest.mark.parametrize(("inputs", "status", "error_type", "named"), [
    ({"source_sentence": "a", "sentences": []}, 400, "Empty", ["'inputs.sentences'"]),
    ({"source_sentence": "a", "sentences": ["b"] * MAX_INPUTS}, 413, "Validation", ["'inputs'", str(MAX_INPUTS)]),
    ({"sentences": ["b"]}, 422, "Validation", ["'inputs.source_sentence'"]),
    ({"source_sentence": "a"}, 422, "Validation", ["'inputs.sentences'"]),
    ({"source_sentence": 1, "sentences": ["b"]}, 422, "Validation", ["'inputs.source_sentence'"]),
    ({"source_sentence": "a", "sentences": "b"}, 422, "Validation", ["'inputs.sentences'"]),
    ({"source_sentence": "a", "sentences": ["b", 2]}, 422, "Validation", ["'inputs.sentences[1]'"]),
    ({"source_sentence": "a", "sentences": ["b", "c" * (MAX_CHARS + 1)]}, 413, "Validation",
     ["'inputs.sentences[1]'", str(MAX_CHARS)]),
    ({"source_sentence": "a", "sentences": ["b"], "other": 1}, 422, "Validation", ["'inputs.other'"]),
    ("a", 422, "Validation", ["'inputs'"]),
    (["a", "b"], 422, "Validation", ["'inputs'"]),
])  # fmt: skip
def test_similarity_refuses_as_tei_does(tiny, inputs, status, error_type, named):
    tei_error(post(tiny, "/similarity", {"inputs": inputs}), status, error_type, *named)


@pytest.mark.parametrize(("extra", "named"), [
    ({"parameters": {"truncate": "yes"}}, "'truncate'"),
    ({"parameters": {"prompt_name": "nope"}}, "nope"),
    ({"normalize": False}, "'normalize'"),  # not a field of TEI's /similarity: a cosine needs no normalisation
    ({"dimensions": 8}, "'dimensions'"),
])  # fmt: skip
def test_similarity_refuses_bad_parameters(tiny, extra, named):
    body = {"inputs": {"source_sentence": "a", "sentences": ["b"]}, **extra}
    tei_error(post(tiny, "/similarity", body), 422, "Validation", named)


def test_a_source_over_the_window_is_refused_without_truncate(tiny):
    """As /embed: an input over the model's window is refused (413) unless ``truncate`` is true."""
    body = {"inputs": {"source_sentence": LONG, "sentences": ["b"]}}
    tei_error(post(tiny, "/similarity", body), 413, "Validation", "'inputs.source_sentence'", "truncate")


def test_the_routes_ask_for_the_api_key(encoder):
    """/tokenize, /decode and /similarity pass the API key gate as /embed does (401 in TEI's form without it)."""
    from tokenpool.serve.runner import EncoderRunner

    bodies = {"/tokenize": {"inputs": "a"}, "/decode": {"ids": [101]},
              "/similarity": {"inputs": {"source_sentence": "a", "sentences": ["b"]}}}  # fmt: skip
    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings(api_key="secret")) as server:
        for path, body in bodies.items():
            tei_error(post(server, path, body), 401, "Unauthorized")
            allowed = post(server, path, body, headers={"Authorization": "Bearer secret"})
            assert allowed.status_code == 200, (path, allowed.text)


def test_a_cpu_runner_builds_the_pooling_kernels_before_the_first_request(folder):
    """numba compiles the pooling kernels on their first large use (~25 s once per machine, holding the GIL): a
    server's CPU model builds (or loads) them when it is made, not inside a request with the event loop stalled.
    A fresh process: nothing has pooled there yet."""
    import subprocess
    import sys

    pytest.importorskip("numba")
    script = (
        "import sys\n"
        "from tokenpool import Encoder\n"
        "from tokenpool.core import compiled\n"
        "from tokenpool.serve.runner import EncoderRunner\n"
        f"encoder = Encoder({str(folder)!r}, pooling='mean', max_length=16, device='cpu')\n"
        "assert compiled.built() is None, 'kernels built before the runner'\n"
        "EncoderRunner(encoder, name='tiny')\n"
        "print('built' if compiled.built() is not None else 'not built')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "built"


@pytest.fixture(scope="module")
def defaulted(tmp_path_factory, tiny_bert_folder):
    """The tiny BERT whose config names a default prompt ("query: "), served."""
    import json

    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    folder = prompted_copy(tmp_path_factory.mktemp("defaulted-s51"), tiny_bert_folder)
    config = folder / "config_sentence_transformers.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "default_prompt_name": "query"}))
    encoder = Encoder(folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    with start_server(EncoderRunner(encoder, name="defaulted"), ServeSettings()) as server:
        yield server, encoder


@pytest.mark.parametrize("prompt_name", [None, "passage"])
def test_tokenize_puts_a_models_default_prompt_in_once(defaulted, hf, prompt_name):
    """On a model whose config names a default prompt, /tokenize put it in front twice (once by the request,
    again by the tokenisation, as special tokens): the ids differed from those /embed runs."""
    server, encoder = defaulted
    body = {"inputs": ["hello there"], **({"prompt_name": prompt_name} if prompt_name else {})}
    response = post(server, "/tokenize", body)
    assert response.status_code == 200, response.text
    prompt = {None: "query: ", "passage": "passage: "}[prompt_name]
    assert response.json() == [reference_tokens(hf, prompt + "hello there", True)]
    run = encoder.tokenize(["hello there"], prompt=prompt, truncation=None).ids
    assert [[token["id"] for token in row] for row in response.json()] == run


@pytest.mark.parametrize(("path", "body"), [("/tokenize", {"inputs": "hello"}), ("/decode", {"ids": [101, 102]})])
def test_tokenize_and_decode_are_refused_while_draining(encoder, path, body):
    """/tokenize and /decode were taken while the server drained (and not counted in flight, so the drain did
    not wait for them); they are refused with 503 as /embed is."""
    from tokenpool.serve.runner import EncoderRunner

    with start_server(EncoderRunner(encoder, name="tiny"), ServeSettings()) as server:
        assert post(server, path, body).status_code == 200
        # a request counted in flight keeps the draining server up: idle, it stops after two ticks (~0.2 s), and
        # under load the next request then met a closed port (the first request's count is back to 0: it is
        # taken off before its answer is sent)
        server.service.in_flight += 1
        server.service.draining = True
        try:
            response = post(server, path, body)
            assert response.status_code == 503, response.text
        finally:
            server.service.draining = False
            server.service.in_flight -= 1
