"""Measure each variant in its own child process, sampling the child's memory from outside.

The parent never loads a model. For each variant it starts `python -m edgeeval.run.worker`
through engine.process.run_child (memory sampled from outside, a timeout, the kernel's peak as a
cross-check). Whatever happens to the child becomes a ModelRecord.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.catalog.models import Variant
from edgeeval.engine.batch import resolve_eval_batch
from edgeeval.engine.memprobe import NvmlReader
from edgeeval.engine.process import SAMPLE_INTERVAL_S, ChildOutcome, owned_tempdir, run_child
from edgeeval.errors import EdgeevalError, InvalidModelFileError, PreflightError
from edgeeval.fetch.sources import LocalFile
from edgeeval.gguf.check import check_gguf, kv_cache_bytes

Progress = Callable[[str], None]
#: Memory demanded beyond weights + KV cache when checking a model fits (compute buffers, runtime).
PREFLIGHT_MARGIN_BYTES = 300 * 10**6


def preflight(
    variant: Variant, file: LocalFile, kv_bytes: int | None, *, force: bool, eval_batch: int = 1
) -> None:
    """Refuse a model whose weights + KV cache + margin exceed the available memory. The KV
    cache counts 1 + `eval_batch` times: the speed tests' context stays loaded while the
    accuracy phase's batched context holds `eval_batch` sequences of n_ctx each."""
    kv_bytes = (kv_bytes or 0) * (1 + eval_batch if eval_batch > 1 else 1)
    need = file.size_bytes + kv_bytes + PREFLIGHT_MARGIN_BYTES
    available = psutil.virtual_memory().available
    if need > available and not force:
        raise PreflightError(
            f"{variant.name}: needs about {need / 1e9:.2f} GB (weights {file.size_bytes / 1e9:.2f}"
            f" + KV {(kv_bytes or 0) / 1e9:.2f} + margin {PREFLIGHT_MARGIN_BYTES / 1e9:.2f}) but "
            f"only {available / 1e9:.2f} GB is available; close programs, lower --n-ctx, or pass "
            "--force to try anyway"
        )


def kv_estimate(path: Path, n_ctx: int) -> int | None:
    """KV cache bytes from the header, for pre-flight. A malformed file gives None here: the
    child runs the same check first thing and its failure is recorded with the reason."""
    try:
        return kv_cache_bytes(check_gguf(path), n_ctx)
    except InvalidModelFileError:
        return None


@dataclass(frozen=True)
class BenchOne:
    """One variant's measurement: its record (None when `done` already held its key: resume),
    its per-item samples and generations."""

    record: rec.ModelRecord | None
    samples: list[rec.SampleResult] = field(default_factory=list)
    generations: list[rec.GenSampleResult] = field(default_factory=list)


def bench_one(
    variant: Variant,
    settings: rec.RunSettings,
    get_file: Callable[[], LocalFile],
    *,
    run_id: str,
    host: rec.HostInfo,
    done: Collection[str],
    force: bool,
    root: Path,
    progress: Progress,
    where: str = "",
) -> BenchOne:
    """Measure one variant as every driver does (a single machine, or one host of a cluster):
    get its file (`get_file`: fetch, build or the shared folder), skip it when `done` holds its
    key, refuse it when it does not fit in memory (pre-flight, with the accuracy phase's
    `eval_batch`), else measure it in a child. A failure before the child starts is a skipped
    record with the reason (prefixed by `where`, such as "on host-1: ")."""
    try:
        file = get_file()
        info = variant_info(variant, file)
        if rec.record_key(info.name, info.sha256, settings, host) in done:
            progress(f"{variant.name}: already measured in this run (resume), skipping")
            return BenchOne(None)
        eval_batch = resolve_eval_batch(settings.eval_batch, settings.n_gpu_layers)
        kv = kv_estimate(file.path, settings.n_ctx)
        preflight(variant, file, kv, force=force, eval_batch=eval_batch)
    except (EdgeevalError, OSError) as exc:
        refused = "refused" if isinstance(exc, PreflightError) else "failed"
        progress(f"{variant.name}: {refused}: {exc}")
        failed = failed_record(
            run_id, unfetched_info(variant), host, settings, rec.STATUS_SKIPPED, f"{where}{exc}"
        )
        return BenchOne(failed)
    record, samples, generations = measure_variant(
        variant, file, run_id=run_id, host=host, settings=settings, root=root, progress=progress
    )
    if record.status != rec.STATUS_OK:
        progress(f"{variant.name}: {record.status}: {record.error}")
    return BenchOne(record, samples, generations)


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


def unfetched_info(variant: Variant) -> rec.VariantInfo:
    """The variant as the catalog describes it, for a record of a file never fetched."""
    return rec.VariantInfo(
        name=variant.name,
        family=variant.family,
        model=variant.model,
        quant=variant.quant,
        kind=variant.kind,
        size_bytes=variant.size_bytes or 0,
        sha256=variant.sha256 or "",
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
    progress: Progress,
) -> tuple[rec.ModelRecord, list[rec.SampleResult], list[rec.GenSampleResult]]:
    """Measure one variant in a child process; never raises for a failure of the model.

    A child that failed part way still hands back what it measured before the failure: the
    record then has status error, the reason, and those measurements."""
    started = _now()
    spec = ct.WorkerSpec(
        model_path=str(file.path),
        root=str(root),
        settings=settings,
        cores_physical=host.cores_physical,
        model_kind=variant.kind,
        model_reasoning=variant.reasoning,
    )
    with owned_tempdir() as tmp:  # named with our pid: swept at the next bench if we are killed
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        ct.write_contract(spec_path, spec)
        cmd = [sys.executable, "-m", "edgeeval.run.worker", str(spec_path), str(out_path)]
        nvml = NvmlReader() if host.backend == "CUDA" else None
        outcome = run_child(
            cmd,
            timeout_s=settings.timeout_s,
            nvml=nvml,
            on_event=lambda e: progress(_describe(variant.name, e)),
        )
        result = ct.read_contract(ct.WorkerResult, out_path) if out_path.exists() else None
    status, error = _status(outcome, result)
    got = result or ct.WorkerResult()
    record = rec.ModelRecord(
        run_id=run_id,
        variant=variant_info(variant, file),
        host=host,
        settings=settings,
        status=status,
        started_at=started,
        duration_s=outcome.duration_s,
        memory=_memory(outcome, settings, got.eval_batch),
        error=error,
        stderr_tail=outcome.stderr_tail if status != rec.STATUS_OK else "",
        load_s=got.load_s,
        speed=got.speed,
        tasks=got.tasks,
        ttft=got.ttft,
        n_ctx_train=got.n_ctx_train,
        weights_bytes=got.weights_bytes,
        n_params=got.n_params,
        kv_cache_bytes=got.kv_cache_bytes,
        kv_cache=got.kv_cache,
    )
    return record, list(got.samples), list(got.gen_samples)


def _memory(outcome: ChildOutcome, settings: rec.RunSettings, eval_batch: int) -> rec.MemoryResult:
    return rec.MemoryResult(
        peak_rss_bytes=outcome.peak_rss_bytes,
        peak_uss_bytes=outcome.peak_uss_bytes,
        os_maxrss_bytes=outcome.os_maxrss_bytes,
        n_samples=outcome.n_samples,
        interval_ms=SAMPLE_INTERVAL_S * 1000,
        rss_after_load_bytes=outcome.rss_after_load_bytes,
        use_mmap=settings.use_mmap,
        use_mlock=settings.use_mlock,
        peak_footprint_bytes=outcome.peak_footprint_bytes,
        peak_gpu_bytes=outcome.peak_gpu_bytes,
        eval_batch=eval_batch,
        speed_peak_rss_bytes=outcome.rss_before_accuracy_bytes,
        speed_peak_gpu_bytes=outcome.gpu_before_accuracy_bytes,
    )


def _status(outcome: ChildOutcome, result: ct.WorkerResult | None) -> tuple[str, str]:
    """(status, error) of a finished child: timeout, crash, a failed phase (its own reason),
    another non-zero exit, or ok."""
    if outcome.timed_out:
        return rec.STATUS_TIMEOUT, f"killed after the {outcome.duration_s:.0f} s timeout"
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        hint = " (likely out of memory)" if outcome.signal == signal.SIGKILL else ""
        return rec.STATUS_CRASH, f"child died from {name}{hint}"
    if result is not None and result.error:
        return rec.STATUS_ERROR, result.error
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
