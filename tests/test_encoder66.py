"""Stop 66 (the Encoder facade and CLI plumbing): a bool option read strictly, a call's truncate_dim refused
before any model as the other sizes are, and texts / devices refused naming what was given."""

from __future__ import annotations

import re

import pytest

from tokenpool.errors import OptionError
from tokenpool.model.options import EncoderOptions, parse_device
from tokenpool.model.request import EncodeRequest
from tokenpool.model.texts import as_texts


@pytest.mark.parametrize("flag", ["yes", "no", 1, None])
def test_tokenize_exact_counts_is_a_bool_as_every_switch_is(tiny, flag):
    """``encoder.tokenize(texts, exact_counts="no")`` was read as True (a truthy string): the texts were tokenised
    whole. It is the TypeError every bool option gives (`errors.check_bool`), and a bool is still taken."""
    from tokenpool import Encoder

    encoder = Encoder(tiny, device="cpu")
    with pytest.raises(TypeError, match=rf"^exact_counts must be True or False, got {flag!r}$"):
        encoder.tokenize(["a b c"], exact_counts=flag)
    for exact in (False, True):
        assert encoder.tokenize(["a b c"], exact_counts=exact).lengths.tolist() == [5]  # [CLS] a b c [SEP]


@pytest.mark.parametrize("dim", [0, -1, -(10**40)])
def test_a_call_truncate_dim_below_one_is_refused_without_a_model(dim):
    """``EncodeRequest(truncate_dim=0).check()`` passed (only the model's check refused it), so a request checked
    before any model loads was taken with a cut no model has. It is refused as the other sizes are (batch_size:
    "must be a positive int"), naming the field as the caller spells it."""
    shown = re.escape("-100000000…0000000000 (41 digits)" if dim == -(10**40) else str(dim))
    with pytest.raises(OptionError, match=rf"^truncate_dim must be a positive int or None, got {shown}$"):
        EncodeRequest(truncate_dim=dim).check()
    with pytest.raises(OptionError, match=rf"^'dimensions' must be a positive int or None, got {shown}$"):
        EncodeRequest(truncate_dim=dim, caller="http").check()
    with pytest.raises(ValueError, match=r"^batch_size must be a positive int, got 0$"):  # (the same shape)
        EncodeRequest(batch_size=0).check()


@pytest.mark.parametrize("dim", [1, 8, 2**40])
def test_a_call_truncate_dim_of_one_or_more_passes_the_model_free_check(dim):
    assert EncodeRequest(truncate_dim=dim).check().truncate_dim == dim  # (its upper bound is the model's)


def test_a_call_truncate_dim_of_zero_against_a_model_still_names_its_dimension(tiny):
    """Against a loaded model the message still gives the model's range (the server's 'dimensions': 0)."""
    from tokenpool import Encoder

    encoder = Encoder(tiny, device="cpu")
    message = rf"^'dimensions' must be between 1 and {encoder.dimension} \(the model's dimension\), got 0$"
    with pytest.raises(OptionError, match=message):
        EncodeRequest(truncate_dim=0, caller="http").check_encoder(encoder)
    with pytest.raises(OptionError, match=r"truncate_dim must be between 1 and"):
        encoder.encode(["a"], truncate_dim=0)


@pytest.mark.parametrize("device", [-(10**40), -(2**63) - 1])
def test_a_huge_negative_device_index_is_refused_as_a_small_one_is(device):
    """``parse_device(-10**40)`` (and ``Encoder(device=...)``) gave torch's "Overflow when unpacking long long"
    while ``-1`` gave "unknown device -1: Device index must not be negative": the same message now, the value
    named (in `shown_int`'s short form for a long one)."""
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"^unknown device -1: Device index must not be negative$"):
        parse_device(-1)
    shown = re.escape("-100000000…0000000000 (41 digits)" if device == -(10**40) else str(device))
    for check in (lambda: parse_device(device), lambda: EncoderOptions(device=device).check()):
        with pytest.raises(ValueError, match=rf"^unknown device {shown}: Device index must not be negative$"):
            check()


def test_a_device_of_more_digits_than_str_reads_is_named_without_the_runtime_torch():
    """Without torch's parse (the onnx runtime) a device int of 5,000 digits raised str()'s "Exceeds the limit
    (4300 digits)" while building the message: it is the runtime's device message, the value in short form."""
    with pytest.raises(OptionError, match=r"^unknown device an integer of about \d+ digits: a device type"):
        EncoderOptions(device=10**5000, runtime="onnx").check()


@pytest.mark.parametrize("texts", [memoryview(b"ef"), memoryview(bytearray(b"ef"))])
def test_a_memoryview_is_no_list_of_texts(texts):
    """``encode(memoryview(b"ef"))`` iterated the buffer, and refused "texts[0] is int (101), not str": a
    memoryview is refused as bytes is, naming what was given."""
    with pytest.raises(TypeError, match=r"^texts must be a str or a list of str, got memoryview$"):
        as_texts(texts)
    with pytest.raises(TypeError, match=r"^texts must be a str or a list of str, got bytes$"):  # (as before)
        as_texts(b"ef")


@pytest.mark.parametrize("argv", [["--", "inspect"], ["--"], ["--", "--help"], ["--", "--", "inspect"]])
def test_a_double_dash_before_the_command_is_a_one_line_usage_error(argv, capsys):
    """``tokenpool -- inspect`` (item 5 of stop 66, checked: not a defect): ``--`` where the command belongs is the
    one-line usage error of any option given before the command, exit status 2, no traceback, nothing run."""
    from tokenpool.cli import main

    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tokenpool: error: ") and captured.err.count("\n") == 1, captured.err
