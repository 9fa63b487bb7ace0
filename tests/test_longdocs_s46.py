"""Long documents, stop 46: each test fails on the code before its fix.

References are independent of `tokenpool.model.windows`: truncate mode's rows (`Tokenization.encode`, one
forward pass of the text) and a plain float64 loop over token states.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_encoder import EOS  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402

ENDS_WITH_EOS = [EOS, "hello " + EOS, "a b" + EOS, EOS + EOS]


@pytest.mark.parametrize("text", ENDS_WITH_EOS)
def test_a_text_ending_with_eos_gets_no_second_eos_in_windows_or_token_output(eos_decoder, text):
    """Truncate mode appends no EOS to a row that ends with one (tested in test_encoder); windows gave such a
    one-window text a second EOS (another vector than truncate mode's), and output="tokens" / token_spans one
    token more than the row `encode` pools."""
    row = eos_decoder.tokenization.encode([text])[0][0]
    windows = eos_decoder.encode([text, "x y"], long_documents="windows", batch_size=2)
    np.testing.assert_array_equal(windows, eos_decoder.encode([text, "x y"], batch_size=2))
    for mode in ("truncate", "windows"):
        ids, spans = eos_decoder.token_spans(text, long_documents=mode)
        assert ids.tolist() == row and len(spans) == len(row)
        tokens = eos_decoder.encode(text, output="tokens", long_documents=mode)
        assert tokens.shape[0] == len(row)
        np.testing.assert_allclose(tokens[-1], eos_decoder.encode(text, normalize=False), rtol=1e-5, atol=1e-6)


def test_a_long_text_ending_with_eos_ends_with_it_once_through_windows(eos_decoder):
    """A document of several windows that ends with EOS: its last window's row is not given a second one, so
    its last token (what last-token pooling reads) is its own EOS, from the last window."""
    text = " ".join(["the quick fox jumps over the lazy dog"] * 6) + EOS
    ids, spans = eos_decoder.token_spans(text, long_documents="windows")
    body = eos_decoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(body) > 16 and ids.tolist() == body and spans[-1].tolist() == [len(text) - len(EOS), len(text)]
    tokens = eos_decoder.encode([text, "x"], output="tokens", long_documents="windows", batch_size=2)[0]
    assert tokens.shape[0] == len(body)
    # the last window, run alone as truncate mode runs a text (its row ends with the text's EOS)
    capacity = eos_decoder.max_length - 1
    window = np.array([body[len(body) - capacity :]], dtype=np.int64)
    hidden, _ = eos_decoder.runner.forward(window, np.ones_like(window))
    want = hidden[0, -1].double().numpy()
    np.testing.assert_allclose(tokens[-1], want, rtol=1e-5, atol=1e-6)
    vector = eos_decoder.encode(text, long_documents="windows", normalize=False)
    np.testing.assert_allclose(vector, want, rtol=1e-5, atol=1e-6)


PROMPT = "a b c d e f g h i j k l "  # 12 tokens: a window of max_length 16 keeps 2 text tokens


def test_a_window_stride_too_large_for_a_prompt_refuses_only_the_calls_that_read_windows(tiny_bert_folder):
    """An Encoder holds a window_stride for its calls that read windows; truncate mode's token output and token
    spans and naive chunks read none (one window, or each chunk's text alone), but refused the stride when a
    prompt left the window smaller than it (encode's vectors, with the same prompt, did not)."""
    encoder = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, window_stride=10, device="cpu")
    plain = Encoder(tiny_bert_folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    text = "the quick brown fox jumps over the lazy dog"
    row = encoder.tokenization.encode([text], PROMPT)[0][0]
    tokens = encoder.encode(text, prompt=PROMPT, output="tokens")
    assert tokens.shape[0] == len(row) == 16
    np.testing.assert_allclose(tokens.astype(np.float64).mean(0), encoder.encode(text, prompt=PROMPT), atol=1e-6)
    ids, _ = encoder.token_spans(text, prompt=PROMPT)
    assert ids.tolist() == row
    naive = encoder.encode_chunks(text, chunks="tokens:2", chunking="naive", prompt=PROMPT)
    want = plain.encode_chunks(text, chunks="tokens:2", chunking="naive", prompt=PROMPT)
    assert np.array_equal(naive.start, want.start) and np.array_equal(naive.vectors, want.vectors)
    # the calls that read windows still refuse it, naming it
    for call in (
        lambda: encoder.encode(text, prompt=PROMPT, long_documents="windows"),
        lambda: encoder.encode_chunks(text, chunks="tokens:2", prompt=PROMPT),
    ):
        with pytest.raises(OptionError, match="window_stride 10 must be smaller"):
            call()
