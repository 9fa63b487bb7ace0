"""The seams of issue 9: one error rule, options declared once, format registries, the Runner protocol."""

from __future__ import annotations

import argparse
import threading

import numpy as np
import pytest

from tokenpool import errors
from tokenpool.cli.common import add_encoder_options
from tokenpool.io import formats
from tokenpool.model.options import EncoderOptions


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (errors.CorpusError("x"), "bad_input"),
        (errors.ModelFolderError("x"), "bad_input"),
        (ValueError("x"), "bad_input"),
        (TypeError("x"), "bad_input"),
        (FileNotFoundError("x"), "bad_input"),
        (PermissionError("x"), "bad_input"),
        (ModuleNotFoundError("x", name="torch"), "bad_input"),
        (RuntimeError("CUDA out of memory"), "failed"),
        (NotImplementedError("x"), "failed"),
        (MemoryError(), "failed"),
        (KeyError("x"), "failed"),
    ],
)
def test_one_rule_sorts_exceptions(exc, outcome):
    assert errors.classify(exc) == outcome


def test_error_types_users_catch_keep_working():
    assert issubclass(errors.TokenpoolError, ValueError)
    assert issubclass(errors.CorpusError, errors.TokenpoolError)
    assert issubclass(errors.ModelFolderError, FileNotFoundError)
    from tokenpool.io.corpus import CorpusError

    assert CorpusError is errors.CorpusError
    assert errors.one_line(ValueError("a\n  b\tc")) == "a b\tc"
    assert errors.install_hint(ModuleNotFoundError("no torch", name="torch")) == "pip install 'tokenpool[encode]'"
    assert errors.install_hint(ModuleNotFoundError("no x", name="something_else")) is None


def test_every_flagged_option_reaches_the_command_line_with_its_help():
    parser = argparse.ArgumentParser()
    flagged = [name for name in EncoderOptions.names() if EncoderOptions.info(name).flag]
    add_encoder_options(parser, flagged)
    help_text = " ".join(parser.format_help().split())
    for name in flagged:
        info = EncoderOptions.info(name)
        assert info.flag in help_text
        assert " ".join(info.help.split())[:40] in help_text
    args = parser.parse_args(["--dim", "64", "--no-normalize", "--pooling", "cls", "--dtype", "float16"])
    options = EncoderOptions.from_mapping(args)
    assert options.given() == {"truncate_dim": 64, "normalize": False, "pooling": "cls", "dtype": "float16"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--dim", "0"])


def test_llama_index_fields_are_the_encoder_options():
    pytest.importorskip("llama_index.core")
    from tokenpool.integrations.llama_index import TokenPoolEmbedding

    flagged = {name for name in EncoderOptions.names() if EncoderOptions.info(name).flag}
    assert flagged <= set(EncoderOptions.names()) <= set(TokenPoolEmbedding.model_fields)
    for name in EncoderOptions.names():
        assert TokenPoolEmbedding.model_fields[name].description == EncoderOptions.info(name).help


def test_unknown_encoder_option_is_a_type_error():
    with pytest.raises(TypeError, match="no_such_option"):
        EncoderOptions(no_such_option=1)


def test_format_registries_drive_detection_and_help():
    assert formats.input_choices() == tuple(formats.READERS)
    for name, reader in formats.READERS.items():
        for suffix in reader.suffixes:
            assert formats.input_format(f"corpus{suffix}") == name
            assert suffix in formats.input_help() or suffix not in reader.suffixes[:1]
    for name, writer in formats.WRITERS.items():
        assert formats.output_format(f"out{writer.suffixes[0]}") == name
    with pytest.raises(errors.CorpusError, match="pass --format"):
        formats.input_format("corpus.unknown")


def test_the_embed_job_is_checked_before_any_model_loads(tmp_path, monkeypatch):
    from tokenpool.cli import common, main

    def no_model(options):
        raise AssertionError("the model was loaded before the job was checked")

    monkeypatch.setattr(common, "build_encoder", no_model)
    source = tmp_path / "in.txt"
    source.write_text("a\n", encoding="utf-8")
    assert main(["embed", str(source), "-o", str(tmp_path / "out.xyz")]) == 2
    assert main(["embed", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "out.npy")]) == 2
    assert main(["embed", str(source), "-o", str(source)]) == 2


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("torch")
    from tokenpool import Encoder

    return Encoder(max_length=32)


def test_torch_runner_satisfies_the_runner_protocol(encoder):
    from tokenpool.model.runners import Runner

    assert isinstance(encoder.runner, Runner)
    ids, mask = encoder.tokenization.collate([[101, 7592, 102], [101, 102]], np.array([3, 2]))
    hidden, out_mask = encoder.runner.forward(ids, mask)
    assert tuple(hidden.shape) == (2, 3, 384) and tuple(out_mask.shape) == (2, 3)
    pooled = encoder.runner.to_float32_numpy(hidden[:, 0])
    assert isinstance(pooled, np.ndarray) and pooled.dtype == np.float32


def test_encoder_is_thread_safe(encoder):
    """Threads sharing one Encoder (its tokenizer is guarded) get the vectors a single thread gets."""
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(24)]
    expected = encoder.encode(texts, batch_size=4)
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = encoder.encode(texts[k::3], batch_size=2)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, vectors in results.items():
        np.testing.assert_allclose(vectors, expected[k::3], atol=1e-5)


def test_the_runtime_registry_is_what_the_options_name():
    from tokenpool.model.options import RUNTIME_NAMES, EncoderOptions
    from tokenpool.model.runtimes import RUNTIMES

    assert tuple(RUNTIMES) == RUNTIME_NAMES == EncoderOptions.info("runtime").choices


def test_a_new_runtime_is_one_registry_entry(encoder, monkeypatch, tmp_path):
    """A runtime registered under a new name (here the torch entry's reader and runner again, without SPLADE)
    builds an Encoder with no other change, and its capabilities are enforced by name."""
    from tinymodels import bert_folder

    from tokenpool import Encoder
    from tokenpool.errors import OptionError
    from tokenpool.model import options, runtimes
    from tokenpool.model.runners import TORCH_RUNTIME, Runtime

    mirror = Runtime("mirror", TORCH_RUNTIME.open, TORCH_RUNTIME.runner, no_sparse="it gives hidden states only")
    monkeypatch.setitem(runtimes.RUNTIMES, "mirror", mirror)
    monkeypatch.setattr(options, "RUNTIME_NAMES", (*options.RUNTIME_NAMES, "mirror"))
    mirrored = Encoder(max_length=32, runtime="mirror")
    assert mirrored.runtime == "mirror"
    texts = ["a cat", "the dogs run in the park"]
    np.testing.assert_array_equal(mirrored.encode(texts), encoder.encode(texts))
    with pytest.raises(OptionError, match="splade pooling is not supported by the mirror runtime \\(it gives"):
        Encoder(bert_folder(tmp_path / "splade", mlm=True), runtime="mirror")
