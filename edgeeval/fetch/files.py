"""Small file helpers shared by the fetch stages: opening model files, hashing, free space."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from edgeeval.errors import DiskSpaceError
from edgeeval.safeio import open_regular as open_regular  # re-exported: fetch's callers

_CHUNK = 1 << 20
#: Extra free space demanded beyond a download's own size (temp copies, fragmentation).
DISK_MARGIN_BYTES = 200 * 10**6


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a regular file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_free_space(directory: Path, needed_bytes: int) -> None:
    """Raise DiskSpaceError when `directory` has less than needed + margin free."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed_bytes + DISK_MARGIN_BYTES:
        raise DiskSpaceError(
            directory, needed_bytes=needed_bytes + DISK_MARGIN_BYTES, free_bytes=free
        )
