"""Stop 63 follow-ups: messages that keep a value's spelling (one_line, huge integers, chunk specs)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool.errors import one_line


def _one_error_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


def test_one_line_keeps_runs_of_spaces_and_tabs_inside_a_line():
    assert one_line(ValueError("'a  b' and\t'c'")) == "'a  b' and\t'c'"


def test_one_line_collapses_a_traceback_or_a_multi_line_library_message():
    message = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    boom()\nValueError: no\r\n'
    assert one_line(RuntimeError(message)) == (
        'Traceback (most recent call last): File "x.py", line 1, in <module> boom() ValueError: no'
    )
    assert one_line(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")) == "CUDA out of memory. Tried to allocate 2 GiB"
    assert one_line(ValueError("first:\n\tsecond \u2028 third.\n\n  Fourth")) == "first: second third. Fourth"


def test_one_line_escapes_a_line_end_inside_a_value_as_python_does():
    assert one_line(ValueError("my\nnotes\r\nv2\x85b.txt: no such file")) == "my\\nnotes\\r\\nv2\\x85b.txt: no such file"
    assert one_line(ValueError("")) == "ValueError"


def test_cli_names_a_file_and_a_prompt_name_as_given(run, tmp_path):
    out = tmp_path / "y.npy"
    code, _, err = run("embed", str(tmp_path / "my  notes.txt"), "-o", out)
    assert code == 2 and "my  notes.txt: no such file" in _one_error_line(err)
    code, _, err = run("embed", str(tmp_path / "my\nnotes.txt"), "-o", out)
    assert code == 2 and "my\\nnotes.txt': no such file" in _one_error_line(err)  # (quoted since stop 64)
    (tmp_path / "x.txt").write_text("hi\n")
    code, _, err = run("embed", tmp_path / "x.txt", "--prompt-name", "a  b", "-o", out)
    assert code == 2 and "--prompt-name 'a  b' is not one of" in _one_error_line(err)


HUGE = 10**5000  # past Python's 4,300-digit str() limit


def test_a_huge_window_stride_is_named_not_python_s_digit_limit(run, tmp_path):
    from tokenpool.errors import OptionError, parse_int, shown_int
    from tokenpool.model.windows import check_stride

    with pytest.raises(OptionError, match=r"window_stride an integer of about 5000 digits must be smaller than"):
        check_stride(HUGE, 128)
    with pytest.raises(OptionError, match=r"window_stride 200 must be smaller than"):  # (numpy's ints as before)
        check_stride(np.int64(200), 128)
    (tmp_path / "x.txt").write_text("hi\n")
    flags = ("--long-documents", "windows", "--window-stride", "7" * 5000, "-o", tmp_path / "y.npy")
    code, _, err = run("embed", tmp_path / "x.txt", *flags)
    assert code == 2 and f"--window-stride {shown_int(parse_int('7' * 5000))} must be smaller" in _one_error_line(err)


def test_a_huge_truncate_dim_is_named_not_python_s_digit_limit(run, tmp_path):
    from tokenpool import Encoder, pool
    from tokenpool.errors import parse_int, shown_int

    states, mask = np.ones((1, 2, 4), np.float32), np.ones((1, 2), np.int64)
    for huge in (HUGE, -HUGE):
        with pytest.raises(ValueError, match=r"truncate_dim must be .*, got an? (negative )?integer of about 5000"):
            pool(states, mask, "mean", truncate_dim=huge)
    for small, message in ((np.int64(0), "got 0$"), (np.int64(5), r"in 1\.\.4 \(the pooled dimension\), got 5$")):
        with pytest.raises(ValueError, match=message):
            pool(states, mask, "mean", truncate_dim=small)
    with pytest.raises(ValueError, match=r"truncate_dim must be an int in 1\.\.384 .*, got an integer of about 5000"):
        Encoder(truncate_dim=HUGE)
    (tmp_path / "x.txt").write_text("hi\n")
    code, _, err = run("embed", tmp_path / "x.txt", "--dim", "7" * 5000, "-o", tmp_path / "y.npy")
    assert code == 2 and f"--dim must be an int in 1..384 (the pooled dimension), got {shown_int(parse_int('7' * 5000))}" in _one_error_line(err)


def test_a_bad_chunk_spec_is_quoted_as_the_capacity_error_quotes_one(run, tmp_path):
    from tokenpool import Encoder

    encoder = Encoder()
    for spec, needle in (("tokens:8:8", "chunk overlap (8) must be smaller than the chunk size (8)"),
                         ("tokens:0", "chunk size must be an int >= 1, got 0"),
                         ("tokens:300", "chunk size 300 exceeds the 254 text tokens")):  # fmt: skip
        with pytest.raises(ValueError) as refusal:
            encoder.encode_chunks(["hello world"], chunks=spec)
        assert needle in str(refusal.value) and str(refusal.value).endswith(f" in chunks='{spec}'")
        (tmp_path / "x.txt").write_text("hi\n")
        code, _, err = run("embed", tmp_path / "x.txt", "--chunks", spec, "-o", tmp_path / "y.jsonl")
        assert code == 2 and needle in err and _one_error_line(err).endswith(f" in --chunks {spec}\n")
