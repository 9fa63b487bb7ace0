"""Stop 65 review (longdocs): the chunk-spec cut of `plan_chunks` (`request.spell` short=True) on the neighbouring
message, a float32-only option refused with chunk output, which named a Python caller's spec whole."""

from __future__ import annotations

import pytest

from tokenpool.errors import OptionError
from tokenpool.model.request import EncodeRequest

LONG = "tokens:8" + " " * 5000  # well formed (spaces are stripped)


@pytest.mark.parametrize("option, said", [({"precision": "int8"}, "precision='int8'"), ({"top_k": 3}, "top_k=3")])
def test_a_float32_only_option_with_chunks_names_a_long_spec_cut(option, said):
    with pytest.raises(OptionError) as caught:
        EncodeRequest(output="chunks", chunks=LONG, **option).check()
    message = str(caught.value)
    assert LONG not in message and len(message) < 600, len(message)
    cut = "'tokens:8" + " " * 52 + "…'"  # its first 60 characters, the cut marked
    assert message == f"{said} is not supported with chunks={cut} (its rows are float32 vectors)", message


@pytest.mark.parametrize("caller, said", [("python", "chunks='tokens:8'"), ("cli", "--chunks")])
def test_a_short_spec_is_named_as_before(caller, said):
    with pytest.raises(OptionError, match=rf"^top_k=3 is not supported with {said} \(|^--top-k 3 .* {said} \("):
        EncodeRequest(output="chunks", chunks="tokens:8", top_k=3, caller=caller).check()
