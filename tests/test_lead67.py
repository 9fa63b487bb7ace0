"""Stop 67, the lead's own fixes."""

import argparse

import pytest

from tokenpool.cli.export_onnx import min_cosine


@pytest.mark.parametrize("text", ["7" * 5000, "x" * 61])
def test_min_cosine_cuts_a_long_bad_value_as_every_number_flag_does(text):
    """--min-cosine echoed a 5,000-character value whole; every other number flag shows its first 60 characters."""
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        min_cosine(text)
    message = str(caught.value)
    assert message == f"expected a number within [0, 1], got '{text[:60]}…'"


@pytest.mark.parametrize("text", ["2", "nan", "-0.5", "x" * 60])
def test_min_cosine_keeps_its_message_for_short_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a number within \[0, 1\], got ") as caught:
        min_cosine(text)
    assert str(caught.value).endswith(repr(text))
