"""Stop 64 (f-echo): a caller's long free-text value is shown cut at 60 characters with "…" (`errors.cut`) in
the request, precision, pooling, options, tokenization and pooling-option messages; a short value reads as
before."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodels import bert_folder

from tokenpool import Encoder
from tokenpool.core.pooling import check_options
from tokenpool.core.quantize import check_precision
from tokenpool.core.strategies import parse_strategy
from tokenpool.model.options import EncoderOptions
from tokenpool.model.request import EncodeRequest

LONG = "x" * 5000
SPACED = "tokens:0" + " " * 5000  # a well-formed spec with a bad size: the size check echoes it


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Encoder:
    return Encoder(bert_folder(tmp_path_factory.mktemp("echo")), max_length=24, device="cpu")


def _message(call) -> str:
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    return str(caught.value)


SITES = {
    **{f"{caller}-chunks-size": (lambda value, caller=caller: EncodeRequest(caller=caller, chunks=value).check(), SPACED)
       for caller in ("python", "cli", "http")},
    **{f"request-{name}": (lambda value, name=name: EncodeRequest(**{name: value}).check(), LONG)
       for name in ("chunking", "long_documents", "output", "precision", "pooling")},
    "request-chunks-output": (lambda value: EncodeRequest(chunks=value, output="tokens").check(),
                              "tokens:8" + " " * 5000),
    "check_precision": (check_precision, LONG),
    "parse_strategy": (parse_strategy, LONG),
    "options-long_documents": (lambda value: EncoderOptions(long_documents=value).check(), LONG),
    "pooling-normalize": (lambda value: check_options(value, "max"), LONG),
    "pooling-reduction": (lambda value: check_options(True, value), LONG),
}  # fmt: skip


@pytest.mark.parametrize("site", sorted(SITES))
def test_a_long_value_is_shown_cut(site):
    call, value = SITES[site]
    message = _message(lambda: call(value))
    head = value[:60]
    assert value not in message and len(message) < 600, (site, len(message))
    assert head + "…" in message or json.dumps(head + "…") in message, message  # (JSON for a server caller)


def test_a_long_truncation_is_shown_cut(encoder):
    message = _message(lambda: encoder.tokenize(["a"], truncation=LONG))
    assert LONG not in message and f"got {LONG[:60] + '…'!r}" in message


_SHORT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=40, deadline=None)
@given(_SHORT)
def test_a_short_value_reads_as_before(value):
    """The messages' own templates, as they were written before this stop, with the value's repr whole."""
    if value.strip().lower() not in ("late", "naive"):
        assert _message(lambda: EncodeRequest(chunking=value).check()) == (
            f"chunking must be one of ('late', 'naive'), got {value!r}")
    if value.strip().lower() not in ("float32", "float16", "int8", "uint8", "binary", "ubinary"):
        assert _message(lambda: check_precision(value)).startswith(f"unknown precision {value!r}; choose one of")
    if value not in ("truncate", "windows"):
        assert _message(lambda: EncoderOptions(long_documents=value).check()) == (
            f"long_documents must be one of ('truncate', 'windows'), got {value!r}")
    assert _message(lambda: check_options(value, "max")) == f"normalize must be True or False, got {value!r}"
    spec = "tokens:0" + " " * (len(value) % 53)  # a bad size in a spec of up to 60 characters
    for caller, said in (("python", f"chunks={spec!r}"), ("http", f"'chunks': {json.dumps(spec)}")):
        assert _message(lambda caller=caller: EncodeRequest(caller=caller, chunks=spec).check()).endswith(f" in {said}")
