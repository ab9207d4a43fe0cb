"""Measure each variant in its own child process, sampling the child's memory from outside.

The parent never loads a model. For each variant it starts `python -m edgeeval.run.worker`, reads
its progress lines, samples its RSS (and USS, from /proc smaps_rollup on Linux) every
`interval_s`, kills it at the timeout, and reaps it with wait4 so the kernel's own peak RSS
(ru_maxrss) is kept as a cross-check. Whatever happens to the child becomes a ModelRecord.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from edgeeval import records as rec
from edgeeval.catalog.models import Variant
from edgeeval.engine.memprobe import NvmlReader, macos_footprint
from edgeeval.errors import PreflightError
from edgeeval.fetch.sources import LocalFile

Progress = Callable[[str], None]
#: Memory demanded beyond weights + KV cache when checking a model fits (compute buffers, runtime).
PREFLIGHT_MARGIN_BYTES = 300 * 10**6


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
    interval_s: float = 0.02,
    on_event: Callable[[dict[str, Any]], None] = lambda e: None,
    env: dict[str, str] | None = None,
    nvml: NvmlReader | None = None,
) -> ChildOutcome:
    """Run `cmd`, sampling its memory every `interval_s` until it exits or `timeout_s` passes."""
    import subprocess

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
        outcome.events.append(event)
        on_event(event)


def preflight(variant: Variant, file: LocalFile, kv_bytes: int | None, *, force: bool) -> None:
    """Refuse a model whose weights + KV cache + margin exceed the available memory."""
    need = file.size_bytes + (kv_bytes or 0) + PREFLIGHT_MARGIN_BYTES
    available = psutil.virtual_memory().available
    if need > available and not force:
        raise PreflightError(
            f"{variant.name}: needs about {need / 1e9:.2f} GB (weights {file.size_bytes / 1e9:.2f}"
            f" + KV {(kv_bytes or 0) / 1e9:.2f} + margin {PREFLIGHT_MARGIN_BYTES / 1e9:.2f}) but "
            f"only {available / 1e9:.2f} GB is available; close programs, lower --n-ctx, or pass "
            "--force to try anyway"
        )


def variant_info(variant: Variant, file: LocalFile) -> rec.VariantInfo:
    return rec.VariantInfo(
        name=variant.name,
        family=variant.family,
        model=variant.model,
        quant=variant.quant,
        kind=variant.kind,
        size_bytes=file.size_bytes,
        sha256=file.sha256,
        params=variant.params,
    )


def failed_record(
    run_id: str,
    info: rec.VariantInfo,
    host: rec.HostInfo,
    settings: rec.RunSettings,
    status: str,
    error: str,
) -> rec.ModelRecord:
    return rec.ModelRecord(
        run_id=run_id,
        variant=info,
        host=host,
        settings=settings,
        status=status,
        started_at=_now(),
        duration_s=0.0,
        error=error,
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def measure_variant(
    variant: Variant,
    file: LocalFile,
    *,
    run_id: str,
    host: rec.HostInfo,
    settings: rec.RunSettings,
    root: Path,
    n_threads: int,
    progress: Progress,
) -> tuple[rec.ModelRecord, list[rec.SampleResult], list[rec.GenSampleResult]]:
    """Measure one variant in a child process; never raises for a failure of the model."""
    info = variant_info(variant, file)
    started = _now()
    with tempfile.TemporaryDirectory(prefix="edgeeval-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(
            json.dumps(
                {
                    "model_path": str(file.path),
                    "root": str(root),
                    "settings": rec.to_dict(settings),
                    "model_kind": variant.kind,
                    "n_threads": n_threads,
                }
            )
        )
        cmd = [sys.executable, "-m", "edgeeval.run.worker", str(spec_path), str(out_path)]
        nvml = NvmlReader() if host.backend == "CUDA" else None
        outcome = run_child(
            cmd,
            timeout_s=settings.timeout_s,
            nvml=nvml,
            on_event=lambda e: progress(_describe(variant.name, e)),
        )
        result = json.loads(out_path.read_text()) if out_path.exists() else None
    memory = rec.MemoryResult(
        peak_rss_bytes=outcome.peak_rss_bytes,
        peak_uss_bytes=outcome.peak_uss_bytes,
        os_maxrss_bytes=outcome.os_maxrss_bytes,
        n_samples=outcome.n_samples,
        interval_ms=20.0,
        rss_after_load_bytes=outcome.rss_after_load_bytes,
        use_mmap=settings.use_mmap,
        use_mlock=settings.use_mlock,
        peak_footprint_bytes=outcome.peak_footprint_bytes,
        peak_gpu_bytes=outcome.peak_gpu_bytes,
    )
    status, error = _status(outcome, result)
    record = rec.ModelRecord(
        run_id=run_id,
        variant=info,
        host=host,
        settings=settings,
        status=status,
        started_at=started,
        duration_s=outcome.duration_s,
        memory=memory,
        error=error,
        stderr_tail=outcome.stderr_tail if status != rec.STATUS_OK else "",
        load_s=result["load_s"] if result else None,
        speed=tuple(rec.from_dict(rec.SpeedResult, s) for s in result["speed"]) if result else (),
        tasks=tuple(rec.from_dict(rec.TaskScore, t) for t in result["tasks"]) if result else (),
        ttft=tuple(rec.from_dict(rec.LatencyResult, t) for t in result["ttft"]) if result else (),
        n_ctx_train=result.get("n_ctx_train") if result else None,
        weights_bytes=result.get("weights_bytes") if result else None,
        n_params=result.get("n_params") if result else None,
        kv_cache_bytes=result.get("kv_cache_bytes") if result else None,
    )
    samples = [rec.from_dict(rec.SampleResult, s) for s in result["samples"]] if result else []
    generations = (
        [rec.from_dict(rec.GenSampleResult, g) for g in result.get("gen_samples", [])]
        if result
        else []
    )
    return record, samples, generations


def _status(outcome: ChildOutcome, result: dict | None) -> tuple[str, str]:
    if outcome.timed_out:
        return rec.STATUS_TIMEOUT, f"killed after the {outcome.duration_s:.0f} s timeout"
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        hint = " (likely out of memory)" if outcome.signal == signal.SIGKILL else ""
        return rec.STATUS_CRASH, f"child died from {name}{hint}"
    if outcome.returncode != 0 or result is None:
        last = outcome.stderr_tail.strip().splitlines()[-1:] or ["no output"]
        return rec.STATUS_ERROR, f"child exited with code {outcome.returncode}: {last[0]}"
    return rec.STATUS_OK, ""


def _describe(name: str, event: dict[str, Any]) -> str:
    kind = event.get("event")
    if kind == "loaded":
        return f"{name}: loaded in {event.get('load_s', 0):.2f} s"
    if kind == "speed":
        return f"{name}: timing {event.get('test')}"
    if kind == "task":
        return f"{name}: task {event.get('index')}/{event.get('total')} {event.get('task')}"
    return f"{name}: {kind}"
