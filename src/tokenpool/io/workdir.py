"""The work folder beside an output being written: numbered chunk files, a manifest, a lock, an owner marker.

The job touches only what it created. The folder ``<output>.tokenpool-partial`` is created by the job, with an
owner marker file inside it (written before the folder gets its final name), so a pre-existing path of that
name that is not a tokenpool work folder — a symlink, a foreign directory, a file — is refused and left alone.
Inside its folder the job creates, and deletes, only files with the names it gives them.

Resume verifies what it reuses: the manifest records, for each chunk, the sha256 of its file(s), its shape,
dtype and the range of input records it covers. A chunk that fails verification is never used: the run refuses
(see `verify_chunks`). A chunk file is renamed into place before the manifest that counts it, and the manifest
is itself replaced atomically, so after a kill (even SIGKILL) the manifest describes only complete chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.sparse import SparseRows
from ..errors import CorpusError

MANIFEST_VERSION = 2
_MANIFEST_KEYS = frozenset(
    {
        "options", "chunk_size", "dimension", "chunks_done", "records_done", "rows_done", "prefix_sha256", "runs",
        "chunks",
    }
)  # fmt: skip
WORK_SUFFIX = ".tokenpool-partial"
OWNER_FILE = "tokenpool-work-folder.json"
OWNER_KIND = "tokenpool work folder"
# the only names the job ever creates inside its folder (and so the only ones it deletes)
_OWN_NAMES = re.compile(
    r"^(lock|manifest\.json|output\.[a-z]+|output\.(lines\.txt|chunks\.jsonl|tokens\.jsonl|calibration\.json)"
    r"|chunk-\d{6}\.(vectors|kept|meta|tokens|indices|values|indptr)\.npy|chunk-\d{6}\.ids\.json)(\.tmp)?$"
)
# dtypes a dense chunk may hold: float32 vectors, or the codes of a compact precision (tokenpool.core.quantize)
CODE_DTYPES = ("<f4", "<f2", "|i1", "|u1")
_SPARSE_KINDS = ("indices", "values", "indptr")


def work_dir_for(output: str | os.PathLike[str]) -> Path:
    """The work folder of ``output``: ``<output>.tokenpool-partial`` in the same folder (same filesystem)."""
    out = Path(output)
    return out.with_name(out.name + WORK_SUFFIX)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync, rename: readers see the old or new file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_work_dir(path: Path) -> bool:
    """True when ``path`` is a tokenpool work folder, False when nothing is there; `CorpusError` (and nothing
    touched) when something else is: a symlink, a file, or a folder without tokenpool's owner marker."""
    if path.is_symlink():
        raise CorpusError(
            f"{path} is a symlink, not a tokenpool work folder; refusing to write through it (remove it, or "
            f"name another output)"
        )
    if not path.exists():
        return False
    if not path.is_dir():
        raise CorpusError(
            f"{path} exists and is not a tokenpool work folder (a file); refusing to touch it (move it away, "
            f"or name another output)"
        )
    marker = path / OWNER_FILE
    try:
        owner = json.loads(marker.read_bytes()) if marker.is_file() and not marker.is_symlink() else None
    except (OSError, ValueError):
        owner = None
    if not (isinstance(owner, dict) and owner.get("kind") == OWNER_KIND):
        raise CorpusError(
            f"{path} exists but is not a tokenpool work folder (no {OWNER_FILE}); refusing to touch it (move it "
            f"away, or name another output)"
        )
    return True


class WorkDir:
    """Chunks and manifest of one output; use as a context manager to hold its lock."""

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = Path(output)
        self.path = work_dir_for(output)
        self._lock: Any = None
        self.created = False  # whether this run created the folder

    # -- lifetime
    def __enter__(self) -> WorkDir:
        if not check_work_dir(self.path):
            self._create()
        self._lock = open(self.path / "lock", "a+b")  # noqa: SIM115 - held until __exit__
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, the user must not run two jobs on one output
            return self
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise CorpusError(
                f"another tokenpool process is writing {self.output} (lock held on {self.path})"
            ) from None
        return self

    def _create(self) -> None:
        """Make the folder under a temporary name, mark it as ours, then give it its final name."""
        staging = self.path.with_name(f"{self.path.name}.new-{os.getpid()}")
        try:
            staging.mkdir()
            write_atomic(
                staging / OWNER_FILE,
                json.dumps({"kind": OWNER_KIND, "output": self.output.name, "pid": os.getpid()}).encode(),
            )
            if os.path.lexists(self.path):  # created meanwhile by someone else: theirs, not ours
                raise FileExistsError(self.path)
            os.rename(staging, self.path)
        except FileExistsError:
            self._discard(staging)
            raise CorpusError(f"{self.path} appeared while this job was creating it; rerun") from None
        except OSError as exc:
            self._discard(staging)
            raise CorpusError(f"cannot create the work folder {self.path} ({exc.strerror or exc})") from None
        self.created = True

    @staticmethod
    def _discard(staging: Path) -> None:
        if staging.is_dir() and not staging.is_symlink():
            (staging / OWNER_FILE).unlink(missing_ok=True)
            (staging / (OWNER_FILE + ".tmp")).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                staging.rmdir()

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def remove(self) -> None:
        """Delete the work folder (after the output is in place): the files the job made, then the folder if
        it is empty (a file someone else put there keeps it, and is kept)."""
        if check_work_dir(self.path):
            self.clear()
            for name in ("lock", OWNER_FILE):
                (self.path / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()

    # -- manifest
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when no chunk was ever completed; a damaged one is a `CorpusError`."""
        try:
            data = json.loads(self.manifest_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CorpusError(
                f"{self.manifest_path}: unreadable manifest ({exc}); delete {self.path} to start over"
            ) from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise CorpusError(
                f"{self.manifest_path}: not a tokenpool manifest of version {MANIFEST_VERSION}; "
                f"delete {self.path} to start over"
            )
        missing = sorted(_MANIFEST_KEYS - data.keys())
        if missing:
            raise CorpusError(
                f"{self.manifest_path}: damaged manifest (no {', '.join(missing)}); delete {self.path} to start over"
            )
        if not isinstance(data["chunks"], list) or len(data["chunks"]) != data["chunks_done"]:
            raise CorpusError(f"{self.manifest_path}: damaged manifest (chunk list); delete {self.path} to start over")
        return data

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        write_atomic(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        """Forget every chunk (a fresh start in an existing folder): delete only the files the job names."""
        for child in self.path.iterdir():
            if child.name != "lock" and _OWN_NAMES.match(child.name) and child.is_file() and not child.is_symlink():
                child.unlink()

    # -- chunks
    def chunk_path(self, index: int, kind: str = "vectors") -> Path:
        return self.path / f"chunk-{index:06d}.{kind}.npy"

    def write_chunk(
        self, index: int, start: int, stop: int, vectors: np.ndarray, kept: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Store chunk ``index`` (input records ``start``..``stop``-1): float32 vectors and, with --skip-empty,
        the kept (record index, line) pairs. Returns its manifest entry (checksums, shape, dtype, records)."""
        entry: dict[str, Any] = {"records": [int(start), int(stop)]}
        if kept is not None:
            entry["kept_sha256"] = self._save(self.chunk_path(index, "kept"), kept.astype(np.int64))
        # float32 vectors, or compact codes (float16 / int8 / uint8) as they are
        code = np.dtype(vectors.dtype).str in CODE_DTYPES[1:]
        vectors = np.ascontiguousarray(vectors, dtype=None if code else np.float32)
        entry.update(
            sha256=self._save(self.chunk_path(index), vectors), shape=list(vectors.shape), dtype=vectors.dtype.str
        )
        return entry

    def _save(self, path: Path, array: np.ndarray) -> str:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
        write_atomic(path, data)
        return hashlib.sha256(data).hexdigest()

    def load_chunk(
        self, index: int, entry: Mapping[str, Any], dimension: int, kept: bool, dtype: str = "<f4"
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``(record indices, kept line numbers or None, vectors)`` of chunk ``index`` after checking it against
        its manifest entry: the file's sha256, then shape, dtype and record range. `CorpusError` if it fails.
        ``dimension`` is the row width and ``dtype`` the array type the job writes (codes for --precision)."""
        start, stop = _record_range(entry)
        vectors = self._verified(self.chunk_path(index), entry.get("sha256"), index)
        if (
            vectors.dtype != np.dtype(dtype)
            or vectors.ndim != 2
            or list(vectors.shape) != list(entry.get("shape", []))
            or vectors.shape[1] != dimension
        ):
            self._fail(index, f"holds {vectors.dtype} {vectors.shape}, the manifest says {dtype} {entry.get('shape')}")
        ids, lines = self._rows(index, entry, len(vectors), kept)
        return ids, lines, vectors

    def _rows(
        self, index: int, entry: Mapping[str, Any], rows: int, kept: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The record index (and with --skip-empty the line number) of each of a chunk's ``rows`` rows, checked."""
        start, stop = _record_range(entry)
        if kept:
            pairs = self._verified(self.chunk_path(index, "kept"), entry.get("kept_sha256"), index)
            if pairs.dtype != np.int64 or pairs.shape != (2, rows):
                self._fail(index, f"kept-lines file has shape {pairs.shape}, expected (2, {rows})")
            ids, lines = pairs[0], pairs[1]
            if len(ids) and (ids[0] < start or ids[-1] >= stop or np.any(np.diff(ids) <= 0)):
                self._fail(index, f"kept record numbers fall outside records {start}..{stop - 1}")
        else:
            if rows != stop - start:
                self._fail(index, f"has {rows} rows for records {start}..{stop - 1}")
            ids, lines = np.arange(start, stop, dtype=np.int64), None
        return ids, lines

    # -- sparse chunks (SPLADE rows): CSR parts in three files, each with its sha256 in the manifest
    def write_sparse_chunk(
        self, index: int, start: int, stop: int, rows: SparseRows, kept: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Store chunk ``index`` of a sparse output (its CSR parts); returns its manifest entry."""
        entry: dict[str, Any] = {"records": [int(start), int(stop)]}
        if kept is not None:
            entry["kept_sha256"] = self._save(self.chunk_path(index, "kept"), kept.astype(np.int64))
        parts = {
            "indices": rows.indices.astype(np.int32, copy=False),
            "values": rows.values.astype(np.float32, copy=False),
            "indptr": rows.indptr.astype(np.int64, copy=False),
        }
        entry["sparse_sha256"] = {kind: self._save(self.chunk_path(index, kind), parts[kind]) for kind in _SPARSE_KINDS}
        entry.update(shape=[rows.n_rows, rows.n_cols], nnz=rows.nnz)
        return entry

    def load_sparse_chunk(
        self, index: int, entry: Mapping[str, Any], vocabulary: int, kept: bool
    ) -> tuple[np.ndarray, np.ndarray | None, SparseRows]:
        """``(record indices, kept line numbers or None, SparseRows)`` of a verified sparse chunk."""
        sums = entry.get("sparse_sha256")
        if not isinstance(sums, Mapping):
            self._fail(index, "has no sparse parts in the manifest")
        indices, values, indptr = (self._verified(self.chunk_path(index, k), sums.get(k), index) for k in _SPARSE_KINDS)
        n_rows = len(indptr) - 1
        if (
            indices.dtype != np.int32
            or values.dtype != np.float32
            or indptr.dtype != np.int64
            or indices.shape != values.shape
            or n_rows < 0
            or list(entry.get("shape", [])) != [n_rows, vocabulary]
            or (n_rows >= 0 and (indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0)))
            or (len(indices) and (indices.min() < 0 or indices.max() >= vocabulary))
        ):
            self._fail(index, f"sparse parts do not form {entry.get('shape')} CSR rows over {vocabulary} columns")
        ids, lines = self._rows(index, entry, n_rows, kept)
        return ids, lines, SparseRows(indptr, indices, values, vocabulary)

    def _verified(self, path: Path, expected: Any, index: int) -> np.ndarray:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self._fail(index, f"cannot be read ({exc.strerror or exc})")
        if not isinstance(expected, str) or hashlib.sha256(data).hexdigest() != expected:
            self._fail(index, f"{path.name} does not match its sha256 in the manifest (changed after it was written)")
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            self._fail(index, f"{path.name} is not a readable array ({exc})")

    def _fail(self, index: int, why: str) -> Any:
        raise CorpusError(
            f"refusing to use chunk {index} of {self.path}: it {why}; delete {self.path} to start over"
        )

    def iter_chunks(
        self, manifest: Mapping[str, Any], kept: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None, Any]]:
        """Yield each chunk verified (`load_chunk`, or `load_sparse_chunk` for a sparse output), one in memory at
        a time, checking that the record ranges follow one another from record 0. A job writing codes records
        their row width and dtype in the manifest (``width``, ``code_dtype``)."""
        expected_start = 0
        width = int(manifest.get("width", manifest["dimension"]))
        dtype = str(manifest.get("code_dtype", "<f4"))
        if dtype not in CODE_DTYPES:
            raise CorpusError(f"{self.manifest_path}: damaged manifest (code_dtype {dtype!r}); delete {self.path}")
        for index, entry in enumerate(manifest["chunks"]):
            start, _ = _record_range(entry)
            if start != expected_start:
                self._fail(index, f"starts at record {start}, after a chunk that ended at {expected_start}")
            if manifest.get("sparse"):
                chunk = self.load_sparse_chunk(index, entry, int(manifest["dimension"]), kept)
            else:
                chunk = self.load_chunk(index, entry, width, kept, dtype)
            expected_start = _record_range(entry)[1]
            yield chunk
        if expected_start != manifest["records_done"]:
            raise CorpusError(
                f"{self.manifest_path}: chunks cover {expected_start} records, the manifest counts "
                f"{manifest['records_done']}; delete {self.path} to start over"
            )

    def verify_chunks(self, manifest: Mapping[str, Any], kept: bool) -> None:
        """Check every chunk a resumed run would reuse, before any new work: a chunk that was changed, replaced
        or truncated makes the run refuse (`CorpusError`). Refusing, not recomputing: a chunk changed behind
        tokenpool's back means something else writes into the folder (or the disk corrupts data), so the rest
        of it cannot be trusted either; the user decides, by deleting the folder."""
        for _ in self.iter_chunks(manifest, kept):
            pass


def _record_range(entry: Any) -> tuple[int, int]:
    records = entry.get("records") if isinstance(entry, Mapping) else None
    if (
        not isinstance(records, list)
        or len(records) != 2
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in records)
        or not 0 <= records[0] <= records[1]
    ):
        raise CorpusError(f"damaged manifest: chunk entry {entry!r:.120} has no valid record range")
    return records[0], records[1]
