"""Stop 66, jobs/io/Ray defects: each test failed on the code before its fix."""

from __future__ import annotations

import json
import re

import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.io.readers import iter_records

UTF16_HINT = "it looks like UTF-16 without a byte-order mark: save it as UTF-8"
CJK = ["日本語のテキスト", "第二の行です"]


def _utf16_file(path, encoding: str, ending: str, fmt: str = "txt") -> bytes:
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in CJK] if fmt == "jsonl" else CJK
    data = "".join(line + ending for line in lines).encode(encoding)
    path.write_bytes(data)
    assert data.decode(encoding).split(ending)[:2] == lines  # Python's codec reads it as the text it holds
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    return data


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_cjk_text_in_utf16_without_a_byte_order_mark_gets_the_utf16_hint(tmp_path, fmt, ending, encoding):
    """CJK text in UTF-16 without a mark (no NUL before its first line break in UTF-16 LE) was refused as
    "line 1: invalid UTF-8 (byte 0xe5 at column 1)" with no hint, where ASCII text in UTF-16 (NULs) gets one.
    A line that reads as UTF-16 text up to a UTF-16 line break (LE: its \\n byte followed by a NUL) now gets
    the hint; Ray's per-file reads share the lines."""
    src = tmp_path / f"in.{fmt}"
    data = _utf16_file(src, encoding, ending, fmt)
    with pytest.raises(UnicodeDecodeError) as utf8:  # Python's codec says where line 1 stops being UTF-8
        data.split(b"\n")[0].decode("utf-8")
    column = utf8.value.start + 1
    with pytest.raises(CorpusError) as caught:
        list(iter_records(str(src), fmt))
    assert re.fullmatch(rf"{re.escape(str(src))}, line 1: invalid UTF-8 \(byte 0x{data[column - 1]:02x} at "
                        rf"column {column}\); {UTF16_HINT}", str(caught.value)), str(caught.value)  # fmt: skip
    if fmt == "txt":
        from tokenpool.integrations import ray as tp_ray

        with pytest.raises(CorpusError) as by_ray:
            tp_ray._text_lines({"bytes": data, "path": str(src)})
        assert str(by_ray.value) == str(caught.value)


@pytest.mark.parametrize(("encoding", "text"), [("latin-1", "caf\u00e9 au lait"), ("cp1252", "na\u00efve \u201cquote\u201d"),
                                                ("gbk", "上海是一个大城市"), ("shift_jis", "東京は大きな都市です")])  # fmt: skip
def test_other_encodings_keep_the_plain_message(tmp_path, encoding, text):
    """A line in an 8-bit or double-byte encoding holds no NUL, so it has no UTF-16 line break: no UTF-16 hint
    (their message is as before)."""
    src = tmp_path / "in.txt"
    for data in ((text + "\n" + text + "\n").encode(encoding), (text + "\r\n").encode(encoding)):
        src.write_bytes(data)
        with pytest.raises(CorpusError) as caught:
            list(iter_records(str(src), "txt"))
        assert str(caught.value).startswith(f"{src}, line 1: invalid UTF-8 (byte ")
        assert str(caught.value).endswith(")"), str(caught.value)


def test_parquet_row_groups_hold_at_most_an_arrow_lists_items(tmp_path, monkeypatch):
    """A pyarrow list array's offsets are int32 (pyarrow docs: ``list_`` vs ``large_list``), so a .parquet chunk
    of over 2**31 - 1 sparse non-zeros (or token vectors) failed at assembly (numpy: "Python integer 2147483648
    out of bounds for int32"). The writer now splits such a chunk into row groups that fit; shown here with the
    limit lowered to 5: the rows read back as written, each row group within the limit."""
    import numpy as np
    import pyarrow.parquet as pq

    from tokenpool.io import rows as io_rows
    from tokenpool.io.writers import WRITERS, RowStream
    from tokenpool.jobs.rows import sparse_rows

    monkeypatch.setattr(io_rows, "LIST_ITEMS", 5, raising=False)
    nnz = [3, 2, 4, 0, 1, 5, 2]
    indices = [list(range(10 * r, 10 * r + n)) for r, n in enumerate(nnz)]  # the reference rows
    values = [[float(i) / 4 for i in row] for row in indices]
    parts = {"doc": np.arange(len(nnz), dtype="<i8"), "indices": np.array(sum(indices, []), dtype="<i4"),
             "values": np.array(sum(values, []), dtype="<f4"), "nnz": np.array(nnz, dtype="<i8"),
             "line": np.arange(len(nnz), dtype="<i8")}  # fmt: skip
    out = tmp_path / "out.parquet"
    WRITERS["parquet"].write(out, RowStream(sparse_rows(100), lambda: [parts], len(nnz), sum(nnz)), None)
    table = pq.read_table(out)
    assert table.column("indices").to_pylist() == indices and table.column("values").to_pylist() == values
    assert table.column("id").to_pylist() == list(range(len(nnz)))
    found = pq.ParquetFile(out)
    sizes = [len(found.read_row_group(k).column("indices").combine_chunks().flatten()) for k in range(found.num_row_groups)]
    assert sum(sizes) == sum(nnz) and max(sizes) <= 5, sizes


def test_utf16_cjk_lines_piped_to_stdin_get_the_hint(run, tmp_path, monkeypatch):
    """The same through ``embed -`` (what a PowerShell 5 pipe writes, less its mark): the byte after line 1, the
    NUL of its UTF-16 LE line break, is read from the pipe; the error names <stdin>."""
    import io
    import sys

    data = "".join(t + "\n" for t in CJK).encode("utf-16-le")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = tmp_path / "out.npy"
    code, _, err = run("embed", "-", "-o", out, "-q")
    assert_one_error_line(code, err, "<stdin>, line 1: invalid UTF-8", UTF16_HINT)
    assert not out.exists()
