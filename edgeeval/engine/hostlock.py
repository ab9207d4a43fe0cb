"""One bench measures at a time per host: an advisory lock file held for the whole run.

Two benches on one machine share its cores and memory bandwidth, and every speed of both comes
out low without any sign of it. `acquire` takes an exclusive flock on EDGEEVAL_HOME/bench.lock
and writes the holder's pid and run id into it. The kernel drops the lock when the holder's
file is closed or the process dies (even by SIGKILL), so a killed bench never leaves a stale
lock. A second bench is refused with the first's pid (HostBusyError), or, with `wait`, blocks
until the first finishes. The lock is per EDGEEVAL_HOME: benches of users with different
homes do not see each other. Where fcntl is missing (Windows) there is no lock.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import TracebackType

from edgeeval import settings
from edgeeval.errors import HostBusyError
from edgeeval.text import Progress

try:
    import fcntl
except ImportError:  # pragma: no cover - not Linux or macOS
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "bench.lock"


def lock_path() -> Path:
    """The bench lock file of this EDGEEVAL_HOME."""
    return settings.home() / LOCK_NAME


class BenchLock:
    """A held bench lock; release() (or leaving the with-block) lets the next bench start."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)  # closing the file releases the flock
            self.fd = None

    def __enter__(self) -> BenchLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def holder(path: Path) -> tuple[int | None, str]:
    """(pid, run id) written by the lock's holder; (None, "") when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
        return (int(data["pid"]) if data.get("pid") else None), str(data.get("run_id", ""))
    except (OSError, ValueError, TypeError):
        return None, ""


def acquire(
    run_id: str = "",
    *,
    wait: bool = False,
    progress: Progress = lambda _: None,
    path: Path | None = None,
) -> BenchLock:
    """Take the host's bench lock for run `run_id`; returns the held lock.

    Raises HostBusyError naming the holder's pid when another bench holds it, unless `wait`,
    in which case it says so through `progress` and blocks until the holder is done."""
    path = path or lock_path()
    if fcntl is None:
        return BenchLock(path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, other_run = holder(path)
            if not wait:
                raise HostBusyError(pid=pid, run_id=other_run, path=path) from None
            progress(
                f"waiting for the bench of pid {pid or '?'} to finish (lock {path}); "
                "Ctrl-C to give up"
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = {"pid": os.getpid(), "run_id": run_id, "since": time.strftime(settings.ISO_TIME)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(stamp).encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return BenchLock(path, fd)
