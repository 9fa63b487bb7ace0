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
