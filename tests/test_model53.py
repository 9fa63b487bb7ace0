"""Model options and their messages (stop 53's model hunt): a call's own normalisation on a SPLADE folder with
max_active_dims against sentence-transformers, command-line messages that name the flag the user typed, a sparse
model's --dense rows without a precision, and encoder options Ray's driver can refuse before any actor starts."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line

pytest.importorskip("sentence_transformers")
from tinymodels import bert_folder  # noqa: E402
from tinymodels import edit_json as edit  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402

TEXTS = ["a cat sat on the mat", "Hello World, A LONGER sentence with MANY words.", "x"]


@pytest.fixture(scope="module")
def limited_splade(tmp_path_factory) -> Path:
    """A SparseEncoder folder (MLMTransformer → SpladePooling max, no Normalize) saving max_active_dims=5."""
    folder = bert_folder(tmp_path_factory.mktemp("m53") / "splade", mlm=True)
    edit(folder / "config_sentence_transformers.json", max_active_dims=5)
    return folder


def _normalising_reference(folder: Path, tmp: Path) -> np.ndarray:
    """sentence-transformers' rows of ``folder``'s weights with a Normalize module and max_active_dims=5 (it
    normalises each row, then keeps its 5 largest values)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Normalize
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    weights = Path(shutil.copytree(folder, tmp / "normalising"))
    modules = [MLMTransformer(str(weights), max_seq_length=48), SpladePooling(pooling_strategy="max"), Normalize()]
    model = SparseEncoder(modules=modules, device="cpu", max_active_dims=5)
    return model.encode(TEXTS, convert_to_tensor=True).to_dense().numpy()


def test_a_calls_normalize_keeps_max_active_dims_after_normalising(limited_splade, tmp_path):
    """``encode(texts, normalize=True)`` kept the 5 largest values, then normalised (norm 1), while
    ``Encoder(folder, normalize=True)`` and sentence-transformers normalise, then keep (norm below 1)."""
    theirs = _normalising_reference(limited_splade, tmp_path)
    assert (np.count_nonzero(theirs, axis=1) == 5).all() and (np.linalg.norm(theirs, axis=1) < 0.99).all()
    own = Encoder(limited_splade, device="cpu", normalize=True).encode(TEXTS)
    np.testing.assert_allclose(own, theirs, rtol=1e-5, atol=1e-7)
    per_call = Encoder(limited_splade, device="cpu").encode(TEXTS, normalize=True)
    np.testing.assert_allclose(per_call, theirs, rtol=1e-5, atol=1e-7)


def test_a_calls_normalize_on_sparse_chunks_keeps_max_active_dims_after_normalising(limited_splade):
    """Chunk vectors take the same finishing order as the encoder's own normalize."""
    text = ["a cat sat on the mat " * 5]
    own = Encoder(limited_splade, device="cpu", normalize=True).encode_chunks(text, chunks="tokens:8")
    per_call = Encoder(limited_splade, device="cpu").encode_chunks(text, chunks="tokens:8", normalize=True)
    assert (np.count_nonzero(per_call.vectors, axis=1) == 5).all()
    np.testing.assert_allclose(per_call.vectors, own.vectors, rtol=1e-5, atol=1e-7)


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["embed", "serve"])
def test_dim_past_the_width_names_the_flag(run, corpus, tmp_path, command):
    """``--dim 385`` on the bundled model (width 384) said ``truncate_dim must be an int in 1..384``: the Python
    option, not the flag the user typed."""
    argv = ["embed", corpus, "-o", tmp_path / "out.npy"] if command == "embed" else ["serve", "--port", "0"]
    code, _, err = run(*argv, "--dim", "385")
    assert_one_error_line(code, err, f"tokenpool {command}: error:", "--dim must be an int in 1..384", "got 385")
    assert "truncate_dim" not in err


def test_dim_past_the_width_keeps_the_python_name():
    with pytest.raises(ValueError, match=r"^truncate_dim must be an int in 1\.\.384 \(the pooled dimension\), got 385"):
        Encoder(truncate_dim=385, device="cpu")


def test_embed_prompt_name_names_the_flag(run, corpus, tmp_path):
    """``tokenpool embed --prompt-name nope`` said ``prompt_name 'nope' ...`` (serve said ``--prompt-name``)."""
    code, _, err = run("embed", corpus, "-o", tmp_path / "out.npy", "--prompt-name", "nope")
    assert_one_error_line(code, err, "tokenpool embed: error:", "--prompt-name 'nope' is not one of the model's "
                                                                "prompts (none")  # fmt: skip
    with pytest.raises(OptionError, match=r"^prompt_name 'nope' is not one of the model's prompts \(none"):
        Encoder(device="cpu").encode(TEXTS, prompt_name="nope")


@pytest.mark.parametrize("spec", ["tokens:0", "boundaries:4:4", " Tokens:0:0 "])
def test_a_bad_chunk_spec_is_quoted_as_written(run, corpus, tmp_path, spec):
    """``--chunks tokens:0`` said ``got 0 in tokens:0:0``, a spec the user never typed."""
    code, _, err = run("embed", corpus, "-o", tmp_path / "out.jsonl", "--chunks", spec)
    assert_one_error_line(code, err, "tokenpool embed: error:", f"--chunks {shlex.quote(spec)}")


def test_dense_rows_of_a_sparse_model_take_no_precision(run, corpus, tmp_path, limited_splade):
    """``embed --dense --precision ubinary`` on a SPLADE model wrote uint8 codes (exit 0); docs/precision.md says
    --dense writes N × V float32 rows, and Encoder.encode refuses a precision on a sparse model."""
    out = tmp_path / "out.npy"
    code, _, err = run("embed", corpus, "-o", out, "--model", limited_splade, "--dense", "--precision", "ubinary")
    assert_one_error_line(code, err, "tokenpool embed: error:", "--precision ubinary is not supported with --dense")
    assert not out.exists()
    with pytest.raises(OptionError, match="precision='ubinary' is for dense models"):
        Encoder(limited_splade, device="cpu").encode(TEXTS, precision="ubinary")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [({"dtype": "float8"}, "dtype must be None, 'auto', 'float32'"), ({"device": "tpu"}, "unknown device 'tpu'")],
)
def test_encoder_options_check_dtype_and_device_without_a_model(option, fragment):
    """`EncoderOptions.check` (what the CLI, Ray's driver and the Encoder run before reading a folder) let a
    dtype or device through that every Encoder refuses."""
    from tokenpool.model.options import EncoderOptions

    with pytest.raises(ValueError, match=fragment):
        EncoderOptions(model="/nonexistent-folder", **option).check()
    with pytest.raises(ValueError, match=fragment):
        Encoder("/nonexistent-folder", **option)


@pytest.mark.parametrize(("option", "fragment"), [({"dtype": "float8"}, "dtype must be"),
                                                  ({"device": "tpu"}, "unknown device 'tpu'")])  # fmt: skip
def test_ray_refuses_bad_dtype_and_device_on_the_driver(tmp_path, monkeypatch, option, fragment):
    """embed_parquet passed dtype='float8' / device='tpu' to its actors, which failed ~2 s later; the driver's
    check refuses them before Ray reads anything (no reader, no session is started here: another test file may
    have started a session already, so the readers are what is watched)."""
    pytest.importorskip("ray")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    import ray

    from tokenpool.integrations.ray import embed_parquet

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": TEXTS}), source)
    started = ray.is_initialized()
    read: list[str] = []
    for name in ("read_parquet", "read_json", "read_binary_files"):
        monkeypatch.setattr(ray.data, name, lambda *a, _name=name, **k: read.append(_name))
    with pytest.raises(ValueError, match=fragment):
        embed_parquet(str(source), str(tmp_path / "out"), **option)
    assert read == [] and ray.is_initialized() == started
    assert not (tmp_path / "out").exists()


def test_dtype_names_stay_accepted_without_a_model(tiny_bert_folder):
    """The names the runners take (aliases, a torch dtype) pass the model-free check."""
    import torch

    from tokenpool.model.options import EncoderOptions

    for dtype in ("auto", "fp16", "BF16", "torch.float64", "half", torch.float16):
        EncoderOptions(dtype=dtype, device="cpu").check()
    assert Encoder(tiny_bert_folder, dtype="fp32", device="cpu").dtype == torch.float32




def test_a_chunk_size_past_the_window_is_quoted_as_written(run, corpus, tmp_path):
    """``--chunks tokens:300`` on the bundled model (254 text tokens a window) said ``in tokens:300:0``."""
    code, _, err = run("embed", corpus, "-o", tmp_path / "out.jsonl", "--chunks", "tokens:300")
    assert_one_error_line(code, err, "tokenpool embed: error:", "chunk size 300 exceeds the 254 text tokens",
                          "in --chunks tokens:300")  # fmt: skip
    assert "tokens:300:0" not in err
