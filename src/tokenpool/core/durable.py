"""Durable renames: a folder's entries flushed to disk (`sync_dir`), for every layer that renames a file into
place (`tokenpool.io.writers.replace_synced`), and a whole file put in place by one rename (`write_whole`: a
calibration file, an evaluation's chart, a work folder's manifest and chunks)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets

__all__ = ["sync_dir", "write_whole"]

_LONG_NAME = 200  # bytes of a name whose temporary (".NAME.PID.HEX8.tmp": 25 bytes more) is named by a hash


def write_whole(path: str | os.PathLike[str], data: bytes, temporary: str | os.PathLike[str] | None = None) -> None:
    """``data`` written to a new file beside ``path`` (a name no file has, created exclusively, with the mode any
    new file gets), synced, renamed over ``path``, the folder synced: ``path`` holds its old content or all of
    ``data``, never part, even after a power cut; nothing is left behind when a write fails. ``temporary``: that
    new file's fixed name instead, one its caller owns (a kill may have left it: it is replaced). A long name's
    temporary is named by a hash of it, so a legal name near the 255-byte limit stays legal."""
    folder, name = os.path.split(os.path.abspath(path))
    if temporary is not None:  # (a kill's leftover; a link put there is unlinked, never written through)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    stem = name if len(os.fsencode(name)) <= _LONG_NAME else hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    temporary = temporary or os.path.join(folder, f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:  # (from here the new file is ours to remove)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    sync_dir(folder)


def sync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush ``folder``'s entries to disk: a rename into or out of it is durable only then (a power cut could
    otherwise undo it, or lose the file it moved). Skipped quietly where a folder cannot be opened (Windows) or
    its filesystem cannot sync one (EINVAL); any other failure is raised."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)
