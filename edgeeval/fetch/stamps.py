"""Remembered sha256 of files edgeeval does not own (the Hugging Face cache, Ollama blobs,
LM Studio files, paths given on the command line), so a multi-GB file is hashed once, not on
every run.

A stamp lives in `EDGEEVAL_HOME/verified/` under a name derived from the file's resolved path;
it holds the path, size, modification time (ns) and inode. It is trusted only while all four
still match the file; any change (a re-download, an edit, a copy) means the file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edgeeval import settings


def _stamp_file(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return settings.home() / "verified" / f"{key}.json"


def _identity(path: Path) -> dict[str, object]:
    info = path.stat()  # follows links: the identity of the content's file
    return {
        "path": str(path.resolve()),
        "size_bytes": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "inode": info.st_ino,
    }


def known_sha256(path: Path) -> str | None:
    """The sha256 recorded for `path` when the file is unchanged since, else None."""
    stamp = _stamp_file(path)
    try:
        data = json.loads(stamp.read_text())
        identity = _identity(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in identity.items()):
        return None
    sha = data.get("sha256")
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def remember(path: Path, sha256: str) -> None:
    """Record that `path`, as it is now, has `sha256` (written atomically; best effort: a
    read-only EDGEEVAL_HOME only means hashing again next time)."""
    stamp = _stamp_file(path)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(stamp.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_identity(path), "sha256": sha256}))
        os.replace(tmp, stamp)
    except OSError:
        return
