"""Run a child process and sample its memory from outside: the one launcher every stage uses.

`run_child` starts a command, reads its JSON progress lines, samples its RSS (and USS, from
/proc smaps_rollup on Linux; the macOS footprint; NVML device memory) every `interval_s`, kills
it at the timeout, and reaps it with wait4 so the kernel's own peak RSS is kept as a
cross-check. It knows nothing about models or stages: the bench runner, the fidelity passes and
the quantizer all start their children through it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from edgeeval.engine.memprobe import NvmlReader, macos_footprint

#: How often the sampler reads the child's RSS.
SAMPLE_INTERVAL_S = 0.02


def emit(event: str, **fields: Any) -> None:
    """The child's side of the protocol: one JSON progress line on stdout for run_child."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass
class ChildOutcome:
    returncode: int | None = None
    signal: int | None = None
    timed_out: bool = False
    peak_rss_bytes: int = 0
    peak_uss_bytes: int = 0
    peak_footprint_bytes: int | None = None
    peak_gpu_bytes: int | None = None
    os_maxrss_bytes: int = 0
    rss_after_load_bytes: int = 0
    rss_before_accuracy_bytes: int | None = None  # peak until the child's "accuracy" event
    n_samples: int = 0
    duration_s: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr_tail: str = ""


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
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_lines(stream: Any, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _peak(old: int | None, new: int | None) -> int | None:
    if new is None:
        return old
    return new if old is None else max(old, new)


class _Sampler:
    """Peak memory readings of one process. RSS every tick; USS, the macOS footprint and CUDA
    device memory are costlier reads and are taken every 4th tick."""

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
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            self.vm_hwm = _peak(self.vm_hwm, read_vm_hwm(self.pid))
            if self.n % 4 == 0:
                self._slow_readings()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        self.n += 1

    def _slow_readings(self) -> None:
        self.peak_uss = max(self.peak_uss, self.proc.memory_full_info().uss)
        self.peak_footprint = _peak(self.peak_footprint, macos_footprint(self.pid))
        if self.nvml is not None:
            self.peak_gpu = _peak(self.peak_gpu, self.nvml.process_bytes(self.pid))


def run_child(
    cmd: list[str],
    *,
    timeout_s: float,
    interval_s: float = SAMPLE_INTERVAL_S,
    on_event: Callable[[dict[str, Any]], None] = lambda e: None,
    env: dict[str, str] | None = None,
    nvml: NvmlReader | None = None,
) -> ChildOutcome:
    """Run `cmd`, sampling its memory every `interval_s` until it exits or `timeout_s` passes."""
    with tempfile.TemporaryFile(mode="w+") as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        outcome = ChildOutcome()
        sampler = _Sampler(proc.pid, nvml=nvml)
        status, usage = _watch(
            proc, sampler, lines, outcome, on_event, start + timeout_s, interval_s
        )
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
    deadline: float,
    interval_s: float,
) -> tuple[int, Any]:
    while True:
        sampler.sample()
        _drain(lines, outcome, on_event, sampler)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() > deadline:
            outcome.timed_out = True
            os.kill(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            return status, usage
        time.sleep(interval_s)


def _drain(
    lines: queue.Queue, outcome: ChildOutcome, on_event: Callable, sampler: _Sampler | None = None
) -> None:
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # stray output from native code
        if event.get("event") == "loaded" and sampler is not None:
            outcome.rss_after_load_bytes = sampler.peak_rss
        if event.get("event") == "accuracy" and sampler is not None:
            outcome.rss_before_accuracy_bytes = sampler.peak_rss
        outcome.events.append(event)
        on_event(event)
