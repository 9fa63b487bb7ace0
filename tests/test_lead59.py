"""The lead's own fixes of stop 59 (each failed on the code before it)."""

import pytest

from tokenpool.errors import OptionError
from tokenpool.model.request import EncodeRequest


@pytest.mark.parametrize("chunks", ["tokens:16", "boundaries:64", "spans"])
def test_windows_with_naive_chunks_speaks_of_spans_only_for_spans(chunks):
    """The refusal of long_documents='windows' with naive chunks said a span over max_length is cut even for token
    and boundary chunks, which are never cut (an over-long one is refused)."""
    with pytest.raises(OptionError, match="would be ignored") as caught:
        EncodeRequest(output="chunks", chunks=chunks, chunking="naive", long_documents="windows").check()
    assert ("span longer than max_length" in str(caught.value)) == (chunks == "spans")
