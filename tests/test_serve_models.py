"""Several models in one server process (each equals its own Encoder, concurrently), SPLADE rows, compact
precisions per request (core.quantize codes, base64-packed), and the command's per-model options."""

from __future__ import annotations

import asyncio
import base64
import signal
import sys

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import TEXTS, FakeRunner, assert_same_vectors, fake_vector, post, spawn  # noqa: E402
from tinymodels import bert_weights  # noqa: E402

from tokenpool.core.quantize import Calibration, code_dtype, quantize  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlm_folder(tmp_path_factory):
    return bert_weights(tmp_path_factory.mktemp("tiny-mlm"), mlm=True)


def encoder(folder, **options):
    from tokenpool import Encoder

    return Encoder(folder, device="cpu", **options)


@pytest.fixture(scope="module")
def three_models(tiny_bert_folder, mlm_folder):
    from tokenpool.serve.runner import EncoderRunner

    runners = {
        "cls": EncoderRunner(encoder(tiny_bert_folder, pooling="cls")),
        "mean": EncoderRunner(encoder(tiny_bert_folder, pooling="mean", normalize=True)),
        "splade": EncoderRunner(encoder(mlm_folder, pooling="splade")),
    }
    with start_server(runners) as server:
        yield server


def test_openai_requests_without_a_model_go_to_the_first_dense_one(tiny_bert_folder, mlm_folder):
    """With a SPLADE model listed first, /v1/embeddings without ``model`` answered with its vocabulary-wide
    vectors; it goes to the first dense model, as TEI's /embed does (docs/serve.md)."""
    from tokenpool.serve.runner import EncoderRunner

    runners = {"splade": EncoderRunner(encoder(mlm_folder, pooling="splade")),
               "mean": EncoderRunner(encoder(tiny_bert_folder, pooling="mean"))}  # fmt: skip
    with start_server(runners) as server:
        answer = post(server, "/v1/embeddings", {"input": TEXTS[:2]}).json()
        embed = post(server, "/embed", {"inputs": TEXTS[:2]}).json()
    assert answer["model"] == "mean"
    expected = encoder(tiny_bert_folder, pooling="mean").encode(TEXTS[:2])
    np.testing.assert_allclose(np.array([row["embedding"] for row in answer["data"]]), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(embed), expected, atol=1e-5)


def decode(rows: list, precision: str) -> np.ndarray:
    return np.stack([np.frombuffer(base64.b64decode(row), dtype=code_dtype(precision)) for row in rows])


def test_several_models_serve_concurrently_without_cross_talk(three_models, tiny_bert_folder):
    server = three_models
    expected = {
        "cls": encoder(tiny_bert_folder, pooling="cls").encode(TEXTS),
        "mean": encoder(tiny_bert_folder, pooling="mean", normalize=True).encode(TEXTS),
    }
    rng = np.random.default_rng(0)
    requests = [("cls" if k % 2 else "mean", sorted(rng.choice(len(TEXTS), 3, replace=False))) for k in range(24)]

    async def run_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one(name, rows):
                body = {"model": name, "input": [TEXTS[i] for i in rows]}
                answer = (await client.post("/v1/embeddings", json=body)).json()
                return name, rows, answer

            return await asyncio.gather(*(one(name, rows) for name, rows in requests))

    for name, rows, answer in asyncio.run(run_all()):
        assert answer["model"] == name
        assert_same_vectors([d["embedding"] for d in answer["data"]], expected[name][rows])
    assert [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]] == ["cls", "mean", "splade"]
    unknown = post(server, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})
    assert unknown.status_code == 404 and "cls, mean, splade" in unknown.json()["error"]["message"]
    assert_same_vectors(post(server, "/embed", {"inputs": TEXTS}).json(), expected["cls"])  # the first dense one
    assert_same_vectors(post(server, "/embed", {"inputs": TEXTS, "model": "mean"}).json(), expected["mean"])
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("cls", "mean"):
        assert f'tokenpool_inputs_total{{model="{name}"}}' in metrics
    info = httpx.get(server.url + "/info").json()
    assert [m["model_id"] for m in info["models"]] == ["cls", "mean", "splade"]
    assert all(m["memory_bytes"] > 0 for m in info["models"]) and info["models"][2]["sparse"]


def test_embed_sparse_serves_the_splade_model(three_models, mlm_folder):
    expected = encoder(mlm_folder, pooling="splade").encode(TEXTS[:4])
    response = post(three_models, "/embed_sparse", {"inputs": TEXTS[:4]})  # no model: the first sparse one
    assert response.status_code == 200
    for row, want in zip(response.json(), expected, strict=True):
        indices = [entry["index"] for entry in row]
        assert indices == sorted(indices) and indices == np.flatnonzero(want).tolist()
        np.testing.assert_allclose([entry["value"] for entry in row], want[indices], rtol=1e-5, atol=1e-6)
    dense = post(three_models, "/embed", {"inputs": TEXTS[:2], "model": "splade", "normalize": False}).json()
    np.testing.assert_allclose(dense, expected[:2], rtol=1e-5, atol=1e-6)
    refused = post(three_models, "/v1/embeddings", {"model": "splade", "input": "x", "dimensions": 8})
    assert refused.status_code == 400 and "sparse" in refused.json()["error"]["message"]
    assert refused.json()["error"]["param"] == "dimensions"
    refused = post(three_models, "/v1/embeddings", {"model": "splade", "input": "x", "precision": "int8"})
    message = refused.json()["error"]["message"]  # names the served model, never its folder
    assert refused.status_code == 400 and "splade" in message and str(mlm_folder.name) not in message, message
    both = post(three_models, "/v1/embeddings", {"model": "splade", "input": "x", "precision": "int8", "dimensions": 8})
    error = both.json()["error"]  # param and message about the same field
    assert error["param"] == "dimensions" and "'dimensions' does not apply" in error["message"], error
    refused = post(three_models, "/embed_sparse", {"inputs": "x", "model": "cls"})
    assert refused.status_code == 400 and "/embed" in refused.json()["error"]


CALIBRATION_TEXTS = [f"calibration text {k}" for k in range(50)]


def test_compact_precisions_are_the_core_codes_base64_packed():
    runner = FakeRunner(width=16)
    runner.calibration = Calibration.from_vectors(np.stack([fake_vector(t, 16) for t in CALIBRATION_TEXTS]))
    texts = ["alpha beta", "gamma", "a longer text with several words"]
    raw = np.stack([fake_vector(t, 16) for t in texts]).astype(np.float64)
    with start_server(runner) as server:
        for precision in ("int8", "uint8", "binary", "ubinary", "float16"):
            answer = post(server, "/v1/embeddings", {"input": texts, "precision": precision}).json()
            codes = decode([d["embedding"] for d in answer["data"]], precision)
            np.testing.assert_array_equal(codes, quantize(raw.astype(np.float32), precision, runner.calibration))
        # Matryoshka: cut to 8, then normalise, then the codes (TEI answers base64 strings too)
        cut = raw[:, :8] / np.linalg.norm(raw[:, :8], axis=1, keepdims=True)
        body = {"inputs": texts, "precision": "ubinary", "dimensions": 8, "normalize": True}
        np.testing.assert_array_equal(decode(post(server, "/embed", body).json(), "ubinary"), np.packbits(cut > 0, axis=1))
        floats = np.asarray(post(server, "/embed", {**body, "precision": "float32"}).json())
        np.testing.assert_allclose(floats, cut, rtol=1e-6)
        mismatch = post(server, "/embed", {"inputs": texts, "precision": "int8", "dimensions": 8})
        assert mismatch.status_code == 422 and "dimension 16" in mismatch.json()["error"]
        assert "'precision'" in mismatch.json()["error"]  # the calibration goes with the precision asked for
        mismatch = post(server, "/v1/embeddings", {"input": texts, "precision": "uint8", "dimensions": 8})
        assert mismatch.status_code == 400 and mismatch.json()["error"]["param"] == "precision"
        fooled = post(server, "/v1/embeddings", {"input": "x", "prompt_name": "dimensions"})  # the value names a field
        assert fooled.status_code == 400 and fooled.json()["error"]["param"] == "prompt_name"
        bad = post(server, "/v1/embeddings", {"input": "x", "precision": "int4"})
        assert bad.status_code == 400 and "'precision'" in bad.json()["error"]["message"]
    with start_server(FakeRunner(width=16)) as server:
        refused = post(server, "/v1/embeddings", {"input": "x", "precision": "int8"})
        assert refused.status_code == 400 and "--calibration" in refused.json()["error"]["message"]
        both = post(server, "/v1/embeddings", {"input": "x", "precision": "int8", "dimensions": 999}).json()["error"]
        assert both["param"] == "dimensions" and "'dimensions' must be between 1 and 16" in both["message"], both


def test_serve_command_with_two_named_models_and_a_calibration(tiny_bert_folder, tmp_path):
    cls, mean = encoder(tiny_bert_folder, pooling="cls"), encoder(tiny_bert_folder, pooling="mean", normalize=False)
    calibration = cls.calibrate(CALIBRATION_TEXTS).save(tmp_path / "cls.json")
    process, url = spawn(
        [sys.executable, "-m", "tokenpool.cli", "serve", "--port", "0", "--pooling", "mean",
         "--model", f"cls={tiny_bert_folder},pooling=cls,calibration={calibration}",
         "--model", f"mean={tiny_bert_folder},normalize=false"]
    )  # fmt: skip
    try:
        answer = httpx.post(url + "/v1/embeddings", json={"model": "cls", "input": TEXTS[:3]}).json()
        assert_same_vectors([d["embedding"] for d in answer["data"]], cls.encode(TEXTS[:3]))
        raw = httpx.post(url + "/embed", json={"model": "mean", "inputs": TEXTS[:3]}).json()
        assert_same_vectors(raw, mean.encode(TEXTS[:3]))
        codes = httpx.post(url + "/embed", json={"model": "cls", "inputs": TEXTS[:3], "precision": "int8"}).json()
        want = quantize(cls.encode(TEXTS[:3]), "int8", Calibration.load(calibration))
        assert np.abs(decode(codes, "int8").astype(int) - want).max() <= 1  # float rounding at a code boundary
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("model", "needles"),
    [("a=./x,bogus=1", ("bogus",)), ("a=./x,batch-size=4", ("batch-size",)), ("a=./x,dim=zero", (",dim=zero': dim:", "zero")),
     ("a=./x,normalize=maybe", (",normalize=maybe': normalize:", "'maybe'"))],
)
def test_per_model_option_errors_are_one_line(run, model, needles):
    from clitools import assert_one_error_line

    code, _, err = run("serve", "--model", model, "--port", "0")
    assert_one_error_line(code, err, *needles)


def test_two_models_of_one_name_are_refused(run):
    """Found by `--model a=X --model a=Y`: the models were keyed by name, so one was loaded and silently
    dropped and requests for 'a' went to the other folder."""
    from clitools import assert_one_error_line

    code, _, err = run("serve", "--model", "a=./x", "--model", "b=./y", "--model", "a=./z", "--port", "0")
    assert_one_error_line(code, err, "'a'", "two --model")


PARTS = [
    "Late chunking reads the whole document before it pools each chunk.",
    "So the second chunk still knows what the first one said about the topic.",
    "Windows of the model's length cover a document longer than one window, with overlap.",
    "Each token is pooled once, from the window where it has the most context.",
]


@pytest.fixture(scope="module")
def windowed(tiny_bert_folder):
    """A mean-pooling, normalising tiny model with a 16-token window (so every document spans many windows)
    behind a server whose forward passes record their padded shapes, with a 64-token budget per pass."""
    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.settings import ServeSettings

    runner = EncoderRunner(encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=True))
    shapes = []
    forward = runner.encoder.runner.forward

    def recording(ids, mask):
        shapes.append(np.shape(ids))
        return forward(ids, mask)

    runner.encoder.runner.forward = recording
    settings = ServeSettings(max_batch_tokens=64, max_document_chars=2000)
    with start_server(runner, settings) as server:
        server.shapes = shapes
        yield server


def test_late_chunking_over_http_equals_encode_chunks(windowed, tiny_bert_folder):
    reference = encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=True)
    document = " ".join(PARTS)
    starts = np.cumsum([0] + [len(p) + 1 for p in PARTS[:-1]])
    spans = [[int(s), int(s) + len(p)] for s, p in zip(starts, PARTS, strict=True)]
    expected = reference.encode_chunks([document], chunks="spans", spans=[spans], chunking="late").vectors
    windowed.shapes.clear()
    answer = post(windowed, "/v1/embeddings", {"input": PARTS, "late_chunking": True}).json()
    assert_same_vectors([d["embedding"] for d in answer["data"]], expected)
    assert answer["usage"]["prompt_tokens"] == len(reference.tokenizer(document)["input_ids"])
    assert windowed.shapes and max(rows * length for rows, length in windowed.shapes) <= 64  # the token budget
    tei = post(windowed, "/embed", {"inputs": PARTS, "late_chunking": True, "dimensions": 8}).json()
    cut = expected[:, :8] / np.linalg.norm(expected[:, :8], axis=1, keepdims=True)  # rows are unit: cut, renormalise
    assert_same_vectors(tei, cut)


def test_embed_documents_gives_chunk_vectors_with_their_spans(windowed, tiny_bert_folder):
    reference = encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=True)
    documents = [" ".join(PARTS), " ".join(PARTS[2:])]
    for chunking in ("late", "naive"):
        expected = reference.encode_chunks(documents, chunks="tokens:8:2", chunking=chunking)
        body = {"documents": documents, "chunks": "tokens:8:2", "chunking": chunking, "return_text": True}
        data = post(windowed, "/embed_documents", body).json()["data"]
        assert [(d["document"], d["chunk"], d["start"], d["end"]) for d in data] == list(
            zip(expected.doc.tolist(), expected.chunk.tolist(), expected.start.tolist(), expected.end.tolist(), strict=True)
        )
        assert all(d["text"] == documents[d["document"]][d["start"] : d["end"]] for d in data)
        assert_same_vectors([d["embedding"] for d in data], expected.vectors)
    windows = encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=True, long_documents="windows")
    whole = post(windowed, "/embed", {"inputs": documents, "long_documents": "windows"}).json()
    assert_same_vectors(whole, windows.encode(documents))


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"documents": ["x" * 2001], "chunks": "tokens:8"}, 413, "--max-document-chars"),
        ({"documents": ["a doc"]}, 422, "'chunks' is required"),
        ({"documents": ["a doc"], "chunks": "lines:3"}, 422, "'chunks'"),
        ({"documents": ["a doc"], "chunks": "spans", "spans": [[[3, 99]]]}, 422, "99"),  # the endpoint's status for a bad value
        ({"documents": ["a doc"], "chunks": "tokens:8", "chunking": "early"}, 422, "'chunking'"),
    ],
)
def test_bad_document_requests(windowed, body, status, needle):
    response = post(windowed, "/embed_documents", body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]
    assert post(windowed, "/v1/embeddings", {"input": ["y" * 1500] * 2, "late_chunking": True}).status_code == 400


def test_late_chunking_names_an_empty_input(windowed):
    """Found by /embed {"inputs": ["abc", "", "def"], "late_chunking": true}: a 400 about a span [4, 4] the
    client never sent, raised in the model worker after the request had queued. Now a 422 naming the input."""
    response = post(windowed, "/embed", {"inputs": ["abc", "", "def"], "late_chunking": True})
    assert response.status_code == 422, response.text
    assert "'inputs[1]' is an empty string" in response.json()["error"]
