"""Review of stop 58 (names, folders): a folder whose tokenizer is a SentencePiece file alone, without the
sentencepiece library, is told so."""

from __future__ import annotations

import sys

import pytest
from test_folders58 import deberta  # noqa: F401 - the fixture

pytest.importorskip("transformers")


def test_spm_model_without_sentencepiece_names_the_library(deberta, run, monkeypatch):  # noqa: F811
    """A folder whose tokenizer is spm.model alone, with no sentencepiece installed, passed the file check and
    then failed as "Error parsing line b'\\x0e' in .../spm.model" (transformers' fallback parser): the missing
    library is named, in Python and as the CLI's one line (exit 2)."""
    from tokenpool import Encoder

    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # (not installed)
    with pytest.raises(ModuleNotFoundError, match=r"tokenizer \(spm.model\) needs sentencepiece: pip install "):
        Encoder(deberta, pooling="mean")
    source = deberta.parent / "in.txt"
    source.write_text("hello world\n", encoding="utf-8")
    code, _, err = run("embed", source, "-o", deberta.parent / "o.npy", "--model", deberta, "--pooling", "mean")
    assert code == 2 and err.count("\n") == 1 and "needs sentencepiece: pip install sentencepiece" in err, err
