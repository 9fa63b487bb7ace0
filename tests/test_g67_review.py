"""Stop 67 review of s67-folders (reviewer g): tokenizer.json's size cap, quiet_transformers' restore of the
caller's transformers level, and the onnx runtime's word for a folder with no tokenizer files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tokenpool.errors import ConfigError

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
