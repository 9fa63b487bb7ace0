"""The ONNX Runtime runner: tokenizer equality with transformers, vector parity with the torch runner on STS-B
and SciFact, a run with torch and transformers blocked, the onnx/ folder layout, clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from tokenpool.errors import ModelFolderError, OptionError  # noqa: E402
from tokenpool.model.fast_tokenizer import FolderTokenizer  # noqa: E402
from tokenpool.model.folders import bundled_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
STSB = SHARED / "stsb" / "sts-test.csv"
SCIFACT = SHARED / "ir" / "scifact" / "corpus.jsonl"

TRICKY = [
    "",
    " ",
    "Hello, World!",
    "Ünïcödé Café naïve résumé",
    "中文字符 and 日本語のテキスト",
    "emoji 🤗🤗 ok 👩‍👩‍👧",
    "tab\tnew\nline\r\nend",
    "[CLS] [SEP] [MASK] [PAD] [UNK] inside text",
    "don't won't y'all",
    "A" * 300,
    "ﬁ ligature ℌ ① ²",
    "x " * 600,
    "zero\u200bwidth\u00a0nbsp",
]


# a few texts of any characters, for hypothesis
ANY_TEXTS = st.lists(st.text(max_size=80), min_size=1, max_size=6)


def stsb_sentences(n: int) -> list[str]:
    rows = [line.split("\t") for line in STSB.read_text(encoding="utf-8").splitlines()[: n // 2]]
    return [row[5] for row in rows] + [row[6] for row in rows]


def scifact_documents(n: int) -> list[str]:
    docs = []
    with open(SCIFACT, encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            docs.append(f"{doc.get('title', '')} {doc.get('text', '')}".strip())
            if len(docs) == n:
                break
    return docs


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory) -> Path:
    """The bundled model exported once per session, through the CLI command users run."""
    from tokenpool import cli

    target = tmp_path_factory.mktemp("onnx") / "minilm.onnx"
    assert cli.main(["export-onnx", "--output", str(target)]) == 0
    return target


@pytest.fixture(scope="session")
def onnx_encoder(onnx_export):
    from tokenpool import Encoder

    return Encoder(runtime="onnx", onnx_file=onnx_export)


@pytest.fixture(scope="session")
def torch_encoder():
    from tokenpool import Encoder

    return Encoder(device="cpu")


# ------------------------------------------------------------------------------------------ tokenizer


@pytest.fixture(scope="session")
def tokenizers_pair():
    transformers = pytest.importorskip("transformers")
    folder = bundled_model_path()
    return FolderTokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.mark.parametrize("max_length", [3, 8, 128, 256, 512, None])
def test_tokenizer_ids_equal_transformers_on_tricky_texts(tokenizers_pair, max_length):
    ours, theirs = tokenizers_pair
    options = dict(add_special_tokens=True, truncation=max_length is not None, max_length=max_length)
    assert ours(TRICKY, **options)["input_ids"] == theirs(TRICKY, **options)["input_ids"]
    for text in TRICKY[:4]:  # a single str gives one row, as transformers does
        assert ours(text, **options)["input_ids"] == theirs(text, **options)["input_ids"]


@given(texts=ANY_TEXTS, max_length=st.integers(2, 40))
def test_tokenizer_ids_equal_transformers_on_any_text(tokenizers_pair, texts, max_length):
    ours, theirs = tokenizers_pair
    options = dict(add_special_tokens=True, truncation=True, max_length=max_length)
    assert ours(texts, **options)["input_ids"] == theirs(texts, **options)["input_ids"]
    assert (
        ours(texts, add_special_tokens=False)["input_ids"]
        == theirs(texts, add_special_tokens=False)["input_ids"]
    )


# the long-document modes, chunks and per-token output read each token's characters: FolderTokenizer had no
# offsets (nor is_fast), so the onnx runtime refused them saying the folder had no fast tokenizer
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("max_length", [3, 8, 128, None])
def test_tokenizer_offsets_equal_transformers_on_tricky_texts(tokenizers_pair, monkeypatch, max_length, side):
    ours, theirs = tokenizers_pair
    monkeypatch.setattr(ours, "truncation_side", side)
    monkeypatch.setattr(theirs, "truncation_side", side)
    assert ours.is_fast and theirs.is_fast
    for special in (True, False):
        options = dict(
            add_special_tokens=special, truncation=max_length is not None, max_length=max_length,
            return_offsets_mapping=True,
        )  # fmt: skip
        got, want = ours(TRICKY, **options), theirs(TRICKY, **options)
        assert got["offset_mapping"] == want["offset_mapping"] and got["input_ids"] == want["input_ids"]
        for text in TRICKY[:6]:  # a single str gives one row
            assert ours(text, **options)["offset_mapping"] == theirs(text, **options)["offset_mapping"]


@given(texts=ANY_TEXTS, max_length=st.integers(2, 40), special=st.booleans())
def test_tokenizer_offsets_equal_transformers_on_any_text(tokenizers_pair, texts, max_length, special):
    ours, theirs = tokenizers_pair
    for options in (dict(truncation=True, max_length=max_length), {}):
        options.update(add_special_tokens=special, return_offsets_mapping=True)
        assert ours(texts, **options)["offset_mapping"] == theirs(texts, **options)["offset_mapping"]
    ids = [i for row in ours(texts)["input_ids"] for i in row] + [0, 101, 30521, 10**6]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids[0]) == theirs.convert_ids_to_tokens(ids[0])


def test_tokenizer_special_tokens_match_transformers(tokenizers_pair):
    ours, theirs = tokenizers_pair
    assert ours.pad_token_id == theirs.pad_token_id
    assert ours.eos_token_id == theirs.eos_token_id
    assert ours.all_special_ids == sorted(theirs.all_special_ids)
    assert ours.model_max_length == theirs.model_max_length
    assert ours.padding_side == theirs.padding_side


# ------------------------------------------------------------------------------------------ parity


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)
    return float(cos.min())


def test_onnx_matches_torch_on_stsb_and_scifact(onnx_encoder, torch_encoder):
    texts = stsb_sentences(400) + scifact_documents(24) + TRICKY
    ours = onnx_encoder.encode(texts, batch_size=16)
    reference = torch_encoder.encode(texts, batch_size=16)
    assert ours.shape == reference.shape == (len(texts), 384)
    assert ours.dtype == np.float32
    assert _min_cos(ours, reference) >= 0.99999
    assert onnx_encoder.max_length == torch_encoder.max_length == 256
    assert onnx_encoder.strategies == torch_encoder.strategies
    # other poolings read the same hidden states
    first = next(onnx_encoder.iter_token_batches(texts[:8]))
    reference_batch = next(torch_encoder.iter_token_batches(texts[:8]))
    np.testing.assert_array_equal(first.indices, reference_batch.indices)
    for strategy in ("cls", "max", "mean_sqrt_len"):
        assert (
            _min_cos(
                onnx_encoder.pool_batch(first, strategy), torch_encoder.pool_batch(reference_batch, strategy)
            )
            >= 0.99999
        )


def long_documents() -> list[str]:
    """SciFact documents over 256 tokens, and one repeated word well over (600 tokens)."""
    return [doc for doc in scifact_documents(60) if len(doc) > 1800][:5] + ["x " * 600]


def test_onnx_matches_torch_on_windows_chunks_and_token_vectors(onnx_export, onnx_encoder, torch_encoder):
    # the onnx runtime refused all of these (its tokenizer gave no character offsets)
    from tokenpool import Encoder

    docs = long_documents()
    assert min(len(torch_encoder.tokenizer(doc)["input_ids"]) for doc in docs) > 256
    windows = Encoder(runtime="onnx", onnx_file=onnx_export, long_documents="windows")
    reference = Encoder(device="cpu", long_documents="windows")
    assert _min_cos(windows.encode(docs, batch_size=8), reference.encode(docs, batch_size=8)) >= 0.99999
    got, want = windows.encode(docs[-1], output="tokens"), reference.encode(docs[-1], output="tokens")
    assert got.shape == want.shape == (602, 384) and _min_cos(got, want) >= 0.99999
    for chunking in ("late", "naive"):
        got = onnx_encoder.encode_chunks(docs, chunks="tokens:64", chunking=chunking)
        want = torch_encoder.encode_chunks(docs, chunks="tokens:64", chunking=chunking)
        assert len(got) == len(want) > 2 * len(docs) and _min_cos(got.vectors, want.vectors) >= 0.99999
        for field in ("doc", "chunk", "start", "end"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    texts = docs[:2] + TRICKY
    got, want = onnx_encoder.encode(texts, output="tokens"), torch_encoder.encode(texts, output="tokens")
    assert [rows.shape for rows in got] == [rows.shape for rows in want]
    assert min(_min_cos(a, b) for a, b in zip(got, want, strict=True) if len(a)) >= 0.99999


def test_onnx_folder_layout_and_variants(tmp_path, onnx_export):
    """sentence-transformers' layout: onnx/model.onnx by default, onnx/model_O*.onnx by name."""
    from tokenpool import Encoder

    folder = tmp_path / "model"
    folder.mkdir()
    for entry in bundled_model_path().iterdir():
        (folder / entry.name).symlink_to(entry)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model_O2.onnx").symlink_to(onnx_export)
    with pytest.raises(ModelFolderError, match=r"model_O3.onnx.*present: \['model_O2.onnx'\]"):
        Encoder(folder, runtime="onnx", onnx_file="model_O3.onnx")
    variant = Encoder(folder, runtime="onnx", onnx_file="model_O2.onnx")
    assert variant.runner.path == folder / "onnx" / "model_O2.onnx"
    (folder / "onnx" / "model.onnx").symlink_to(onnx_export)
    default = Encoder(folder, runtime="onnx")
    assert default.runner.path == folder / "onnx" / "model.onnx"
    np.testing.assert_array_equal(default.encode(TRICKY[:5]), variant.encode(TRICKY[:5]))


@pytest.mark.parametrize(
    ("place", "advice"),
    [
        ("onnx/model.onnx", "runtime='onnx'"),  # (inside a command: --runtime onnx, `spell`)
        ("model.onnx", "runtime='onnx', onnx_file='model.onnx'"),
    ],
)
def test_onnx_only_folder_is_sent_to_the_onnx_runtime_and_runs_there(tmp_path, onnx_export, place, advice):
    """The torch runtime's refusal names the option that runs the folder, and following it works."""
    from tokenpool import Encoder

    folder = tmp_path / "model"
    folder.mkdir()
    for entry in bundled_model_path().iterdir():
        if entry.name not in ("model.safetensors", "pytorch_model.bin"):
            (folder / entry.name).symlink_to(entry)
    (folder / place).parent.mkdir(exist_ok=True)
    (folder / place).symlink_to(onnx_export)
    pattern = f"only ONNX weights \\({re.escape(place)}\\), .*use {re.escape(advice)}$"
    with pytest.raises(ModelFolderError, match=pattern) as info:
        Encoder(folder)
    assert "issue 12" not in str(info.value)
    onnx_file = None if place == "onnx/model.onnx" else place
    vectors = Encoder(folder, runtime="onnx", onnx_file=onnx_file).encode(TRICKY[:3])
    np.testing.assert_array_equal(vectors, Encoder(runtime="onnx", onnx_file=onnx_export).encode(TRICKY[:3]))


def test_unsupported_onnx_options_are_clear_errors(onnx_export):
    from tokenpool import Encoder

    with pytest.raises(OptionError, match="splade pooling is not supported by the onnx runtime"):
        Encoder(runtime="onnx", onnx_file=onnx_export, pooling="splade")
    with pytest.raises(OptionError, match="takes no dtype='float16'"):
        Encoder(runtime="onnx", onnx_file=onnx_export, dtype="float16")
    with pytest.raises(OptionError, match="runtime must be 'torch' or 'onnx', got 'tensorrt'"):
        Encoder(runtime="tensorrt")
    with pytest.raises(OptionError, match="onnx_file='x.onnx' needs runtime='onnx'"):
        Encoder(onnx_file="x.onnx")
    with pytest.raises(OptionError, match="runs on 'cpu' or 'cuda', got device 'mps'"):
        Encoder(runtime="onnx", onnx_file=onnx_export, device="mps")


def test_cli_runtime_onnx_and_export_errors(run, tmp_path, onnx_export, onnx_encoder):
    corpus = tmp_path / "in.txt"
    corpus.write_text("A man is playing a guitar.\nA dog runs.\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    code, _, err = run("embed", corpus, "-o", out, "--runtime", "onnx", "--onnx-file", onnx_export)
    assert code == 0, err
    np.testing.assert_allclose(
        np.load(out), onnx_encoder.encode(["A man is playing a guitar.", "A dog runs."]), rtol=0, atol=1e-6
    )
    code, _, err = run("export-onnx", "--output", onnx_export)
    assert code == 2 and "already exists" in err and "Traceback" not in err
    code, _, err = run("embed", corpus, "-o", tmp_path / "x.npy", "--runtime", "onnx", "--pooling", "splade")
    assert code == 2 and "splade pooling is not supported by the onnx runtime" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_runtime_onnx_runs_windows_and_late_chunking(run, tmp_path, onnx_export):
    # both stopped with "need a fast tokenizer (tokenizer.json) ...; FolderTokenizer is not one" (evaluate only
    # after the query pass)
    from test_retrieval import write_beir

    from tokenpool import Encoder

    docs = long_documents()[:3]
    corpus = tmp_path / "in.txt"
    corpus.write_text("".join(doc + "\n" for doc in docs), encoding="utf-8")
    out = tmp_path / "out.npy"
    onnx = ["--runtime", "onnx", "--onnx-file", onnx_export]
    code, _, err = run("embed", corpus, "-o", out, *onnx, "--long-documents", "windows", "-q")
    assert code == 0, err
    want = Encoder(runtime="onnx", onnx_file=onnx_export, long_documents="windows").encode(docs)
    np.testing.assert_allclose(np.load(out), want, rtol=0, atol=1e-6)
    beir = write_beir(
        tmp_path / "beir", [{"_id": f"d{i}", "title": "", "text": doc} for i, doc in enumerate(docs)],
        [{"_id": "q1", "text": docs[1][:80]}], [("q1", "d1", 1)],
    )  # fmt: skip
    code, out, err = run("evaluate", beir, *onnx, "--modes", "late-128", "--pooling", "mean", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    assert row["mode"] == "late-128" and row["scores_x100"]["MRR@10"] == 100.0


# ------------------------------------------------------------------------------------------ no torch

# the start of a script run in a subprocess: importing torch, transformers or sentence-transformers fails
BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys, json

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "sentence_transformers"):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    """
)
_BLOCKED_RUN = BLOCK_TORCH + textwrap.dedent(
    """
    import numpy as np
    from tokenpool import Encoder

    args = json.loads(sys.argv[1])
    encoder = Encoder(runtime="onnx", onnx_file=args["onnx"])
    np.save(args["out"], encoder.encode(args["texts"], batch_size=8))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    assert not loaded, loaded
    try:  # no ONNX file and no torch to export one: a clear error
        Encoder(runtime="onnx")
    except FileNotFoundError as err:
        print("ERROR:", err)
    """
)


def test_onnx_runtime_runs_without_torch_or_transformers(tmp_path, onnx_export, torch_encoder):
    texts = stsb_sentences(40) + TRICKY
    out = tmp_path / "vectors.npy"
    env = {**os.environ, "TOKENPOOL_CACHE": str(tmp_path / "empty-cache"), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _BLOCKED_RUN,
            json.dumps({"onnx": str(onnx_export), "out": str(out), "texts": texts}),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _min_cos(np.load(out), torch_encoder.encode(texts)) >= 0.99999
    assert "has no onnx/model.onnx and exporting one needs torch and transformers" in done.stdout
    assert "tokenpool export-onnx" in done.stdout


def test_onnx_decoder_with_last_token_pooling_matches_torch(tmp_path):
    """A tiny random Qwen2 (byte-level BPE, EOS appended, left padding) exported and run by both runtimes
    (right padding passed too when tried; left is the harder case: positions and the last token move)."""
    padding_side = "left"
    from test_encoder import _qwen2_weights, _save_sentence_transformer

    from tokenpool import Encoder
    from tokenpool.model.onnx import export_onnx

    folder = tmp_path / "qwen2"
    _qwen2_weights(folder, padding_side=padding_side)
    _save_sentence_transformer(folder, "lasttoken", normalize=True)
    export_onnx(folder, folder / "onnx" / "model.onnx")
    texts = ["the cat sat", "a much longer sentence about the cat and the dog", "", "dog"]
    onnx = Encoder(folder, runtime="onnx")
    torch_runner = Encoder(folder, device="cpu")
    assert onnx.add_eos == torch_runner.add_eos and onnx.tokenization.left_pad == (padding_side == "left")
    assert onnx.tokenization.tokenize(texts) == torch_runner.tokenization.tokenize(texts)
    assert _min_cos(onnx.encode(texts, batch_size=4), torch_runner.encode(texts, batch_size=4)) >= 0.99999


def test_config_json_is_read_without_transformers(tmp_path):
    from tokenpool.model.onnx import read_model_config

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llava",
                "text_config": {"hidden_size": 64, "vocab_size": 10, "max_position_embeddings": 32},
            }
        )
    )
    config = read_model_config(tmp_path)
    assert (config.hidden_size, config.vocab_size, config.max_position_embeddings) == (64, 10, 32)
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 16, "n_positions": 8}))  # other spellings
    assert (read_model_config(tmp_path).hidden_size, read_model_config(tmp_path).max_position_embeddings) == (
        16,
        8,
    )
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 5}))
    with pytest.raises(ModelFolderError, match="names no hidden size"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="cannot read the model config"):
        read_model_config(tmp_path)


def test_folder_without_tokenizer_json_needs_the_torch_runtime(tmp_path, onnx_export):
    from tokenpool import Encoder

    folder = tmp_path / "slow"
    folder.mkdir()
    for entry in bundled_model_path().iterdir():
        if entry.name != "tokenizer.json":
            (folder / entry.name).symlink_to(entry)
    with pytest.raises(ModelFolderError, match="only slow tokenizer files — use runtime='torch'"):
        Encoder(folder, runtime="onnx", onnx_file=onnx_export)


def test_short_texts_run_two_passes_at_a_time_with_the_same_vectors(onnx_encoder, monkeypatch):
    """On a CPU with 2+ threads, small passes run side by side on a one-thread session; vectors unchanged."""
    runner = onnx_encoder.runner
    texts = stsb_sentences(200)
    monkeypatch.setattr(runner, "parallel_passes", 1)
    one_at_a_time = onnx_encoder.encode(texts, batch_size=16)
    monkeypatch.setattr(runner, "parallel_passes", 2)
    calls = []
    original = type(runner).pass_forward
    monkeypatch.setattr(runner, "pass_forward", lambda ids, mask: calls.append(ids.shape) or original(runner, ids, mask))
    side_by_side = onnx_encoder.encode(texts, batch_size=16)
    assert len(calls) >= 10 and all(rows * width <= 2048 for rows, width in calls)
    np.testing.assert_allclose(side_by_side, one_at_a_time, atol=1e-6)
    calls.clear()
    onnx_encoder.encode(texts[:3])  # a lone batch runs on every thread
    assert calls == []
