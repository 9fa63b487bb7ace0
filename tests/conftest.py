"""Shared test helpers: array backends, a float64 loop reference, hypothesis settings."""

from __future__ import annotations

import os
import warnings

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep torch to the 2 cores the machines have (tests run beside other work)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


@pytest.fixture(autouse=True)
def _ray_actors_ended(request):
    """After a test on the shared Ray, one garbage collection: it ends the actors of a Ray Data job that failed
    in the test (Ray Data lets go of them in reference cycles), so the next test's job need not wait for their
    CPUs (`embed_parquet` does this itself; a failed `embed_dataset` leaves it to its caller)."""
    yield
    if "ray_session" in request.fixturenames:
        import gc

        gc.collect()


@pytest.fixture()
def quiet_dynamo():
    """torch.compile's warnings silenced for a test, and Dynamo's caches reset after it (tests compile apart)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def encoders() -> dict:
    """Encoders built by CLI tests, shared across test modules (loading a model dominates their time)."""
    return {}


@pytest.fixture
def run(monkeypatch, capsys, encoders):
    """Call ``tokenpool ...`` in-process → (exit status, stdout, stderr); real Encoders, cached per option set."""
    from tokenpool import cli
    from tokenpool.cli import common

    original = common.build_encoder

    def cached(options):
        if options not in encoders:
            encoders[options] = original(options)
        return encoders[options]

    monkeypatch.setattr(common, "build_encoder", cached)

    def call(*argv: object) -> tuple[int, str, str]:
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory):
    """A random 2-layer BERT with all-MiniLM-L6-v2's WordPiece tokenizer (`test_encoder._bert_weights`), built
    once for the long-document, chunk and token-budget tests (none of them writes into it)."""
    from test_encoder import _bert_weights

    folder = tmp_path_factory.mktemp("tiny-bert")
    _bert_weights(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random BERT sentence-transformers folder (`tinymodels.bert_folder`: 2 layers, 4 heads, width 32),
    shared by the ONNX export tests: none writes into it (a test that must, copies it to its own tmp_path)."""
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("tiny-st") / "bert")


@pytest.fixture
def tiny_copy(tiny, tmp_path):
    """A copy of `tiny` in the test's own tmp_path (``model``): for a test that writes into the folder."""
    import shutil
    from pathlib import Path

    return Path(shutil.copytree(tiny, tmp_path / "model"))


@pytest.fixture(scope="session")
def tiny_onnx(tiny, tmp_path_factory):
    """`tiny`'s fp32 ONNX export (`tokenpool.model.onnx.export_onnx`), shared likewise (read only)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from tokenpool.model.onnx import export_onnx

    return export_onnx(tiny, tmp_path_factory.mktemp("tiny-st-fp32") / "model.onnx")


@pytest.fixture(scope="module")
def eos_decoder(tmp_path_factory):
    """A left-padded byte-level BPE decoder with last-token pooling whose tokenizer appends no EOS: the encoder
    appends it (``add_eos``), except to a row that already ends with EOS."""
    pytest.importorskip("transformers")
    from test_encoder import _qwen2_weights, _save_sentence_transformer

    from tokenpool import Encoder

    folder = tmp_path_factory.mktemp("tiny-qwen-eos")
    _qwen2_weights(folder, padding_side="left")
    _save_sentence_transformer(folder, "lasttoken")
    encoder = Encoder(folder, max_length=16, device="cpu")
    assert encoder.add_eos and encoder.tokenization.specials() == ([], [])
    return encoder


@pytest.fixture(scope="session")
def bpe(tmp_path_factory):
    """A byte-level BPE model (its tokens split multi-byte characters: each combining accent is tokens of its own),
    max_length 16: the long-document tests' model for characters cut at chunk edges."""
    pytest.importorskip("transformers")
    from test_encoder import _qwen2_weights

    from tokenpool import Encoder

    folder = tmp_path_factory.mktemp("bpe")
    _qwen2_weights(folder, padding_side="right")
    return Encoder(folder, pooling="mean", max_length=16, normalize=False, device="cpu")


@pytest.fixture(scope="session")
def small(tiny_bert_folder):
    """Long documents and chunks: mean pooling, max_length 16 (14 text tokens per window), not normalised."""
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")


@pytest.fixture(scope="session")
def full(tiny_bert_folder):
    """As `small` with max_length 128 (the tiny model's positions, 126 text tokens): the test documents fit one
    forward pass."""
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, pooling="mean", max_length=128, normalize=False, device="cpu")


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray for every Ray test module of a pytest process or xdist worker (starting Ray costs
    seconds); shut down at the end."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "print_on_execution_start"):  # newer Ray only
        context.print_on_execution_start = False
    yield ray
    if started:
        ray.shutdown()

