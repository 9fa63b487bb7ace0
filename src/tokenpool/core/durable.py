"""Durable renames: a folder's entries flushed to disk (`sync_dir`), for every layer that renames a file into
place (`tokenpool.io.writers.replace_synced`, `tokenpool.core.quantize.Calibration.save`)."""

from __future__ import annotations

import errno
import os

__all__ = ["sync_dir"]


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
