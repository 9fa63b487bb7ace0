"""Long documents, stop 46: each test fails on the code before its fix.

References are independent of `tokenpool.model.windows`: truncate mode's rows (`Tokenization.encode`, one
forward pass of the text) and a plain float64 loop over token states.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_encoder import EOS, _qwen2_weights, _save_sentence_transformer  # noqa: E402

from tokenpool import Encoder  # noqa: E402


@pytest.fixture(scope="module")
def last_token(tmp_path_factory):
    """A left-padded byte-level BPE decoder with last-token pooling whose tokenizer appends no EOS: the encoder
    appends it (``add_eos``), except to a row that already ends with EOS."""
    folder = tmp_path_factory.mktemp("tiny-qwen-eos")
    _qwen2_weights(folder, padding_side="left")
    _save_sentence_transformer(folder, "lasttoken")
    encoder = Encoder(folder, max_length=16, device="cpu")
    assert encoder.add_eos and encoder.tokenization.specials() == ([], [])
    return encoder


ENDS_WITH_EOS = [EOS, "hello " + EOS, "a b" + EOS, EOS + EOS]


@pytest.mark.parametrize("text", ENDS_WITH_EOS)
def test_a_text_ending_with_eos_gets_no_second_eos_in_windows_or_token_output(last_token, text):
    """Truncate mode appends no EOS to a row that ends with one (tested in test_encoder); windows gave such a
    one-window text a second EOS (another vector than truncate mode's), and output="tokens" / token_spans one
    token more than the row `encode` pools."""
    row = last_token.tokenization.encode([text])[0][0]
    windows = last_token.encode([text, "x y"], long_documents="windows", batch_size=2)
    np.testing.assert_array_equal(windows, last_token.encode([text, "x y"], batch_size=2))
    for mode in ("truncate", "windows"):
        ids, spans = last_token.token_spans(text, long_documents=mode)
        assert ids.tolist() == row and len(spans) == len(row)
        tokens = last_token.encode(text, output="tokens", long_documents=mode)
        assert tokens.shape[0] == len(row)
        np.testing.assert_allclose(tokens[-1], last_token.encode(text, normalize=False), rtol=1e-5, atol=1e-6)


def test_a_long_text_ending_with_eos_ends_with_it_once_through_windows(last_token):
    """A document of several windows that ends with EOS: its last window's row is not given a second one, so
    its last token (what last-token pooling reads) is its own EOS, from the last window."""
    text = " ".join(["the quick fox jumps over the lazy dog"] * 6) + EOS
    ids, spans = last_token.token_spans(text, long_documents="windows")
    body = last_token.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(body) > 16 and ids.tolist() == body and spans[-1].tolist() == [len(text) - len(EOS), len(text)]
    tokens = last_token.encode([text, "x"], output="tokens", long_documents="windows", batch_size=2)[0]
    assert tokens.shape[0] == len(body)
    # the last window, run alone as truncate mode runs a text (its row ends with the text's EOS)
    capacity = last_token.max_length - 1
    window = np.array([body[len(body) - capacity :]], dtype=np.int64)
    hidden, _ = last_token.runner.forward(window, np.ones_like(window))
    want = hidden[0, -1].double().numpy()
    np.testing.assert_allclose(tokens[-1], want, rtol=1e-5, atol=1e-6)
    vector = last_token.encode(text, long_documents="windows", normalize=False)
    np.testing.assert_allclose(vector, want, rtol=1e-5, atol=1e-6)
