"""tokenpool's version, and a digest of the code that is running (one version number can cover many builds)."""

from __future__ import annotations

import functools

__version__ = "0.1.0"


@functools.cache
def source_digest() -> str:
    """The first 16 hex digits of a SHA-256 of tokenpool's own Python sources (paths and bytes): a resumed job
    refuses a partial run written by other code, even under the same version number."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        name, content = path.relative_to(root).as_posix().encode(), path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(content)) + content)
    return digest.hexdigest()[:16]
