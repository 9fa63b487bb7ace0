"""Stop 67 review of s67-folders (reviewer g): tokenizer.json's size cap, quiet_transformers' restore of the
caller's transformers level, and the onnx runtime's word for a folder with no tokenizer files."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tokenpool.errors import ConfigError, ModelFolderError

# ------------------------------------------------------------------------------ tokenizer.json's size cap


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_real_tokenizer_json_over_64_mib_loads_as_the_tokenizers_library_loads_it(tiny, tiny_onnx, tmp_path, runtime):
    """A million-piece vocabulary (XLM-V's 901,629 Unigram pieces, as tokenizers saves them: one indented line
    per piece and score) makes a tokenizer.json of some 60 MiB: the 64 MiB JSON cap refused a tokenizer.json just
    over it though the tokenizers library (the reference) reads it. Here: tiny's tokenizer.json padded with JSON
    whitespace to 64 MiB + 1 bytes gives the vectors of the unpadded folder."""
    from tokenizers import Tokenizer

    from tokenpool import Encoder

    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    padded = Path(shutil.copytree(tiny, tmp_path / "model"))
    with open(padded / "tokenizer.json", "ab") as fh:
        fh.write(b" " * ((64 << 20) + 1 - fh.tell()))
    assert (padded / "tokenizer.json").stat().st_size == (64 << 20) + 1
    assert Tokenizer.from_file(str(padded / "tokenizer.json")).get_vocab_size() > 0  # (the reference reads it)
    options = {"runtime": runtime, "onnx_file": tiny_onnx} if runtime == "onnx" else {}
    texts = ["a text", "another, longer text"]
    got = Encoder(padded, device="cpu", **options).encode(texts)
    np.testing.assert_allclose(got, Encoder(tiny, device="cpu", **options).encode(texts), rtol=0, atol=0)


def test_another_json_file_over_64_mib_is_still_refused_by_its_size(tiny, tmp_path):
    """The 64 MiB cap (docs/security.md) still holds for the folder's other JSON files (added_tokens.json here, a
    sparse file: no disk), refused by size before transformers reads it whole."""
    from tokenpool import Encoder

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    file = folder / "added_tokens.json"
    with open(file, "wb") as fh:
        fh.truncate((64 << 20) + 1)
    with pytest.raises(ConfigError) as refused:
        Encoder(folder, device="cpu")
    message = str(refused.value)
    assert str(file) in message and f"{(64 << 20) + 1:,} bytes" in message and f"{64 << 20:,}" in message, message


# ------------------------------------------------------------------------------ quiet_transformers


def test_overlapping_quiet_blocks_in_two_threads_give_back_the_callers_transformers_level():
    """Two loads at once (threads): A quiets (saves INFO), B quiets (saves ERROR: A's quiet), A ends (INFO), B ends
    and restored ERROR: the user's transformers verbosity was lost for the rest of the process. A NOTSET level
    (following the root logger) came back as the level it resolved to."""
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from tokenpool.model.runners import quiet_transformers

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with quiet_transformers():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with quiet_transformers():
            b_in.set()
            a_out.wait(10)

    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert hf_logging.get_verbosity() == logging.INFO
        library = logging.getLogger("transformers")
        library.setLevel(logging.NOTSET)  # (follows the root logger's level)
        with quiet_transformers():
            pass
        assert library.level == logging.NOTSET
    finally:
        hf_logging.set_verbosity(before)


@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING, logging.CRITICAL])
@pytest.mark.parametrize("bars", [True, False])
def test_one_quiet_block_gives_back_the_level_and_bars_transformers_api_reports(level, bars):
    """In one thread: inside, transformers' verbosity is ERROR and its bars are off; after, its own API
    (`get_verbosity`, `is_progress_bar_enabled`) reports what the caller set, an exception inside too."""
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    from tokenpool.model.runners import quiet_transformers

    before, bars_before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    try:
        hf_logging.set_verbosity(level)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        with pytest.raises(RuntimeError), quiet_transformers():
            assert hf_logging.get_verbosity() == logging.ERROR and not hf_logging.is_progress_bar_enabled()
            raise RuntimeError("a load failed")
        assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == (level, bars)
    finally:
        hf_logging.set_verbosity(before)
        (hf_logging.enable_progress_bar if bars_before else hf_logging.disable_progress_bar)()


# ------------------------------------------------------------------------------ no tokenizer files on onnx


def test_the_onnx_runtime_names_missing_tokenizer_files_as_the_torch_runtime_does(tiny, tiny_onnx, tmp_path):
    """A folder with its config and weights but no tokenizer file at all: the onnx runtime said it "has only slow
    tokenizer files — use runtime='torch'", which torch then refused as missing them (`check_files`, the
    reference). Both now name the missing tokenizer files."""
    pytest.importorskip("onnxruntime")
    from tokenpool import Encoder

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelFolderError) as by_torch:
        Encoder(folder, device="cpu")
    with pytest.raises(ModelFolderError) as by_onnx:
        Encoder(folder, runtime="onnx", onnx_file=tiny_onnx)
    said = f"model folder {str(folder)!r} is missing tokenizer files (one of tokenizer.json, vocab.txt"
    assert said in str(by_torch.value) and said in str(by_onnx.value), (by_torch.value, by_onnx.value)
    assert "slow" not in str(by_onnx.value)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n", encoding="utf-8")  # a slow tokenizer's file
    with pytest.raises(ModelFolderError, match="only slow tokenizer files — use runtime='torch'"):
        Encoder(folder, runtime="onnx", onnx_file=tiny_onnx)
