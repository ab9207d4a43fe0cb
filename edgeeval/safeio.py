"""Opening files that a user or a hostile store may hand us: regular files only, never a hang.

A leaf, so every stage (GGUF reading, the store, the catalog) opens files the same way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from edgeeval.errors import InvalidModelFileError


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
