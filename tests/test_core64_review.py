"""Stop 64, review of the core/bench layer's fixes: each test failed on the merged branch before its fix."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import tokenpool

VALUES = (-math.inf, math.inf, math.nan, 1e39, 500, 6.9, 0.1)


def _dtypes() -> list:
    """ml_dtypes' float types as numpy dtypes, and torch's float8 and half types."""
    found = []
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for name in ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float4_e2m1fn"):
        if hasattr(ml_dtypes, name):
            found.append(pytest.param("numpy", np.dtype(getattr(ml_dtypes, name)), id=f"numpy-{name}"))
    torch = pytest.importorskip("torch")
    for name in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "bfloat16", "float16"):
        if hasattr(torch, name):
            found.append(pytest.param("torch", getattr(torch, name), id=f"torch-{name}"))
    return found


@pytest.mark.parametrize(("library", "dtype"), _dtypes())
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_unpack_pads_with_the_value_asked_or_refuses_it(library: str, dtype, value: float):
    """``unpack(tokens, offsets, pad_value=-inf)`` of float8_e4m3fn tokens (a type without inf; -inf is the usual
    padding before a max) padded with nan (numpy's ml_dtypes) or -448 (torch), and float4_e2m1fn tokens padded
    1e39 as 6.0 (the type saturates), without a word; now the padding is the value asked (an inf or nan as
    itself, a finite value rounded) or a ValueError names it."""
    import torch

    tokens = np.ones((3, 2), dtype=np.float32)
    tokens = torch.from_numpy(tokens).to(dtype) if library == "torch" else tokens.astype(dtype)
    try:
        hidden, _ = tokenpool.unpack(tokens, [0, 1, 3], pad_value=value)
    except ValueError as exc:
        assert f"pad_value {value!r} is not a value of the tokens' dtype" in str(exc)
        return
    padding = hidden[0, 1, 0]
    got = float(padding.float()) if library == "torch" else float(padding.astype(np.float64))
    if not math.isfinite(value):
        assert got == value or math.isnan(got) and math.isnan(value)
    else:  # rounded to one of the type's values, not saturated (a float4 has 1 mantissa bit, a float8 2 or 3)
        assert math.isfinite(got) and abs(got - value) <= 0.5 * abs(value) + 0.5


def test_a_strategy_given_to_pack_as_its_mask_is_not_said_to_go_after_it():
    """``pack(hidden, "max")`` said "(a strategy is the argument after the mask: pool(...))"; pack takes no
    argument after the mask (nor a strategy); now the hint says a strategy is no mask."""
    hidden = np.ones((2, 3, 4), dtype=np.float32)
    after = list(inspect.signature(tokenpool.pack).parameters)
    assert after[-1] == "attention_mask"  # (the reference: pack has no parameter after the mask)
    with pytest.raises(TypeError, match=r"got the str 'max'") as info:
        tokenpool.pack(hidden, "max")
    assert "after the mask" not in str(info.value)
    assert "pool(hidden, None, 'max') pools every token" in str(info.value)  # and the call it names does so:
    assert np.array_equal(tokenpool.pool(hidden, None, "max"), hidden.max(axis=1))


@pytest.mark.parametrize("entry", ["bench", "cli"])
def test_bench_quotes_unrecognized_arguments_as_the_cli_does(capsys, entry: str):
    """``tokenpool bench --bogus 'a\\nb' $'x\\ny'`` said "unrecognized arguments: --bogus a\\nb x\\ny": a typed
    backslash-n and a real line break read alike; now each such argument is quoted as Python writes it (as the
    CLI's other commands quote them), exit 2 with one line."""
    from tokenpool.bench.pooling import main as bench_main
    from tokenpool.cli import main as cli_main

    extra = ["--bogus", "a\\nb", "x\ny"]
    code = bench_main(extra) if entry == "bench" else cli_main(["bench", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    quoted = " ".join(repr(arg) for arg in extra[1:])  # (the reference: Python's repr)
    assert err == f"tokenpool bench: error: unrecognized arguments: --bogus {quoted}\n"


def test_bench_quotes_an_unknown_library_name():
    """``--libraries $'nu\\nmpy'`` (a line break) and ``--libraries 'nu\\nmpy'`` (typed) both said "got nu\\nmpy";
    now the name is quoted as Python writes it."""
    from tokenpool.bench.pooling import BenchError, parse_args

    for name in ("nu\nmpy", "nu\\nmpy"):
        with pytest.raises(BenchError) as info:
            parse_args(["--batch", "2", "--libraries", f"{name},torch"])
        assert str(info.value) == f"--libraries takes torch, numpy and torch-own, got {name!r}"
