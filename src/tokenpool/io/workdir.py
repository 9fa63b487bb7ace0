"""The work folder beside an output being written: numbered chunk files, a manifest, a lock, an owner marker.

The job touches only what it created: ``<output>.tokenpool-partial`` gets its owner marker before its final
name (any other path of that name is refused, untouched), and inside it the job creates and deletes only the
names it gives. Resume verifies what it reuses (each chunk file's sha256, its record range, its parts against
the `RowSchema`, the manifest's own sha256) and refuses anything else. A chunk file is renamed into place
before the (atomically replaced) manifest counts it, and every rename is synced, so a kill or a power cut
leaves a manifest of complete chunks. A staging folder ``<work>.new-<pid>`` left by a run killed while it
created the folder is removed by the next run when provably that process's only (`_not_removable`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..core.durable import sync_dir, write_whole
from ..errors import CorpusError, is_int
from .readers import where
from .rows import RowSchema

MANIFEST_VERSION = 3
_MANIFEST_KEYS = frozenset(("options", "chunk_size", "dimension", "chunks_done", "records_done", "rows_done",
                            "items_done", "has_ids", "prefix_sha256", "runs", "chunks"))  # fmt: skip
DIGEST_KEY = "manifest_sha256"  # the manifest's own content, so that no field can be edited between runs
WORK_SUFFIX = ".tokenpool-partial"
OWNER_FILE = "tokenpool-work-folder.json"
OWNER_KIND = "tokenpool work folder"
# the only names the job ever creates inside its folder (and so the only ones it deletes)
_OWN_NAMES = re.compile(
    r"^(lock|manifest\.json|output\.[a-z]+|output\.(lines\.txt|chunks\.jsonl|tokens\.jsonl|calibration\.json)"
    r"|chunk-[0-9]{6,}\.[a-z_]+\.(npy|json))(\.tmp)?$"
)
_IN_PLACE = re.compile(r"(^output\.|\.tmp$)")  # the names the job opens for writing (others are renamed over)
_PART = re.compile(r"^[a-z_]+\.(npy|json)$")
# a job takes its lock in _LOCK_TRIES tries _LOCK_WAIT seconds apart: a probe's shared lock lasts an instant
_LOCK_TRIES, _LOCK_WAIT = 50, 0.02
_STAGING = ".new-"  # + the creating process's id: the work folder's name while `WorkDir._create` makes it


def beside(output: str | os.PathLike[str], suffix: str) -> Path:
    """``<output><suffix>``: a side file (or folder) of ``output``, in its folder (so on its filesystem)."""
    out = Path(output)
    return out.with_name(out.name + suffix)


def work_dir_for(output: str | os.PathLike[str]) -> Path:
    """The work folder of ``output``: ``<output>.tokenpool-partial`` in the same folder (same filesystem)."""
    return beside(output, WORK_SUFFIX)


def check_output_name(output: str | os.PathLike[str]) -> None:
    """`CorpusError` naming ``output`` when the work folder beside it, or the name it is made under
    (``<work folder>.new-<this process's id>``), would be too long for the folder's file system."""
    work = work_dir_for(output)
    try:
        limit = os.pathconf(work.parent, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # (no pathconf: Windows; a missing folder is refused later)
        limit = 255
    longest = work.name if os.path.lexists(work) else f"{work.name}{_STAGING}{os.getpid()}"
    if len(os.fsencode(longest)) > limit:
        raise CorpusError(
            f"{where(output)}: the output's name is too long: its work folder is made as {where(longest)}, "
            f"{len(os.fsencode(longest))} bytes, over the {limit} its folder allows; name a shorter output"
        )


def write_atomic(path: Path, data: bytes) -> None:
    """`write_whole` through the work folder's own temporary name ``NAME.tmp`` (`_OWN_NAMES`, and what a
    staging folder's sweep accepts): readers see the old or new file."""
    write_whole(path, data, temporary=path.with_name(path.name + ".tmp"))


def check_work_dir(path: Path) -> bool:
    """True when ``path`` is a tokenpool work folder, False when nothing is there; `CorpusError` (and nothing
    touched) when something else is: a symlink, a file, or a folder without tokenpool's owner marker."""
    if path.is_symlink():
        raise CorpusError(
            f"{where(path)} is a symlink, not a tokenpool work folder; refusing to write through it (remove it, "
            f"or name another output)"
        )
    if not path.exists():
        return False
    if not path.is_dir():
        raise CorpusError(
            f"{where(path)} exists and is not a tokenpool work folder (a file); refusing to touch it (move it "
            f"away, or name another output)"
        )
    marker = path / OWNER_FILE
    try:
        owner = json.loads(marker.read_bytes()) if marker.is_file() and not marker.is_symlink() else None
    except (OSError, ValueError, RecursionError):  # JSON nested too deeply: not ours
        owner = None
    if not (isinstance(owner, dict) and owner.get("kind") == OWNER_KIND):
        raise CorpusError(
            f"{where(path)} exists but is not a tokenpool work folder (no {OWNER_FILE}); refusing to touch it "
            f"(move it away, or name another output)"
        )
    return True


class WorkDir:
    """Chunks and manifest of one output; use as a context manager to hold its lock."""

    def __init__(self, output: str | os.PathLike[str], log: Callable[[str], None] | None = None) -> None:
        self.output = Path(output)
        self.path = work_dir_for(output)
        self._lock: Any = None
        self._log = log or (lambda message: print(f"tokenpool: {message}", file=sys.stderr))

    def __enter__(self) -> WorkDir:
        self._sweep_staging()
        if check_work_dir(self.path):
            self._check_own_names()
        else:
            self._create()
        self._lock = open(self.path / "lock", "a+b")  # noqa: SIM115 - held until __exit__
        try:
            self._take_lock(self._lock, exclusive=True)
        except CorpusError:
            self.__exit__()
            raise
        return self

    def check_unlocked(self) -> None:
        """`CorpusError` when another process holds the folder's lock (writes its output), or a name the job
        creates there is no file of its own (`_check_own_names`): `__enter__`'s checks, for before a model loads.
        The probe takes and releases a shared lock on a regular lock file only (no pipe or link is opened)."""
        lock = self.path / "lock"
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(lock).st_mode):
                flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                with open(os.open(lock, flags), "rb") as fh:
                    self._take_lock(fh, exclusive=False)
        self._check_own_names()

    def _take_lock(self, fh: Any, exclusive: bool) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, the user must not run two jobs on one output
            return
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        for attempt in range(_LOCK_TRIES if exclusive else 1):  # (a job waits out another run's probe)
            if attempt:
                time.sleep(_LOCK_WAIT)
            try:
                fcntl.flock(fh.fileno(), flags)
                return
            except (BlockingIOError, PermissionError):  # held (NFS's emulated flock may say EACCES)
                continue
            except OSError as exc:  # no lock at all there (NFS without its lock service: ENOLCK)
                raise CorpusError(
                    f"cannot lock {where(self.path / 'lock')} ({exc.strerror or exc}), the lock that keeps two "
                    f"tokenpool processes off one output; write {where(self.output)} on a file system with locks"
                ) from None
        raise CorpusError(
            f"another tokenpool process is writing {where(self.output)} (lock held on {where(self.path)})"
        )

    def _create(self) -> None:
        """Make the folder under a temporary name, mark it as ours, then give it its final name (synced: the
        rename survives a power cut). A staging folder already there is not this job's: it is left alone."""
        pid, shown = os.getpid(), where(self.path)
        staging = self.path.with_name(f"{self.path.name}{_STAGING}{pid}")
        try:
            staging.mkdir()
        except FileExistsError:
            raise CorpusError(
                f"{where(staging)} is in the way (named with this process's id, left by an earlier process that "
                f"had it); left alone, rerun"
            ) from None
        except OSError as exc:
            raise CorpusError(f"cannot create the work folder {shown} ({exc.strerror or exc})") from None
        try:
            write_atomic(staging / OWNER_FILE, _owner_marker(self.output, pid))
            if os.path.lexists(self.path):  # created meanwhile by someone else: theirs, not ours
                raise FileExistsError(self.path)
            os.rename(staging, self.path)  # (onto a folder made since: ENOTEMPTY, or EEXIST)
        except OSError as exc:
            _discard(staging)
            if isinstance(exc, FileExistsError) or exc.errno == errno.ENOTEMPTY:
                raise CorpusError(f"{shown} appeared while this job was creating it; rerun") from None
            raise CorpusError(f"cannot create the work folder {shown} ({exc.strerror or exc})") from None
        sync_dir(self.path.parent)

    def _sweep_staging(self) -> None:
        """Remove the staging folders of runs killed while they created this output's work folder, when their
        process is gone and they hold only its owner marker (`_not_removable`); name each one left alone."""
        for staging, pid in _stagings(self.path):
            why = _not_removable(staging, self.output, pid) or _discard(staging)
            if why is None:
                self._log(f"removed {where(staging)}, left by a run killed while it created its work folder")
            else:
                self._log(
                    f"note: left {where(staging)} alone ({why}); it is named like the folder a tokenpool run "
                    f"makes while it creates {where(self.path.name)}: delete it yourself once nothing uses it"
                )

    def _check_own_names(self) -> None:
        """`CorpusError` (nothing touched) when a name the job creates in its folder is taken by a symlink or
        anything but a regular file, or a file it writes in place by a hard link (tokenpool makes none): the job
        would write through it into a file it did not create."""
        for child in self.path.iterdir():
            if not _OWN_NAMES.match(child.name):
                continue
            if child.is_symlink() or not child.is_file():
                why = "is a symlink or not a regular file"
            elif _IN_PLACE.search(child.name) and child.stat().st_nlink > 1:
                why = "is a hard link to another file"
            else:
                continue
            raise CorpusError(
                f"{where(child)} {why}, under a name tokenpool creates in its work folder; refusing to write "
                f"through it (remove it, or delete {where(self.path)} to start over)"
            )

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

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when no chunk was ever completed; a damaged one is a `CorpusError`."""
        try:
            data = json.loads(self.manifest_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            raise self._bad_manifest(f"unreadable manifest ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise self._bad_manifest(f"not a tokenpool manifest of version {MANIFEST_VERSION}")
        if data.get(DIGEST_KEY) != _digest(data):
            raise self._bad_manifest(
                f"changed after tokenpool wrote it (its content does not match its {DIGEST_KEY})"
            )
        del data[DIGEST_KEY]
        missing = sorted(_MANIFEST_KEYS - data.keys())
        if missing:
            raise self._bad_manifest(f"damaged manifest (no {', '.join(missing)})")
        if not isinstance(data["chunks"], list) or len(data["chunks"]) != data["chunks_done"]:
            raise self._bad_manifest("damaged manifest (chunk list)")
        return data

    def _bad_manifest(self, why: str) -> CorpusError:
        return CorpusError(f"{where(self.manifest_path)}: {why}; delete {where(self.path)} to start over")

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Replace the manifest atomically, with the sha256 of its content (checked by `read_manifest`)."""
        data = {**manifest, DIGEST_KEY: _digest(manifest)}
        write_atomic(self.manifest_path, json.dumps(data, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        """Forget every chunk (a fresh start in an existing folder): delete only the files the job names, the
        manifest first, so that a kill meanwhile leaves no manifest counting chunks already gone."""
        for child in sorted(self.path.iterdir(), key=lambda child: child.name != "manifest.json"):
            if child.name != "lock" and _OWN_NAMES.match(child.name) and child.is_file() and not child.is_symlink():
                child.unlink()

    # -- chunks: one file per part (.npy arrays, .json lists of texts), each with its sha256 in the manifest
    def write_chunk(self, index: int, start: int, stop: int, parts: Mapping[str, Any]) -> dict[str, Any]:
        """Store chunk ``index`` (input records ``start``..``stop``-1); returns its manifest entry: the record
        range and each file's sha256."""
        files = {}
        for key, value in parts.items():
            if isinstance(value, list):
                name, data = f"{key}.json", json.dumps(value).encode()
            else:
                buffer = io.BytesIO()
                np.save(buffer, value, allow_pickle=False)
                name, data = f"{key}.npy", buffer.getvalue()
            write_atomic(self.path / f"chunk-{index:06d}.{name}", data)
            files[name] = hashlib.sha256(data).hexdigest()
        return {"records": [int(start), int(stop)], "files": files}

    def read_chunk(self, index: int, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Chunk ``index``'s parts, each file checked against its sha256 in the manifest ``entry`` first."""
        files = entry.get("files")
        if not isinstance(files, Mapping) or not all(isinstance(n, str) and _PART.match(n) for n in files):
            self.refuse(index, "has no valid list of files in the manifest")
        parts = {}
        for name, expected in files.items():
            path = self.path / f"chunk-{index:06d}.{name}"
            try:
                data = path.read_bytes()
            except OSError as exc:
                self.refuse(index, f"cannot be read ({exc.strerror or exc})")
            if not isinstance(expected, str) or hashlib.sha256(data).hexdigest() != expected:
                self.refuse(index, f"{path.name} does not match its sha256 in the manifest (changed after it was written)")
            key, kind = name.rsplit(".", 1)
            try:
                parts[key] = json.loads(data) if kind == "json" else np.load(io.BytesIO(data), allow_pickle=False)
            except (OSError, ValueError) as exc:
                self.refuse(index, f"{path.name} is not readable ({exc})")
        return parts

    def refuse(self, index: int, why: str) -> NoReturn:
        """Refuse the whole folder because of chunk ``index`` (`CorpusError`, nothing deleted)."""
        shown = where(self.path)
        raise CorpusError(f"refusing to use chunk {index} of {shown}: it {why}; delete {shown} to start over")

    def iter_chunks(self, manifest: Mapping[str, Any], schema: RowSchema, complete: bool) -> Iterator[dict[str, Any]]:
        """Each chunk's parts, verified (`read_chunk`, `RowSchema.check`: ``complete`` when every record has
        its row; ranges following one another to the manifest's count), one in memory at a time. A chunk that
        fails is not recomputed: the run refuses (the folder cannot be trusted; the user deletes it)."""
        expected = 0
        for index, entry in enumerate(manifest["chunks"]):
            start, stop = _record_range(entry)
            if start != expected:
                self.refuse(index, f"starts at record {start}, after a chunk that ended at {expected}")
            parts = self.read_chunk(index, entry)
            missing = sorted({c.key for c in schema.stored} - parts.keys())
            why = f"has no {', '.join(missing)} file" if missing else schema.check(parts, start, stop, complete)
            if why:
                self.refuse(index, why)
            expected = stop
            yield parts
        if expected != manifest["records_done"]:
            done = manifest["records_done"]
            raise self._bad_manifest(f"chunks cover {expected} records, the manifest counts {done}")


def _owner_marker(output: Path, pid: int) -> bytes:
    """The owner marker process ``pid`` of this machine (host name) writes into the work folder of ``output``:
    what a staging folder left by a kill must hold, byte for byte, to be removed."""
    owner = {"kind": OWNER_KIND, "output": output.name, "pid": pid, "host": socket.gethostname()}
    return json.dumps(owner).encode()


def _stagings(work: Path) -> list[tuple[Path, int]]:
    """The paths named like a staging folder of ``work`` (``<work>.new-<pid>``), each with its process id."""
    prefix, found = work.name + _STAGING, []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(work.parent)):
            pid = name[len(prefix) :]
            if name.startswith(prefix) and pid.isascii() and pid.isdigit() and str(int(pid)) == pid:
                found.append((work.with_name(name), int(pid)))
    return found


def _process_gone(pid: int) -> str | None:
    """None when process ``pid`` no longer runs on this machine; else why it may."""
    if sys.platform == "win32":  # os.kill would end the process, not probe it
        return f"whether process {pid} still runs cannot be told on Windows"
    if pid == os.getpid() or not 0 < pid < 2**31:
        return f"{pid} is this process's id" if pid == os.getpid() else f"{pid} is no process id"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        return f"process {pid} still runs, under another user"
    return f"process {pid} still runs: another tokenpool job may be creating the work folder"


def _not_removable(staging: Path, output: Path, pid: int) -> str | None:
    """None when ``staging`` provably holds only what `WorkDir._create` of process ``pid`` wrote there (its
    owner marker, or the marker's temporary file, whole or cut short by the kill) and that process is gone
    from this machine; else why it stays."""
    gone = _process_gone(pid)
    if gone is not None:
        return gone
    if staging.is_symlink() or not staging.is_dir():
        return "it is not a folder"
    expected = _owner_marker(output, pid)
    try:
        for child in staging.iterdir():
            if child.name not in (OWNER_FILE, OWNER_FILE + ".tmp") or child.is_symlink() or not child.is_file():
                return f"it holds {child.name}, which tokenpool does not put there"
            with open(child, "rb") as fh:
                data = fh.read(len(expected) + 1)
            if data != expected and (child.name == OWNER_FILE or not expected.startswith(data)):
                return f"its {child.name} is not the one process {pid} of this machine wrote"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    return None


def _discard(staging: Path) -> str | None:
    """Delete a staging folder of `WorkDir._create`: the owner marker files, then the folder if it is then
    empty (synced); None when it is gone, else why not."""
    if staging.is_symlink() or not staging.is_dir():
        return "it is not a folder"
    try:
        for name in (OWNER_FILE, OWNER_FILE + ".tmp"):
            (staging / name).unlink(missing_ok=True)
        staging.rmdir()
    except OSError as exc:
        return f"it could not be removed ({exc.strerror or exc})"
    sync_dir(staging.parent)
    return None


def _digest(manifest: Mapping[str, Any]) -> str:
    """The sha256 of a manifest's content (without its own digest), whatever its formatting."""
    body = {key: value for key, value in manifest.items() if key != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _record_range(entry: Any) -> tuple[int, int]:
    records = entry.get("records") if isinstance(entry, Mapping) else None
    if not (isinstance(records, list) and len(records) == 2 and all(is_int(r) for r in records)
            and 0 <= records[0] <= records[1]):  # fmt: skip
        raise CorpusError(f"damaged manifest: chunk entry {entry!r:.120} has no valid record range")
    return records[0], records[1]
