"""Stop 64 follow-up: a caller's long string is shown short in a library error (one rule, `errors.shown_value`),
so that every front end (Encoder, command line, server) bounds it alike; short values read as before."""

from __future__ import annotations

import argparse

import pytest
from clitools import assert_one_error_line
from hypothesis import given
from hypothesis import strategies as st

from tokenpool.core.chunking import TokenChunks, parse_chunks
from tokenpool.errors import OptionError, option_integer, shown_value
from tokenpool.model.texts import check_prompt, check_text

LONG = 5000  # characters: a message echoing such a value whole is over 5 kB
BOUND = 300  # a message around one cut value stays under this


@given(st.text(max_size=60))
def test_a_short_str_is_shown_as_python_writes_it(text):
    """The many messages that pin a short value (``prompt_name 'nope'``) read exactly as ``repr`` / ``str``."""
    assert shown_value(text, short=True) == repr(text) and shown_value(text, str, short=True) == text


@given(st.text(min_size=61, max_size=LONG))
def test_a_long_str_is_shown_bounded_and_marked(text):
    """A longer one: its start as ``repr`` writes it, the cut marked, never the whole."""
    shown, quoted = shown_value(text, str, short=True), shown_value(text, short=True)
    assert len(shown) == 61 and text.startswith(shown[:-1]) and shown.endswith("…")
    assert len(quoted) <= len(repr(text[:60])) + 1 and quoted.startswith(repr(text[:60])[:-1])
    assert shown_value(text, str) == text  # (without ``short``: whole, as a path is shown)


def test_encode_with_a_long_unknown_prompt_name_is_refused_briefly(tiny_bert_folder):
    """``Encoder(...).encode("hi", prompt_name="x" * 5000)`` raised a 5 kB OptionError (the name whole)."""
    pytest.importorskip("torch")
    from tokenpool import Encoder

    encoder = Encoder(tiny_bert_folder, device="cpu")
    with pytest.raises(OptionError) as long:
        encoder.encode("hi", prompt_name="x" * LONG)
    assert len(str(long.value)) < BOUND and str(long.value).startswith("prompt_name 'xxx"), long.value
    with pytest.raises(OptionError, match=r"^prompt_name 'nope' is not one of the model's prompts \(none; "):
        encoder.encode("hi", prompt_name="nope")


def test_prompt_and_prompt_name_together_are_refused_briefly():
    with pytest.raises(ValueError) as both:
        check_prompt("p" * LONG, "x" * LONG)
    assert len(str(both.value)) < BOUND and str(both.value).startswith("give either prompt or prompt_name"), both.value


@pytest.mark.parametrize("spec", ["t" * LONG, "tokens:0" + " " * LONG, "tokens:" + "0" * LONG, "tokens:" + "1" * LONG],
                         ids=["kind", "padded", "zeros", "ones"])
def test_a_long_chunk_spec_is_refused_briefly(spec):
    """``parse_chunks("t" * 5000)`` (and a bad size padded or written with 5,000 digits) echoed the spec whole."""
    with pytest.raises(OptionError) as refused:
        parse_chunks(spec)
    assert len(str(refused.value)) < BOUND and "chunks" in str(refused.value), refused.value
    with pytest.raises(OptionError, match=r"got 'bogus'$"):
        parse_chunks("bogus")
    with pytest.raises(OptionError, match=r"^chunk size must be an int >= 1, got 0 in chunks='tokens:0'$"):
        parse_chunks("tokens:0")


def test_the_command_line_refuses_a_long_chunk_spec_in_one_short_line(run, tiny_bert_folder, tmp_path):
    """``tokenpool embed --chunks tttt…`` printed the 5,000 characters on its error line."""
    pytest.importorskip("torch")
    (tmp_path / "in.txt").write_text("hello world\n")
    code, _, err = run("embed", tmp_path / "in.txt", "-o", tmp_path / "out.npy", "--model", tiny_bert_folder,
                       "--chunks", "t" * LONG)  # fmt: skip
    assert_one_error_line(code, err, "--chunks must be 'tokens:SIZE[:OVERLAP]'", "ttt…")
    assert len(err) < BOUND, err


@pytest.mark.parametrize("value", [-(10**5000), -(10**30), "x" * LONG], ids=["huge", "negative", "str"])
def test_a_bad_chunk_size_is_named_whatever_it_is(value):
    """``TokenChunks(-10**5000)`` raised Python's "Exceeds the limit (4300 digits)" ValueError, not the size."""
    with pytest.raises(OptionError, match=r"^chunk size must be an int >= 1, got .* in TokenChunks$") as refused:
        TokenChunks(value)
    assert len(str(refused.value)) < BOUND


@pytest.mark.parametrize("value", [10**5000, b"x" * LONG], ids=["huge", "bytes"])
def test_a_text_that_is_no_str_is_named_briefly(value):
    """``encode([10**5000])`` raised "Exceeds the limit (4300 digits)" instead of naming texts[0]."""
    with pytest.raises(TypeError, match=r"^texts\[0\] is (int|bytes) \(.*\), not str$") as refused:
        check_text(value, "texts[0]")
    assert len(str(refused.value)) < BOUND


def test_an_option_that_is_no_integer_is_refused_briefly():
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        option_integer("9" * LONG + "x")
    assert len(str(refused.value)) < BOUND and str(refused.value).startswith("expected an integer, got '999")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected an integer, got '4x'$"):
        option_integer("4x")
