"""The work folder beside an output being written: numbered chunk files, a manifest, a lock.

A chunk file is renamed into place before the manifest that counts it, and the manifest is itself replaced
atomically, so after a kill (even SIGKILL) the manifest describes only complete chunks and a resumed run loses
at most the chunk that was in flight.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorpusError

MANIFEST_VERSION = 1
_MANIFEST_KEYS = frozenset(
    {"options", "chunk_size", "dimension", "chunks_done", "records_done", "rows_done", "prefix_sha256", "runs"}
)
WORK_SUFFIX = ".tokenpool-partial"


def work_dir_for(output: str | os.PathLike[str]) -> Path:
    """The work folder of ``output``: ``<output>.tokenpool-partial`` in the same folder (same filesystem)."""
    out = Path(output)
    return out.with_name(out.name + WORK_SUFFIX)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class WorkDir:
    """Chunks and manifest of one output; use as a context manager to hold its lock."""

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = Path(output)
        self.path = work_dir_for(output)
        self._lock: Any = None

    # -- lifetime
    def __enter__(self) -> WorkDir:
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise CorpusError(f"cannot create the work folder {self.path} ({exc.strerror or exc})") from None
        self._lock = open(self.path / "lock", "a+b")  # noqa: SIM115 - held until __exit__
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, the user must not run two jobs on one output
            return self
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise CorpusError(
                f"another tokenpool process is writing {self.output} (lock held on {self.path})"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def remove(self) -> None:
        """Delete the work folder (after the output is in place)."""
        shutil.rmtree(self.path, ignore_errors=True)

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
        return data

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        _write_atomic(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        """Forget every chunk (a fresh start in an existing folder)."""
        for child in self.path.iterdir():
            if child.name != "lock":
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    # -- chunks
    def chunk_path(self, index: int, kind: str = "vectors") -> Path:
        return self.path / f"chunk-{index:06d}.{kind}.npy"

    def write_chunk(self, index: int, vectors: np.ndarray, kept: np.ndarray | None = None) -> None:
        """Store chunk ``index``: float32 vectors and, with --skip-empty, the kept (record index, line) pairs."""
        if kept is not None:
            self._save(self.chunk_path(index, "kept"), kept.astype(np.int64))
        self._save(self.chunk_path(index), vectors.astype(np.float32, copy=False))

    def _save(self, path: Path, array: np.ndarray) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def iter_chunks(
        self, count: int, chunk_size: int, kept: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
        """Yield ``(record indices, kept line numbers or None, vectors)`` per chunk, one in memory at a time."""
        for index in range(count):
            try:
                vectors = np.load(self.chunk_path(index), allow_pickle=False)
                if kept:
                    pairs = np.load(self.chunk_path(index, "kept"), allow_pickle=False)
                    ids, lines = pairs[0], pairs[1]
                else:
                    ids = np.arange(index * chunk_size, index * chunk_size + len(vectors), dtype=np.int64)
                    lines = None
            except (OSError, ValueError) as exc:
                raise CorpusError(
                    f"{self.path}: chunk {index} is missing or damaged ({exc}); delete the folder to "
                    f"start over"
                ) from None
            yield ids, lines, vectors
