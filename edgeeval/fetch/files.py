"""Small file helpers shared by the fetch stages: opening model files, hashing, free space."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from edgeeval.errors import DiskSpaceError
from edgeeval.safeio import open_regular as open_regular  # re-exported: fetch's callers

_CHUNK = 1 << 20
#: Extra free space demanded beyond a download's own size (temp copies, fragmentation).
DISK_MARGIN_BYTES = 200 * 10**6


#: on_bytes(done, total): bytes hashed so far of the file's size (the CLI draws a bar)
OnBytes = Callable[[int, int], None]


def sha256_file(path: str | Path, on_bytes: OnBytes | None = None) -> str:
    """Hex sha256 of a regular file, read in 1 MiB chunks; `on_bytes` after each chunk."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        total, done = os.fstat(fh.fileno()).st_size, 0
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                done += len(chunk)
                on_bytes(done, total)
    return digest.hexdigest()


def ensure_free_space(directory: Path, needed_bytes: int) -> None:
    """Raise DiskSpaceError when `directory` has less than needed + margin free."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed_bytes + DISK_MARGIN_BYTES:
        raise DiskSpaceError(
            directory, needed_bytes=needed_bytes + DISK_MARGIN_BYTES, free_bytes=free
        )
