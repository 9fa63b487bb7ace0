"""Stop 65 (longdocs): a chunk size over a document's window names the caller's chunks spec cut at 60
characters (`errors.shown_value` short=True), as the other chunk-spec messages show it."""

from __future__ import annotations

import pytest
from tinymodels import bert_folder

from tokenpool import Encoder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Encoder:
    return Encoder(bert_folder(tmp_path_factory.mktemp("longdocs65")), max_length=24, device="cpu")


@pytest.mark.parametrize("kind", ["tokens", "boundaries"])
def test_a_chunk_size_over_the_window_names_a_long_spec_cut(encoder, kind):
    spec = f"{kind}:300" + " " * 5000  # well formed (spaces are stripped), over the 22-token window
    with pytest.raises(ValueError) as caught:
        encoder.encode_chunks(["one two three four"], chunks=spec)
    message = str(caught.value)
    assert "exceeds the" in message and spec not in message and len(message) < 600, len(message)
    assert message.endswith(f" in chunks={spec[:60] + '…'!r}"), message[-120:]


def test_a_short_spec_is_named_whole(encoder):
    with pytest.raises(ValueError, match=r"in chunks='tokens:300'$"):
        encoder.encode_chunks(["one two three four"], chunks="tokens:300")
