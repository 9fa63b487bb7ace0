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
