"""Small file helpers shared by the fetch stages: opening model files, hashing, free space."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from edgeeval.errors import DiskSpaceError, InvalidModelFileError

_CHUNK = 1 << 20
#: Extra free space demanded beyond a download's own size (temp copies, fragmentation).
DISK_MARGIN_BYTES = 200 * 10**6


def _kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading; only regular files (or links to them) are accepted.

    The open is non-blocking, so a FIFO cannot hang the caller; a directory, device, pipe or
    socket raises InvalidModelFileError saying which it is. A missing file raises
    FileNotFoundError. Returns a file object the caller closes.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidModelFileError(
                path, f"it is {_kind_of(mode)}, not a regular file; give the path of a .gguf file"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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
