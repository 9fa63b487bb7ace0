"""Stop 65, lead: what the reviews of the stop's merged branches left to one owner."""

from __future__ import annotations

import numpy as np
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


def test_calibration_files_are_named_quoted_when_their_name_holds_a_line_break(tmp_path):
    """`Calibration.save`/`load` named their file raw: a line break in the name split the message in two, and read
    as a typed backslash-n once put on one line; they name it as every other path message does (`shown_name`)."""
    from tokenpool.core.quantize import Calibration

    calibration = Calibration.from_vectors(np.array([[0.0, 1.0], [2.0, -1.0]], dtype=np.float32))
    odd = tmp_path / "a\nb.json"
    for call, error in [
        (lambda: Calibration.load(odd), FileNotFoundError),
        (lambda: calibration.save(tmp_path / "no\nfolder" / "c.json"), FileNotFoundError),
    ]:
        with pytest.raises(error) as caught:
            call()
        assert "\n" not in str(caught.value) and repr(str(odd.parent))[1:-1] in str(caught.value)
    odd.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON") as caught:
        Calibration.load(odd)
    assert str(caught.value).startswith(repr(str(odd)) + ": ")
    odd.unlink()
    odd.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        calibration.save(odd)
    assert str(caught.value) == f"{str(odd)!r}: is a directory, not a calibration file"
