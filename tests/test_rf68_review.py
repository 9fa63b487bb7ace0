"""Review of stop 68's jobs/io work (s68-jobs): the .npz read-back check, int64 indices on resume, read errors,
locks and the work-folder race. References: the bytes the writer was given (re-encoded independently here),
scipy's own load_npz, an uninterrupted run's output, the documented behaviour in docs/cli.md."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from tokenpool.io import writers
from tokenpool.io.writers import WRITERS, RowStream
from tokenpool.jobs.rows import sparse_rows

# three sparse rows, 3,000 non-zeros: members over zipfile's 4 KiB first read (a header read reads no more)
PARTS = {"doc": np.arange(3), "nnz": np.array([1000, 0, 2000]), "line": np.arange(1, 4),
         "indices": (np.arange(3000, dtype=np.int32) * 7) % 10,
         "values": np.linspace(0.5, 3.5, 3000, dtype=np.float32)}  # fmt: skip
INDPTR = np.array([0, 1000, 1000, 3000])


def _write(path) -> None:
    WRITERS["npz"].write(path, RowStream(sparse_rows(10), lambda: [PARTS], 3, 3000), None)


def _npy(array: np.ndarray, descr: str | None = None) -> bytes:
    """An .npy file of ``array``; ``descr``: the dtype its header claims instead of the array's own."""
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=False)
    data = out.getvalue()
    if descr is not None:
        data = data.replace(repr(array.dtype.str).encode(), repr(descr).encode(), 1)
    return data


def _replaced(path, name: str, data: bytes) -> None:
    """``path`` rewritten with member ``name`` holding ``data`` (a consistent zip: its CRC matches)."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for member, value in members.items():
            zf.writestr(member, value)


def _flipped(path, name: str, at: int) -> None:
    """Byte ``at`` of member ``name``'s array data inverted in place (what a lying disk returns: a bad CRC)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
        with zf.open(name) as fh:
            np.lib.format.read_magic(fh)
            np.lib.format.read_array_header_1_0(fh)
            header = fh.tell()
    raw = bytearray(path.read_bytes())
    names, extra = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    raw[info.header_offset + 30 + names + extra + header + at] ^= 0xFF
    path.write_bytes(bytes(raw))


CORRUPTIONS = {
    "truncated file": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "truncated indices": lambda p: _replaced(p, "indices.npy", _npy(PARTS["indices"])[:-4]),
    "indices header of another dtype": lambda p: _replaced(p, "indices.npy", _npy(PARTS["indices"], "<i8")),
    "wrong shape": lambda p: _replaced(p, "shape.npy", _npy(np.array([4, 10]))),
    "indptr not ending at nnz": lambda p: _replaced(p, "indptr.npy", _npy(INDPTR - [0, 0, 0, 1])),
    "indptr of another dtype": lambda p: _replaced(p, "indptr.npy", _npy(INDPTR.astype(np.int32))),
    "indices bit flip": lambda p: _flipped(p, "indices.npy", 9000),
    "indptr bit flip": lambda p: _flipped(p, "indptr.npy", 9),
    "data bit flip": lambda p: _flipped(p, "data.npy", 9000),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_the_npz_read_back_catches_a_file_that_does_not_hold_what_was_written(tmp_path, monkeypatch, corruption):
    """The .npz read-back check (now reading headers, not whole arrays) must still refuse every file that does
    not hold what the writer was given, before it is renamed onto OUT: a member cut short or whose header claims
    another dtype (np.load failed on them; the header-only check passed both), changed bytes (a bad CRC: a full
    read failed on it), a wrong shape, an indptr not ending at the non-zeros."""
    synced = writers.sync_path

    def corrupted(path):
        synced(path)
        CORRUPTIONS[corruption](path)

    monkeypatch.setattr(writers, "sync_path", corrupted)
    with pytest.raises(RuntimeError, match="out.npz"):
        _write(tmp_path / "out.npz")


def test_an_intact_npz_passes_its_read_back_and_loads_as_written(tmp_path):
    """(The check above refuses no good file: scipy loads the matrix the parts describe.)"""
    import scipy.sparse

    _write(tmp_path / "out.npz")
    want = scipy.sparse.csr_matrix((PARTS["values"], PARTS["indices"], INDPTR), shape=(3, 10))
    got = scipy.sparse.load_npz(tmp_path / "out.npz")
    assert (got != want).nnz == 0 and got.shape == (3, 10)
