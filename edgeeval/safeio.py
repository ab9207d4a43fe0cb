"""Opening files that a user or a hostile store may hand us: regular files only, never a hang,
never an unbounded read.

A leaf, so every stage (GGUF reading, the store, the catalog) opens files the same way:
- `open_regular`: a regular file (or a link to one) opened for binary reading; a directory,
  FIFO, device or socket is refused by what it is, and a FIFO cannot block the open.
- `read_regular`: the whole of such a file, at most `limit` bytes (more is refused).
- `regular_lines`: its lines, each at most `max_line` bytes (a longer one is reported, not
  kept) and at most `max_total` bytes in all (more is refused).
- `kind_of`: what a path that is not a regular file is, in words (for messages).
Each refusal is the caller's error: `error(path, reason)` builds it (default: the GGUF
reader's InvalidModelFileError).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from edgeeval.errors import InvalidModelFileError

#: Builds the caller's error from (path, reason).
ErrorFactory = Callable[[str | Path, str], Exception]
#: What a full, read-only or quota-bound disk is, in words (by errno).
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}
_CHUNK = 1 << 20


def _gguf_error(path: str | Path, reason: str) -> Exception:
    return InvalidModelFileError(path, f"{reason}; give the path of a .gguf file")


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


def kind_of(path: str | Path) -> str:
    """What `path` is when it is not a regular file: "a directory", "a named pipe (FIFO)", "a
    device", "a socket", "a link to a missing file", "missing"; "" for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a link to a missing file" if os.path.islink(path) else "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return "" if stat.S_ISREG(mode) else _kind_of(mode)


def open_regular(path: str | Path, *, error: ErrorFactory | None = None) -> BinaryIO:
    """`path` opened for binary reading; only regular files (or links to them) are accepted.

    The open is non-blocking, so a FIFO cannot hang the caller; a directory, device, pipe or
    socket raises `error(path, "it is a directory, not a regular file")` (default: an
    InvalidModelFileError). A missing file raises FileNotFoundError. Returns a file object the
    caller closes.
    """
    refuse = error or _gguf_error
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:  # Windows and some systems refuse to open a directory at all
        raise refuse(path, "it is a directory, not a regular file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(path, f"it is {_kind_of(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, *, limit: int, error: ErrorFactory | None = None) -> bytes:
    """The bytes of the regular file `path`, refused (by `error`) when larger than `limit`."""
    refuse = error or _gguf_error
    with open_regular(path, error=refuse) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise refuse(path, f"it is larger than {limit:,} bytes, more than edgeeval reads")
    return data


def regular_lines(
    path: str | Path, *, max_line: int, max_total: int, error: ErrorFactory | None = None
) -> Iterator[bytes | None]:
    """The lines of the regular file `path` without their newlines; a line longer than
    `max_line` bytes comes out as None (read past, never kept). More than `max_total` bytes in
    all raises `error(path, ...)`."""
    refuse = error or _gguf_error
    total = 0
    with open_regular(path, error=refuse) as fh:
        while True:
            line = fh.readline(max_line + 1)
            if not line:
                return
            total += len(line)
            too_long = len(line) > max_line and not line.endswith(b"\n")
            while too_long and not line.endswith(b"\n"):  # read to the end of the long line
                line = fh.readline(_CHUNK)
                total += len(line)
                if not line or total > max_total:
                    break
            if total > max_total:
                raise refuse(
                    path, f"it is larger than {max_total:,} bytes, more than edgeeval reads"
                )
            yield None if too_long else line.rstrip(b"\n")
