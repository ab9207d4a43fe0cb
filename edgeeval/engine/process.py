"""Run a child process and sample its memory from outside: the one launcher every stage uses.

`run_child` starts a command, reads its progress lines (one `Event` as JSON per line), samples
its RSS (and USS, from /proc smaps_rollup on Linux; the macOS footprint; NVML device memory)
every `interval_s`, kills it when a limit fires, and reaps it with wait4 so the kernel's own
peak RSS is kept as a cross-check. Two limits: `stall_s`, no progress event for that many
seconds (the child is stuck, whatever its size), and `timeout_s`, the whole run's wall time
(optional); the outcome names the one that fired. It knows nothing about models or stages: the
bench runner, the fidelity passes and the quantizer all start their children through it.

Children die with their parent: on Linux every child of run_child gets PR_SET_PDEATHSIG=SIGKILL
before it execs (and kills itself if the parent is already gone), so a SIGKILLed bench leaves no
worker computing. Python children also call `die_with_parent()` first thing, which on other
systems (macOS) starts a watchdog thread that kills the process when its parent changes.
Scratch directories a parent makes for a child come from `owned_tempdir()` (named with the
owner's pid); a parent killed before it could remove one leaves it behind, and
`sweep_stale_tempdirs()` removes those whose owner is dead at the next bench.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import psutil

from edgeeval.engine.memprobe import NvmlReader, macos_footprint
from edgeeval.orphans import child_setup

#: How often the sampler reads the child's RSS.
SAMPLE_INTERVAL_S = 0.02
#: USS is read every this many RSS samples (2 s at the 20 ms interval).
USS_EVERY = 100


#: The limits a ChildOutcome names in `limit`.
LIMIT_STALL, LIMIT_TIMEOUT = "stall", "timeout"


@dataclass(frozen=True)
class Event:
    """One progress line from a child to run_child's `on_event`: `kind` says what happened,
    the other fields what it is about (unset fields keep their defaults and are not sent).

    The bench worker sends loading, loaded (`seconds`: the load time), speed (`test`,
    `threads`), accuracy (`eval_batch`, `planned`: items of all tasks), task (`task`, `index`
    of `total`), items (`task`, `done` of `planned` items, `seconds` since the task started)
    (`fresh` of them scored by this attempt) after each journalled chunk, scoring (the same
    fields, inside a chunk, at most once a second: progress only), working (`done`: decodes
    so far, sent while llama.cpp makes progress between those) and done; fidelity passes
    send chunk (`index` of `total`). Any event resets the stall limit."""

    kind: str
    task: str = ""
    test: str = ""
    index: int = 0
    total: int = 0
    done: int = 0
    planned: int = 0
    fresh: int = 0
    seconds: float | None = None
    threads: int = 0
    eval_batch: int = 0
    detail: str = ""

    def to_line(self) -> str:
        data = {"event": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "kind" and value != f.default:
                data[f.name] = value
        return json.dumps(data)

    @classmethod
    def from_line(cls, line: str) -> Event | None:
        """The event on `line`; None for anything else (native code writes to stdout too).
        Keys this version does not know are dropped."""
        try:
            data = json.loads(line)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            return None
        known = {f.name for f in fields(cls)} - {"kind"}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            return cls(kind=data["event"], **kwargs)
        except TypeError:
            return None


_EMIT_LOCK = threading.Lock()


def emit(event: Event | str, **fields: Any) -> None:
    """The child's side of the protocol: one Event (or `Event(event, **fields)`) as a JSON
    line on stdout for run_child (whole lines, from any thread). An unknown field is a
    TypeError here, in the child."""
    sent = event if isinstance(event, Event) else Event(event, **fields)
    with _EMIT_LOCK:
        sys.stdout.write(sent.to_line() + "\n")
        sys.stdout.flush()


@dataclass
class ChildOutcome:
    returncode: int | None = None
    signal: int | None = None
    timed_out: bool = False  # a limit fired and the child was killed; `limit` says which
    limit: str = ""  # LIMIT_STALL or LIMIT_TIMEOUT
    limit_s: float = 0.0  # the limit that fired, in seconds
    peak_rss_bytes: int = 0
    peak_uss_bytes: int = 0
    peak_footprint_bytes: int | None = None
    peak_gpu_bytes: int | None = None
    os_maxrss_bytes: int = 0
    rss_after_load_bytes: int = 0
    rss_before_accuracy_bytes: int | None = None  # peak until the child's "accuracy" event
    gpu_before_accuracy_bytes: int | None = None  # the same for the device memory (NVML)
    n_samples: int = 0
    duration_s: float = 0.0
    events: list[Event] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def last_event(self) -> Event | None:
        return self.events[-1] if self.events else None


def maxrss_bytes(ru_maxrss: int, platform: str = sys.platform) -> int:
    """ru_maxrss is KiB on Linux but bytes on macOS."""
    return ru_maxrss if platform == "darwin" else ru_maxrss * 1024


def read_vm_hwm(pid: int) -> int | None:
    """The kernel's resident high-water mark of `pid` (VmHWM in /proc/PID/status), Linux only.

    Why not ru_maxrss from wait4: Linux carries the parent's high-water mark into the child
    through fork and keeps it across exec, so a child started from a big process (a test
    runner that loaded a model) would report the parent's peak. VmHWM belongs to the
    process's own address space, created at exec.
    """
    return read_rss_hwm(pid)[1]


def read_rss_hwm(pid: int) -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) of `pid` in bytes from one read of /proc/PID/status (Linux; (None, None)
    elsewhere or once the process is gone). One read for both keeps the sampler's own CPU time
    small: it shares the cores with the process it measures."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) * 1024
                    if len(found) == 2:
                        break
    except (OSError, ValueError, IndexError):
        return None, None
    return found.get("VmRSS"), found.get("VmHWM")


def _read_lines(stream: Any, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _peak(old: int | None, new: int | None) -> int | None:
    if new is None:
        return old
    return new if old is None else max(old, new)


class _Sampler:
    """Peak memory readings of one process. RSS and the kernel's high-water mark every tick
    (one read of /proc/PID/status on Linux); the macOS footprint and CUDA device memory are
    costlier reads, taken every 4th tick; USS walks every page of the process (8 ms for a
    0.6 GB model process here) and is taken every USS_EVERY-th tick. The sampler shares the
    cores with the process it measures: watching a 0.5 GB process at 20 ms ticks, it took
    4.0 % of a core with USS every 0.5 s and two reads per tick, 2.3 % now."""

    def __init__(self, pid: int, *, nvml: NvmlReader | None = None) -> None:
        self.pid = pid
        self.proc = psutil.Process(pid)
        self.nvml = nvml
        self.peak_rss = self.peak_uss = self.n = 0
        self.peak_footprint: int | None = None
        self.peak_gpu: int | None = None
        self.vm_hwm: int | None = None

    def sample(self) -> None:
        try:
            rss, hwm = read_rss_hwm(self.pid)
            if rss is None:  # not Linux (or /proc unreadable): psutil's reading
                rss = self.proc.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)
            self.vm_hwm = _peak(self.vm_hwm, hwm)
            if self.n % 4 == 0:
                self._slow_readings()
            if self.n % USS_EVERY == 0:
                self.peak_uss = max(self.peak_uss, self.proc.memory_full_info().uss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        self.n += 1

    def _slow_readings(self) -> None:
        self.peak_footprint = _peak(self.peak_footprint, macos_footprint(self.pid))
        if self.nvml is not None:
            self.peak_gpu = _peak(self.peak_gpu, self.nvml.process_bytes(self.pid))


@dataclass(frozen=True)
class Limits:
    """When run_child kills its child: after `stall_s` seconds without a progress event, or
    `timeout_s` after the start (None: either limit off)."""

    stall_s: float | None = None
    timeout_s: float | None = None


class _Clock:
    """The two deadlines of one child: the stall deadline moves with every event."""

    def __init__(self, limits: Limits, start: float) -> None:
        self.limits = limits
        self.start = self.last_event = start

    def fired(self, now: float) -> tuple[str, float] | None:
        """(limit, seconds) of the limit that has passed at `now`, else None."""
        stall, total = self.limits.stall_s, self.limits.timeout_s
        if total is not None and now - self.start > total:
            return LIMIT_TIMEOUT, total
        if stall is not None and now - self.last_event > stall:
            return LIMIT_STALL, stall
        return None


def run_child(
    cmd: list[str],
    *,
    timeout_s: float | None = None,
    stall_s: float | None = None,
    interval_s: float = SAMPLE_INTERVAL_S,
    on_event: Callable[[Event], None] = lambda e: None,
    env: dict[str, str] | None = None,
    nvml: NvmlReader | None = None,
) -> ChildOutcome:
    """Run `cmd`, sampling its memory every `interval_s` until it exits or is killed: when
    `stall_s` seconds pass without a progress event, or `timeout_s` after the start (each None:
    off). The outcome's `limit` names the one that fired."""
    with tempfile.TemporaryFile(mode="w+") as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            preexec_fn=child_setup(os.getpid()),
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        outcome = ChildOutcome()
        try:
            sampler = _Sampler(proc.pid, nvml=nvml)
            clock = _Clock(Limits(stall_s=stall_s, timeout_s=timeout_s), start)
            status, usage = _watch(proc, sampler, lines, outcome, on_event, clock, interval_s)
        except BaseException:  # Ctrl-C or a bug here: the child must not outlive this call
            _kill_and_reap(proc.pid)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it ourselves
        _drain(lines, outcome, on_event)
        outcome.duration_s = time.monotonic() - start
        outcome.peak_rss_bytes, outcome.peak_uss_bytes = sampler.peak_rss, sampler.peak_uss
        outcome.n_samples = sampler.n
        outcome.peak_footprint_bytes, outcome.peak_gpu_bytes = (
            sampler.peak_footprint,
            sampler.peak_gpu,
        )
        # the kernel's own peak: VmHWM on Linux (see read_vm_hwm), ru_maxrss elsewhere
        outcome.os_maxrss_bytes = sampler.vm_hwm or maxrss_bytes(usage.ru_maxrss)
        if os.WIFSIGNALED(status):
            outcome.signal = os.WTERMSIG(status)
        else:
            outcome.returncode = os.WEXITSTATUS(status)
        err.seek(0)
        outcome.stderr_tail = "\n".join(err.read().strip().splitlines()[-20:])[-4000:]
    return outcome


def _watch(
    proc: Any,
    sampler: _Sampler,
    lines: queue.Queue,
    outcome: ChildOutcome,
    on_event: Callable,
    clock: _Clock,
    interval_s: float,
) -> tuple[int, Any]:
    while True:
        sampler.sample()
        if _drain(lines, outcome, on_event, sampler):
            clock.last_event = time.monotonic()
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage
        fired = clock.fired(time.monotonic())
        if fired is not None:
            outcome.timed_out = True
            outcome.limit, outcome.limit_s = fired
            os.kill(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            return status, usage
        time.sleep(interval_s)


def _drain(
    lines: queue.Queue, outcome: ChildOutcome, on_event: Callable, sampler: _Sampler | None = None
) -> int:
    """Hand every queued event to `on_event`; returns how many there were."""
    n = 0
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return n
        if not line:
            continue
        event = Event.from_line(line)
        if event is None:
            continue  # stray output from native code
        n += 1
        if event.kind == "loaded" and sampler is not None:
            outcome.rss_after_load_bytes = sampler.peak_rss
        if event.kind == "accuracy" and sampler is not None:
            outcome.rss_before_accuracy_bytes = sampler.peak_rss
            outcome.gpu_before_accuracy_bytes = sampler.peak_gpu
        outcome.events.append(event)
        on_event(event)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# --- scratch directories a parent makes for its children ---------------------------------

TEMP_PREFIX = "edgeeval-"
_OWNED = re.compile(rf"^{TEMP_PREFIX}(\d+)-")


@contextmanager
def owned_tempdir(root: Path | None = None) -> Iterator[Path]:
    """A fresh temporary directory named edgeeval-<pid>-<random>, removed when the block
    ends. If this process is killed first, sweep_stale_tempdirs removes it later."""
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=root) as tmp:
        yield Path(tmp)


def _owner_alive(pid: int, directory: Path) -> bool:
    """True when `pid` runs and could have made `directory` (it started before the
    directory was last modified; a reused pid started later)."""
    try:
        started = psutil.Process(pid).create_time()
        return started <= directory.stat().st_mtime + 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except (psutil.AccessDenied, OSError):
        return True  # not ours to judge: leave it


def _ours(entry: Path) -> bool:
    """A real directory (not a link) owned by this user."""
    try:
        st = entry.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def sweep_stale_tempdirs(root: Path | None = None) -> list[Path]:
    """Remove owned_tempdir directories (in `root`, default the system temp dir) whose owner
    process is dead; returns the directories removed."""
    base = Path(root or tempfile.gettempdir())
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _OWNED.match(entry.name)
        if not match or not _ours(entry):
            continue
        if int(match.group(1)) == os.getpid() or _owner_alive(int(match.group(1)), entry):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed
