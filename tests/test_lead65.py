"""Stop 65, lead: what the reviews of the stop's merged branches left to one owner."""

from __future__ import annotations

import pytest

from tokenpool.errors import CorpusError
from tokenpool.io.formats import output_format


@pytest.mark.parametrize("name", ["-", "out", "a\nb.txt"])
def test_an_unsupported_output_is_named_as_given_not_as_stdin(name):
    """``embed -o -`` said "<stdin>: unsupported output type" (the input's name for "-"); the output is named
    as the user wrote it, quoted when it holds a character that does not print."""
    with pytest.raises(CorpusError) as caught:
        output_format(name)
    shown = repr(name) if not name.isprintable() else name
    assert str(caught.value).startswith(f"{shown}: unsupported output type; name the output ")
    assert "<stdin>" not in str(caught.value)
