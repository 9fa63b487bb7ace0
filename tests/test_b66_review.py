"""Stop 66 review (s66-jobs): each test failed on the merged code before its fix."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.io.readers import iter_records

# one-line files as Windows Notepad saves them in the system's code page: no line break at the end
LEGACY_ONE_LINERS = [("latin-1", "Café"), ("cp1252", "Straße"), ("gbk", "上海是一个大城市"), ("gbk", "你好"),
                     ("shift_jis", "東京は大きな都市です"), ("big5", "繁體中文"), ("euc-kr", "안녕하세요")]  # fmt: skip


@pytest.mark.parametrize(("encoding", "text"), LEGACY_ONE_LINERS)
def test_a_one_line_file_in_a_legacy_encoding_gets_no_utf16_hint(tmp_path, encoding, text):
    """A one-line file with no line break in Latin-1 or a CJK code page (GBK, Shift-JIS, Big5, EUC-KR) was
    told "it looks like UTF-16 without a byte-order mark": its bytes, paired, read as printable UTF-16 (CJK,
    Hangul) by chance for every CJK one-liner here, so printability is no evidence; only a UTF-16 line break
    is (a NUL beside the \\n, which these encodings never write). Such a file keeps the plain message."""
    src = tmp_path / "in.txt"
    data = text.encode(encoding)
    src.write_bytes(data)
    assert data.decode(encoding) == text and b"\0" not in data  # Python's codec: it is that encoding's text
    with pytest.raises(UnicodeDecodeError) as utf8:
        data.decode("utf-8")
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(src), "txt"))
    at = utf8.value.start
    assert str(caught.value) == f"{src}, line 1: invalid UTF-8 (byte 0x{data[at]:02x} at column {at + 1})"


def test_the_same_bytes_are_gbk_and_utf16_text_so_a_one_liner_gets_no_hint_either_way(run, tmp_path):
    """A one-line UTF-16 file without a break cannot be told from a one-line GBK file (these bytes are both),
    so it gets the plain message too, through the CLI."""
    data = "上海是一个大城市".encode("gbk")
    assert data.decode("utf-16-be").isprintable() and data.decode("gbk") == "上海是一个大城市"
    src = tmp_path / "in.txt"
    src.write_bytes(data)
    out = tmp_path / "out.npy"
    code, _, err = run("embed", src, "-o", out, "-q")
    assert_one_error_line(code, err, f"{src}, line 1: invalid UTF-8 (byte 0xc9 at column 1)")
    assert "UTF-16" not in err and not out.exists()


def test_an_invalid_line_on_an_open_pipe_is_refused_without_waiting_for_more_input():
    """The UTF-16 hint reads the byte after an invalid line (UTF-16 LE: its break's NUL). On a pipe the
    writer keeps open (a producer still running, a terminal) that read waited for the next byte: a Latin-1
    line's error came only when more input arrived. The byte is now read only for a line that reads as UTF-16
    LE text up to its \\n (a Latin-1 "café" does not: 0xe9 pairs to U+E966, a private-use character)."""
    import os
    import threading

    from tokenpool.io.readers import decoded_lines

    line = "café au lait\n".encode("latin-1")
    assert not (line + b"\0").decode("utf-16-le").isprintable()  # ("ca", "f\xe9" = U+E966, ...)
    read_end, write_end = os.pipe()
    os.write(write_end, line)
    errors: list[str] = []

    def read_all() -> None:
        with open(read_end, "rb") as fh, pytest.raises(CorpusError) as caught:
            list(decoded_lines(fh, "-"))
        errors.append(str(caught.value))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(20)  # (at once before the hint; the merged read blocked until the pipe closed)
    before_close = list(errors)
    os.close(write_end)
    reader.join(20)
    assert before_close == ["<stdin>, line 1: invalid UTF-8 (byte 0xe9 at column 4)"]
    assert not reader.is_alive()
