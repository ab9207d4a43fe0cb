"""Measure each variant in its own child process, sampling the child's memory from outside.

The parent never loads a model. For each variant it starts `python -m edgeeval.run.worker`
through engine.process.run_child (memory sampled from outside, the kernel's peak as a cross-check,
the stall and total limits). Whatever happens to the child becomes a ModelRecord: the child
journals each finished measurement as it goes, so a child stopped by a limit, a crash or a kill
leaves a record with everything it finished and the reason.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.catalog.models import Variant
from edgeeval.engine.batch import resolve_eval_batch
from edgeeval.engine.memprobe import NvmlReader
from edgeeval.engine.process import (
    LIMIT_STALL,
    SAMPLE_INTERVAL_S,
    ChildOutcome,
    Event,
    owned_tempdir,
    run_child,
)
from edgeeval.errors import EdgeevalError, InvalidModelFileError, PreflightError
from edgeeval.fetch.sources import LocalFile
from edgeeval.gguf.check import check_gguf, kv_cache_bytes
from edgeeval.gguf.kvcache import check_context, kv_options
from edgeeval.run.accuracy import row_key, task_score_from_items
from edgeeval.settings import GB, ISO_TIME
from edgeeval.text import Progress

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
            f"{variant.name}: needs about {need / GB:.2f} GB (weights {file.size_bytes / GB:.2f}"
            f" + KV {(kv_bytes or 0) / GB:.2f} + margin {PREFLIGHT_MARGIN_BYTES / GB:.2f}) but "
            f"only {available / GB:.2f} GB is available; close programs, lower --n-ctx, or pass "
            "--force to try anyway"
        )


def kv_estimate(path: Path, n_ctx: int, **cache: object) -> int | None:
    """KV cache bytes from the header (with the run's cache types and windowing, `cache` as
    kvcache.kv_options gives them), for pre-flight; PreflightError when n_ctx is above the
    trained context. A malformed file gives None here: the child runs the same check first
    thing and its failure is recorded with the reason."""
    try:
        summary = check_gguf(path)
    except InvalidModelFileError:
        return None
    check_context(summary.metadata, n_ctx, name=path.name)
    return kv_cache_bytes(summary, n_ctx, **cache)


@dataclass(frozen=True)
class BenchOne:
    """One variant's measurement: its record (None when `done` already held its key: resume),
    its per-item samples and generations."""

    record: rec.ModelRecord | None
    samples: list[rec.SampleResult] = field(default_factory=list)
    generations: list[rec.GenSampleResult] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt:
    """Where a variant's measurement journals, and what an earlier attempt left (--resume):
    the kept `prior` (already in `journal`), the `earlier` attempt's stored record (its memory
    goes with a kept speed phase) and the kept things in `words`."""

    journal: Path | None = None
    prior: ct.Prior | None = None
    earlier: rec.ModelRecord | None = None
    words: str = ""


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
    attempt: Callable[[str, str], Attempt] | None = None,
    only_ids: dict[str, tuple[str, ...]] | None = None,
) -> BenchOne:
    """Measure one variant as every driver does (a single machine, or one host of a cluster):
    get its file (`get_file`: fetch, build or the shared folder), skip it when `done` holds its
    key, refuse it when it does not fit in memory (pre-flight, with the accuracy phase's
    `eval_batch`), else measure it in a child (journalled and resumed as `attempt(key, name)`
    says, when given; only the items `only_ids` names, when given: a race's round). A
    failure before the child starts is a skipped
    record with the reason (prefixed by `where`, such as "on host-1: ")."""
    try:
        file = get_file()
        info = variant_info(variant, file)
        key = rec.record_key(info.name, info.sha256, settings, host)
        if key in done:
            progress(f"{variant.name}: already measured in this run (resume), skipping")
            return BenchOne(None)
        eval_batch = resolve_eval_batch(settings.eval_batch, settings.n_gpu_layers)
        kv = kv_estimate(file.path, settings.n_ctx, **kv_options(settings))
        preflight(variant, file, kv, force=force, eval_batch=eval_batch)
    except (EdgeevalError, OSError) as exc:
        refused = "refused" if isinstance(exc, PreflightError) else "failed"
        progress(f"{variant.name}: {refused}: {exc}")
        failed = failed_record(
            run_id, unfetched_info(variant), host, settings, rec.STATUS_SKIPPED, f"{where}{exc}"
        )
        return BenchOne(failed)
    how = attempt(key, variant.name) if attempt is not None else Attempt()
    if how.prior is not None:
        progress(f"{variant.name}: resuming: {how.words}")
    record, samples, generations = measure_variant(
        variant,
        file,
        run_id=run_id,
        host=host,
        settings=settings,
        root=root,
        progress=progress,
        journal=how.journal,
        prior=how.prior,
        only_ids=only_ids,
    )
    if how.prior is not None and how.prior.speed_done and how.earlier is not None:
        record = resumed_record(record, how.earlier)
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
        emulated=file.emulated,
        storage_bytes=file.storage_bytes,
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
    return time.strftime(ISO_TIME)


def measure_variant(
    variant: Variant,
    file: LocalFile,
    *,
    run_id: str,
    host: rec.HostInfo,
    settings: rec.RunSettings,
    root: Path,
    progress: Progress,
    journal: Path | None = None,
    prior: ct.Prior | None = None,
    only_ids: dict[str, tuple[str, ...]] | None = None,
) -> tuple[rec.ModelRecord, list[rec.SampleResult], list[rec.GenSampleResult]]:
    """Measure one variant in a child process; never raises for a failure of the model.

    The child appends each finished measurement to `journal` (default: a file beside its
    OUT.json) as it goes. A child that failed, was stopped by a limit or was killed still
    hands back everything it finished: the record then has the status, the reason (the limit
    or signal, where it stopped and what was kept) and those measurements, an unfinished task
    as a `partial` score over its scored items. With `prior` (--resume: what an earlier
    attempt kept, already in `journal`) the child measures only what is missing; the samples
    returned are then only the new ones (the earlier ones are stored already). With
    `only_ids` it scores only those items (WorkerSpec.only_ids)."""
    started = _now()
    with owned_tempdir() as tmp:  # named with our pid: swept at the next bench if we are killed
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        journal_path = journal or Path(tmp) / "journal.jsonl"
        spec = ct.WorkerSpec(
            model_path=str(file.path),
            root=str(root),
            settings=settings,
            cores_physical=host.cores_physical,
            model_kind=variant.kind,
            model_reasoning=variant.reasoning,
            journal=str(journal_path),
            prior=prior,
            only_ids=only_ids,
        )
        ct.write_contract(spec_path, spec)
        cmd = [sys.executable, "-m", "edgeeval.run.worker", str(spec_path), str(out_path)]
        nvml = NvmlReader() if host.backend == "CUDA" else None
        watch = _Watch(variant.name, settings, progress)
        outcome = run_child(
            cmd,
            timeout_s=settings.timeout_s,
            stall_s=settings.stall_timeout_s,
            nvml=nvml,
            on_event=watch.event,
        )
        result = ct.read_contract(ct.WorkerResult, out_path) if out_path.exists() else None
        written = ct.read_journal(journal_path)
    got = result or written.result
    status, error = _status(outcome, result)
    tasks = got.tasks
    if status != rec.STATUS_OK:
        partial = _partial_scores(written)
        tasks += partial
        error = f"{error}{_stopped_at(outcome, written, partial)}; {_kept(got, partial)}"
        if _resumable(got):
            error += f"; `edgeeval bench --resume {run_id}` finishes it"
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
        tasks=tasks,
        ttft=got.ttft,
        n_ctx_train=got.n_ctx_train,
        weights_bytes=got.weights_bytes,
        n_params=got.n_params,
        kv_cache_bytes=got.kv_cache_bytes,
        kv_cache=got.kv_cache,
    )
    samples, generations = list(got.samples), list(got.gen_samples)
    if prior is not None:  # the earlier attempt's items are stored already
        n_old, n_old_gen = len(prior.result.samples), len(prior.result.gen_samples)
        samples, generations = samples[n_old:], generations[n_old_gen:]
    return record, samples, generations


class _Watch:
    """The parent's view of a child's progress: each event as a progress line, and at the
    first chunk of each task an estimate of its time from the items planned and the rate of
    the first ones, with a warning when --timeout will stop it first."""

    def __init__(self, name: str, settings: rec.RunSettings, progress: Progress) -> None:
        self.name, self.settings, self.progress = name, settings, progress
        self.start = time.monotonic()
        self.estimated: set[str] = set()

    def event(self, event: Event) -> None:
        # a printer that renders events itself (cli/progress.py: a bar, or lines with a rate
        # and an ETA) gets each one; the items line is then its to write
        shown = getattr(self.progress, "event", None)
        if shown is not None:
            shown(self.name, event)
        if event.kind not in ("working", "scoring") and not (shown and event.kind == "items"):
            # working: the stall watch's, not news; scoring: items inside a chunk, for a display
            self.progress(_describe(self.name, event))
        if event.kind == "items" and event.task not in self.estimated and event.fresh:
            self.estimated.add(event.task)
            self._estimate(event)

    def _estimate(self, event: Event) -> None:
        per_item = (event.seconds or 0.0) / event.fresh
        left = max(event.planned - event.done, 0) * per_item
        self.progress(
            f"{self.name}: {event.task}: estimate {left:.0f} s more for "
            f"{event.planned - event.done} of {event.planned} items ({per_item:.2f} s per item "
            f"over the first {event.fresh})"
        )
        total = self.settings.timeout_s
        elapsed = time.monotonic() - self.start
        if total is not None and elapsed + left > total:
            self.progress(
                f"{self.name}: warning: the --timeout of {total:.0f} s will stop {event.task} "
                f"after about {max(total - elapsed, 0) / per_item:.0f} more items (estimate "
                f"{elapsed + left:.0f} s in all); what finishes is kept, `edgeeval bench "
                "--resume` finishes it"
            )


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


def resumed_record(record: rec.ModelRecord, earlier: rec.ModelRecord) -> rec.ModelRecord:
    """`record` of an attempt that resumed `earlier` (whose speed phase it kept): memory peaks
    over both attempts, the speed phase's own peak and the load's RSS from the earlier one
    (the attempt that ran them), both durations."""
    old, new = earlier.memory, record.memory
    memory = new
    if old is not None and new is not None:
        memory = dataclasses.replace(
            new,
            peak_rss_bytes=max(old.peak_rss_bytes, new.peak_rss_bytes),
            peak_uss_bytes=max(old.peak_uss_bytes, new.peak_uss_bytes),
            os_maxrss_bytes=max(old.os_maxrss_bytes, new.os_maxrss_bytes),
            n_samples=old.n_samples + new.n_samples,
            rss_after_load_bytes=old.rss_after_load_bytes,
            peak_footprint_bytes=_top(old.peak_footprint_bytes, new.peak_footprint_bytes),
            peak_gpu_bytes=_top(old.peak_gpu_bytes, new.peak_gpu_bytes),
            speed_peak_rss_bytes=old.speed_peak_rss_bytes,
            speed_peak_gpu_bytes=old.speed_peak_gpu_bytes,
        )
    return dataclasses.replace(
        record, memory=memory, duration_s=earlier.duration_s + record.duration_s
    )


def _top(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _status(outcome: ChildOutcome, result: ct.WorkerResult | None) -> tuple[str, str]:
    """(status, error) of a finished child: a limit fired, a crash, a failed phase (its own
    reason), another non-zero exit, or ok."""
    if outcome.timed_out:
        limit = f"{outcome.limit_s:.0f}" if outcome.limit_s >= 10 else f"{outcome.limit_s:g}"
        if outcome.limit == LIMIT_STALL:
            return rec.STATUS_TIMEOUT, f"stalled {limit} s (--stall-timeout)"
        return rec.STATUS_TIMEOUT, f"stopped by the {limit} s --timeout"
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


def _stopped_at(outcome: ChildOutcome, journal: ct.Journal, partial: tuple) -> str:
    """Where the child was when it stopped: " in TASK after N/M items", " in speed test X",
    " while loading"; "" when nothing says."""
    if partial:
        task, (done, planned, _) = next(reversed(journal.open_tasks.items()))
        return f" in {task} after {done}/{planned} items"
    last = outcome.last_event
    if last is None:
        return ""
    if last.kind in ("task", "items", "scoring"):
        return f" in {last.task}"
    if last.kind == "speed":
        return f" in speed test {last.test}"
    if last.kind == "loading":
        return " while loading"
    return f" after {last.kind}"


def _partial_scores(journal: ct.Journal) -> tuple[rec.TaskScore, ...]:
    """A `partial` score for each task begun but not finished, over the items it scored."""
    scores = []
    for key, (done, planned, like) in journal.open_tasks.items():
        if like is None or not done:
            continue
        rows = [s for s in journal.result.samples if row_key(s) == key]
        gens = [g for g in journal.result.gen_samples if row_key(g) == key]
        score = task_score_from_items(like, rows, gens)
        reason = f"{done}/{planned} items scored before the model was stopped; not ranked"
        scores.append(dataclasses.replace(score, status=rec.STATUS_PARTIAL, reason=reason))
    return tuple(scores)


def _kept(got: ct.WorkerResult, partial: tuple[rec.TaskScore, ...]) -> str:
    """What a stopped child's record keeps, as words: "speed, 131 items and memory kept"."""
    parts = []
    if got.load_s is not None:
        parts.append("load time")
    if got.speed:
        parts.append("speed")
    if got.ttft:
        parts.append("TTFT")
    finished = [t for t in got.tasks if t.status != rec.STATUS_SKIPPED]
    if finished:
        parts.append(f"{len(finished)} finished task{'s' if len(finished) > 1 else ''}")
    items = sum(t.n + t.n_harness_error for t in partial)
    if items:
        parts.append(f"{items} item{'s' if items > 1 else ''}")
    parts.append("memory")
    head = ", ".join(parts[:-1])
    return f"{head} and {parts[-1]} kept" if head else f"{parts[-1]} kept"


def _resumable(got: ct.WorkerResult) -> bool:
    """Whether --resume would keep anything: a finished speed phase at least."""
    return bool(got.speed or got.tasks)


def _describe(name: str, event: Event) -> str:
    kind = event.kind
    if kind == "loaded":
        return f"{name}: loaded in {event.seconds or 0:.2f} s"
    if kind == "speed":
        return f"{name}: timing {event.test}"
    if kind == "task":
        return f"{name}: task {event.index}/{event.total} {event.task}"
    if kind == "items":
        return f"{name}: {event.task}: {event.done}/{event.planned} items"
    if kind == "warning":  # a scored task asked otherwise than the settings say (its note)
        return f"{name}: {event.task}: warning: {event.detail}"
    return f"{name}: {kind}"
