"""Stop 51's defect hunt in tokenpool.io (readers, writers, work folder) and `tokenpool embed`."""

from __future__ import annotations

import io
import os
import re
import sys

import numpy as np
import pytest

from tokenpool.errors import CorpusError
from tokenpool.io.workdir import WorkDir


def test_work_folder_of_a_million_chunks_is_removed_whole(tmp_path):
    """Chunk files are named ``chunk-{index:06d}``: from chunk 1,000,000 on (``--chunk-size 1`` on a corpus of a
    million lines) the name has seven digits. They are the job's files like the others: removed with the folder
    once the output is in place (not left behind in a folder without its owner marker, which the next run
    refuses), and checked for symlinks before a resumed run writes through them."""
    out = tmp_path / "out.npy"
    with WorkDir(out) as work:
        for index in (0, 999_999, 1_000_000, 1_234_567):
            work.write_chunk(index, index, index + 1, {"doc": np.array([index]), "id": ["x"]})
    work.remove()
    assert not work.path.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlink_under_a_seven_digit_chunk_name_is_refused(tmp_path):
    out, target = tmp_path / "out.npy", tmp_path / "mine.txt"
    target.write_bytes(b"keep me")
    with WorkDir(out) as work:
        pass
    (work.path / "chunk-1000000.doc.npy.tmp").symlink_to(target)
    with pytest.raises(CorpusError, match=r"chunk-1000000\.doc\.npy\.tmp is a symlink"), WorkDir(out):
        pass
    assert target.read_bytes() == b"keep me"


def test_work_folder_cleanup_keeps_a_chunk_name_in_other_digits(tmp_path):
    """Only the names the job gives are its own: ``chunk-`` and ASCII digits; a user's file named with other
    scripts' digits (which a regex ``\\d`` also matches) is kept, and so is the folder holding it."""
    out = tmp_path / "out.npy"
    with WorkDir(out) as work:
        work.write_chunk(0, 0, 1, {"doc": np.array([0])})
    theirs = work.path / "chunk-\u0661\u0662\u0663\u0664\u0665\u0666.doc.npy"
    theirs.write_bytes(b"not the job's")
    work.remove()
    assert sorted(os.listdir(work.path)) == [theirs.name]
    assert theirs.read_bytes() == b"not the job's"


@pytest.mark.parametrize(("array", "width"), [(np.ones((2, 5), np.float32), 4), (np.ones(2, np.float32), 4),
                                              (np.ones((2, 1), np.float32), None)])  # fmt: skip
def test_write_npy_refuses_arrays_of_another_width(array, width):
    """`write_npy` (exported by `tokenpool.io.corpus`) announces ``rows × width`` in the header, then writes the
    arrays' bytes: an array of another width wrote a file numpy cannot load (2 × 5 values under a 2 × 4 header),
    without an error, and with a digest that matched what was written (so the writers' read-back passed too)."""
    from tokenpool.io.corpus import write_npy

    with pytest.raises(ValueError, match=re.escape(f"shape {array.shape!r}")):
        write_npy(io.BytesIO(), [array], 2, width)


def test_write_npy_writes_what_numpy_reads():
    from tokenpool.io.corpus import write_npy

    fh, blocks = io.BytesIO(), [np.arange(8, dtype=np.float32).reshape(2, 4), np.ones((1, 4), np.float32)]
    write_npy(fh, blocks, 3, 4)
    np.testing.assert_array_equal(np.load(io.BytesIO(fh.getvalue())), np.concatenate(blocks))


@pytest.mark.parametrize("content", [b"not parquet at all", b"PAR1" + b"\0" * 64])
def test_read_calibration_names_a_damaged_parquet_output(tmp_path, content):
    """`read_calibration(OUT)` (docs/precision.md) reads a parquet output's schema metadata: a damaged or
    truncated OUT is refused naming it, as the parquet reader refuses such an input (was pyarrow's bare
    ``Parquet magic bytes not found in footer...``, naming no file)."""
    pytest.importorskip("pyarrow")
    from tokenpool.io.storage import read_calibration

    out = tmp_path / "codes.parquet"
    out.write_bytes(content)
    with pytest.raises(CorpusError, match=re.escape(f"{out}: not a readable parquet file (")):
        read_calibration(out)
