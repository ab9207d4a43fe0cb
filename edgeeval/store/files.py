"""File primitives of the store that survive crashes, bad bytes and full disks.

- `check_run_id`: a run id names a directory under the reports dir, so it is a plain name.
- `append_line`: each append starts on a fresh line (a line torn by a crash never swallows
  the next record) and is fsynced.
- `read_jsonl`: torn or undecodable lines are skipped and counted (`Lines.skipped`). Only a
  regular file is read (a directory, FIFO or device is a StoreFileError, never a hang), a line
  at most MAX_LINE_BYTES (a longer one is skipped and counted) and MAX_JSONL_BYTES in all.
- `write_atomic`: a temporary file in the same directory, then os.replace: readers see the
  old file or the new one, never a 0-byte or half-written one.
- `storage_errors`: a full, read-only or forbidden disk becomes one `StorageError` line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from edgeeval import records as rec
from edgeeval import safeio, settings
from edgeeval.errors import InvalidRunIdError, StorageError, StoreFileError

T = TypeVar("T")
_RUN_ID = re.compile(r"(?!\.)[A-Za-z0-9._-]{1,100}")
_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: Bounds of one JSON-lines file of a run: per line, and in all.
MAX_LINE_BYTES = 16 << 20
MAX_JSONL_BYTES = 4 << 30
#: Bound of one whole-file read (run.json).
MAX_MANIFEST_BYTES = 16 << 20


def is_run_id(name: str) -> bool:
    """Whether `name` is a valid run id (see `check_run_id`)."""
    return isinstance(name, str) and _RUN_ID.fullmatch(name) is not None


def check_run_id(run_id: str) -> str:
    """Return `run_id` when it is a plain directory name (letters, digits, '.', '_', '-'; at
    most 100; no leading '.', so never '.' or '..'); raise InvalidRunIdError otherwise."""
    if not is_run_id(run_id):
        raise InvalidRunIdError(str(run_id))
    return run_id


def storage_error(path: Path, exc: OSError) -> StorageError | None:
    """The StorageError for a full/read-only/forbidden disk, or None for any other OSError."""
    reason = _STORAGE_ERRNOS.get(exc.errno or 0)
    return None if reason is None else StorageError(path, reason, errno_code=exc.errno)


@contextlib.contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """Turn a disk-full, read-only or permission OSError raised inside into a StorageError."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        error = storage_error(path, exc)
        if error is None:
            raise
        raise error from exc


def make_dir(directory: Path) -> Path:
    """Create `directory` (and parents) if needed; return it. When it, or a folder above it,
    is a file (not a directory), StorageError names that file and the variable that chose
    the place (EDGEEVAL_REPORTS for the reports dir)."""
    try:
        with storage_errors(directory):
            directory.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError) as exc:
        raise _not_a_directory(directory) from exc
    return directory


def _not_a_directory(directory: Path) -> StorageError:
    """The StorageError for a `directory` that cannot be made because it, or a folder above
    it, is something other than a directory."""
    blocker = next(
        (p for p in (directory, *directory.parents) if os.path.lexists(p) and not p.is_dir()),
        directory,
    )
    reports = settings.reports_dir()
    chosen = "EDGEEVAL_REPORTS" if os.environ.get("EDGEEVAL_REPORTS") else "the reports dir"
    inside = directory == reports or reports in directory.parents
    where = f" ({chosen} is {reports})" if inside else ""
    return StorageError(
        directory,
        f"{blocker} is a file, not a directory{where}",
        hint=(
            "set EDGEEVAL_REPORTS to a directory (or move that file away)"
            if inside
            else "move that file away or choose another place"
        ),
    )


def set_aside(path: Path, *, siblings: tuple[str, ...] = ()) -> Path:
    """Rename a damaged file to <name>.corrupt-<timestamp> (and each `<name><sibling>` file
    beside it the same way) so nothing is deleted; return the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    with storage_errors(path):
        path.replace(aside)
        for suffix in siblings:
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.replace(aside.with_name(aside.name + suffix))
    return aside


def append_line(path: Path, line: str) -> None:
    """Append `line` (one or more lines) and fsync. If the file does not end in a newline (a
    crash cut its last line), a newline is written first so the torn line stays on its own."""
    with storage_errors(path), open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        torn = False
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
        fh.write((b"\n" if torn else b"") + line.encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `data` (str as UTF-8) to `path` through a temporary file in the same directory
    and os.replace; on any failure the old file (or no file) stays. Returns `path`."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with storage_errors(path):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with open(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


class Lines(list[T], Generic[T]):
    """Items read from a JSON-lines file: a list, plus `path`, the number of `skipped` lines
    (torn, not UTF-8, not JSON, or not the expected shape) and the `first_problem`."""

    def __init__(
        self,
        items: Iterable[T] = (),
        *,
        path: Path | None = None,
        skipped: int = 0,
        first_problem: str = "",
    ) -> None:
        super().__init__(items)
        self.path = path
        self.skipped = skipped
        self.first_problem = first_problem


def parse_line(raw: bytes, cls: type[T]) -> T:
    """One record of type `cls` from one line; ValueError says why it is unreadable."""
    try:
        data: Any = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    try:
        return rec.from_dict(cls, data)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a {cls.__name__} ({exc})") from exc


def store_file_error(path: str | Path, reason: str) -> StoreFileError:
    """The error for a file of a run that cannot be read as a file (see `read_jsonl`)."""
    run = Path(path).parent.name
    return StoreFileError(
        path,
        reason,
        hint=f"run `edgeeval repair {run}`: it sets the file aside (nothing is deleted) and "
        "rebuilds the run's records from edgeeval.sqlite",
    )


def read_jsonl(path: Path, cls: type[T]) -> Lines[T]:
    """Records of type `cls`, one per line (empty when the file is missing). Unreadable lines
    (a kill mid-write, a bad byte, longer than MAX_LINE_BYTES) are skipped and counted in
    `.skipped`; blank lines are ignored. A path that is not a regular file (a directory, a FIFO,
    a device) or a file over MAX_JSONL_BYTES raises StoreFileError naming it."""
    if not path.exists():
        return Lines(path=path)
    out: list[T] = []
    skipped, first = 0, ""
    lines = safeio.regular_lines(
        path, max_line=MAX_LINE_BYTES, max_total=MAX_JSONL_BYTES, error=store_file_error
    )
    for number, raw in enumerate(lines, 1):
        if raw is None:
            skipped += 1
            first = first or f"{path.name} line {number}: longer than {MAX_LINE_BYTES:,} bytes"
            continue
        if not raw.strip():
            continue
        try:
            out.append(parse_line(raw, cls))
        except ValueError as exc:
            skipped += 1
            first = first or f"{path.name} line {number}: {exc}"
    return Lines(out, path=path, skipped=skipped, first_problem=first)
