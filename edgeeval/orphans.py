"""Children die with their parent: a leaf both the launcher (engine.process) and the sandbox
(sandbox.codeexec) use, so that a SIGKILLed bench leaves no worker, and no sandboxed check,
computing.

On Linux a child gets PR_SET_PDEATHSIG=SIGKILL before it execs (`child_setup`, a preexec_fn)
or first thing after it starts (`die_with_parent`); elsewhere (macOS) a watchdog thread kills a
Python child whose parent changes (`watch_parent`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux (looked up once, so the forked child only calls it), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def child_setup(parent_pid: int) -> Callable[[], None] | None:
    """The preexec_fn for a child (run_child's, the sandbox's): on Linux, SIGKILL when the
    parent dies.

    Runs in the forked child before exec; the setting survives exec. The getppid check
    closes the race where the parent died between fork and prctl (the child would already
    have been reparented, and the signal would never come). Note: Linux sends the signal
    when the *thread* that started the child exits, so run_child is called from threads that
    outlive their children (the main thread everywhere in edgeeval). Returns None elsewhere.
    """
    prctl = _PRCTL
    if prctl is None:
        return None

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


def die_with_parent(poll_s: float = 0.5) -> None:
    """Called first thing in a child process: end it when its parent dies.

    Linux: PR_SET_PDEATHSIG=SIGKILL (the kernel kills this process when the parent dies).
    Elsewhere (macOS): a daemon thread watches getppid() and kills this process when the
    parent changes (an orphan is reparented to launchd, pid 1). Returns at once.
    """
    parent = os.getppid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return
    if parent == 1:  # already orphaned before we looked
        os.kill(os.getpid(), signal.SIGKILL)
    watch_parent(parent, poll_s)


def watch_parent(parent_pid: int, poll_s: float = 0.5) -> threading.Thread:
    """Start a daemon thread that SIGKILLs this process once its parent is no longer
    `parent_pid`; returns the thread."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="edgeeval-parent-watch", daemon=True)
    thread.start()
    return thread
