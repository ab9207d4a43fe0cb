"""Wires the stages together: catalog -> fetch -> runner -> store -> summarize -> report.

This module and the CLI are the only places that import more than one stage.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.catalog.models import Catalog, Variant, load_catalog
from edgeeval.contracts import Journal, Prior
from edgeeval.engine import host as hostinfo
from edgeeval.engine.backend import flash_attn_support, library_info
from edgeeval.engine.doctor import check_flash_attn
from edgeeval.engine.hostlock import acquire
from edgeeval.engine.process import sweep_stale_tempdirs
from edgeeval.errors import (
    ResumeConflictError,
    RunNotFoundError,
    suggest,
)
from edgeeval.fetch.sources import LocalFile, fetch
from edgeeval.quant.build import ensure_file
from edgeeval.race.bench import race_bench
from edgeeval.race.rules import check_field
from edgeeval.report.render import render_run
from edgeeval.report.summarize import RankRow
from edgeeval.run.accuracy import select_run_tasks
from edgeeval.run.runner import Attempt, bench_one
from edgeeval.run.speed import knob_points, knob_words, refuse_knob_sweep
from edgeeval.sandbox.jail import choose as choose_sandbox
from edgeeval.store import journal as journals
from edgeeval.store import runs as store
from edgeeval.tasks.suite import prefetch
from edgeeval.text import Progress


@dataclass(frozen=True)
class BenchOutcome:
    run_id: str
    records: list[rec.ModelRecord]
    rows: list[RankRow]
    paths: dict[str, Path]


@dataclass(frozen=True)
class StoredRun:
    """A stored run's manifest, as --resume reads it: its models and settings, the manifest
    typed and as stored (keys the type does not know are kept when it is written again)."""

    run_id: str
    variants: tuple[str, ...]
    settings: rec.RunSettings
    manifest: dict[str, Any]
    typed: rec.RunManifest


def bench(
    variants: list[Variant],
    run_settings: rec.RunSettings,
    *,
    run_id: str | None = None,
    force: bool = False,
    budget_gb: float | None = None,
    progress: Progress = print,
    catalog: Catalog | None = None,
    on_start: Callable[[str], None] | None = None,
    allow_concurrent: bool = False,
    wait: bool = False,
) -> BenchOutcome:
    """Measure `variants` and write the report; returns the outcome.

    With `run_id`, resume that stored run: `variants` and `run_settings` must be the run's own
    (see stored_run; ResumeConflictError otherwise) and variants whose finished record has the
    same file hash, settings and host are not measured again. An unknown `run_id` is a
    RunNotFoundError naming the closest stored ids. The run's manifest is written and
    `on_start(run_id)` called before anything is downloaded or measured, so an interrupted run
    can always be resumed. Measuring holds the host's bench lock (HostBusyError if another bench
    holds it, or wait for it with `wait`); `allow_concurrent` skips the lock and marks the run
    and its records. Derived variants are built from `catalog`'s recipes (default: models.yaml).
    """
    if run_id is not None:  # before anything is fetched or written
        store.check_run_id(run_id)
    if run_settings.allow_code_exec:  # refuse before any download when no sandbox works
        choose_sandbox(unsafe=run_settings.unsafe_code_exec)
    previous = _check_resume(run_id, variants, run_settings) if run_id else None
    if run_settings.race_confidence is not None:  # a race over one variant, before anything
        refuse_knob_sweep(run_settings, "--race")
        check_field([v.name for v in variants])
    tasks = select_run_tasks(run_settings)  # config errors first, before anything is written
    check_flash_attn(run_settings, flash_attn_support)  # -fa on where the devices lack it
    host = hostinfo.collect(library_info())
    run_id = previous.run_id if previous else store.new_run_id()
    measured = dataclasses.replace(run_settings, allow_concurrent=allow_concurrent)
    if allow_concurrent:
        progress("--allow-concurrent: measuring without the host lock; the run is marked")
    lock = nullcontext() if allow_concurrent else acquire(run_id, wait=wait, progress=progress)
    with lock:
        _write_manifest(run_id, host, run_settings, variants, previous, allow_concurrent)
        if on_start is not None:
            on_start(run_id)
        for stale in sweep_stale_tempdirs():
            progress(f"removed {stale}, left behind by a killed bench")
        if tasks:  # datasets are fetched before any model
            prefetch(tasks)
        if measured.race_confidence is not None:  # rounds over a shared item order (race/)
            race_bench(
                variants,
                measured,
                run_id=run_id,
                host=host,
                force=force,
                root=settings.package_root(),
                get_file=lambda v: _file_of(v, catalog, progress),
                progress=progress,
            )
            return render(run_id, budget_gb=budget_gb)
        done = _done_keys(run_id)
        points = knob_points(measured)  # each context-knob point: its own record and row
        jobs = [(v, p) for v in variants for p in points]
        for index, (variant, point) in enumerate(jobs, 1):
            progress(f"[{index}/{len(jobs)}] {variant.name}{knob_words(point, points)}")
            _bench_one(
                variant,
                point,
                run_id=run_id,
                host=host,
                done=done,
                force=force,
                progress=progress,
                catalog=catalog,
            )
    return render(run_id, budget_gb=budget_gb)


def stored_run(run: str) -> StoredRun:
    """The stored run `run` (an id, a run directory or `latest`) as --resume needs it.

    Raises RunNotFoundError, listing the closest stored ids, when there is no such run."""
    reports = settings.reports_dir()
    run_id = store.resolve_run(run, reports)
    known = store.list_runs(reports)
    if run_id not in known:
        near = suggest(run_id, known) or known[-3:][::-1]
        listed = " or ".join(f"'{k}'" for k in near)
        hint = f"did you mean {listed}? " if near else "there are no stored runs yet; "
        raise RunNotFoundError(
            f"no run '{run_id}' to resume in {reports}; {hint}"
            "(`edgeeval runs` lists stored runs; without --resume a new run starts)"
        )
    manifest = store.read_manifest(run_id, reports)
    try:
        typed = rec.from_dict(rec.RunManifest, manifest)
        stored, names = typed.settings, tuple(str(n) for n in manifest["variants"])
        if stored is None:
            raise KeyError("settings")
    except (KeyError, TypeError, ValueError):
        raise RunNotFoundError(
            f"run '{run_id}': its manifest {store.run_dir(run_id, reports) / 'run.json'} has no "
            "settings or models, so it cannot be resumed; start a new run without --resume"
        ) from None
    return StoredRun(run_id=run_id, variants=names, settings=stored, manifest=manifest, typed=typed)


#: Settings that may change between the invocations of one run: they bound time or mark the
#: invocation, and never make two measurements differ.
PER_INVOCATION = ("timeout_s", "stall_timeout_s", "allow_concurrent")


def settings_conflicts(
    stored: rec.RunSettings, given: rec.RunSettings
) -> list[tuple[str, object, object]]:
    """(field, given value, stored value) for each setting in which `given` would measure
    differently from `stored`; [] when resuming with `given` is sound."""
    return [
        (f.name, getattr(given, f.name), getattr(stored, f.name))
        for f in dataclasses.fields(rec.RunSettings)
        if f.name not in PER_INVOCATION and getattr(given, f.name) != getattr(stored, f.name)
    ]


def _check_resume(run_id: str, variants: list[Variant], run_settings: rec.RunSettings) -> StoredRun:
    previous = stored_run(run_id)
    conflicts = settings_conflicts(previous.settings, run_settings)
    if conflicts:
        field, given, stored = conflicts[0]
        raise ResumeConflictError(f"setting {field}", str(given), str(stored), run_id=run_id)
    names = [v.name for v in variants]
    if set(names) != set(previous.variants):
        raise ResumeConflictError(
            "models", ", ".join(names), ", ".join(previous.variants), run_id=run_id
        )
    return previous


def _write_manifest(
    run_id: str,
    host: rec.HostInfo,
    run_settings: rec.RunSettings,
    variants: list[Variant],
    previous: StoredRun | None,
    allow_concurrent: bool,
) -> None:
    """Write (or, resuming, update) run.json: models and settings, before anything runs."""
    now = time.strftime(settings.ISO_TIME)
    if previous is None:
        manifest = rec.RunManifest(
            run_id=run_id,
            host=host,
            settings=dataclasses.replace(run_settings, allow_concurrent=False),
            variants=tuple(v.name for v in variants),
            created_at=now,
            allow_concurrent=allow_concurrent,
        )
    else:
        old = previous.typed
        manifest = dataclasses.replace(
            old,
            resumed_at=(*old.resumed_at, now),
            # sticky: once any invocation measured without the host lock, the run says so
            allow_concurrent=old.allow_concurrent or allow_concurrent,
        )
    keep = previous.manifest if previous else None
    store.save_run_manifest(manifest, settings.reports_dir(), keep=keep)


def _done_keys(run_id: str) -> set[str]:
    """Keys of the run's finished (ok) records; empty for a run with none yet."""
    path = store.run_dir(run_id, settings.reports_dir()) / "records.jsonl"
    return {r.key for r in store.read_jsonl(path, rec.ModelRecord) if r.status == rec.STATUS_OK}


def _bench_one(
    variant: Variant,
    run_settings: rec.RunSettings,
    *,
    run_id: str,
    host: rec.HostInfo,
    done: set[str],
    force: bool,
    progress: Progress,
    catalog: Catalog | None = None,
) -> None:
    """Fetch (or build), pre-flight and measure one variant (run.runner.bench_one, as a
    cluster host does) and store what came of it."""

    def get_file() -> LocalFile:
        return _file_of(variant, catalog, progress)

    attempts = _Attempts(run_id)
    got = bench_one(
        variant,
        run_settings,
        get_file,
        run_id=run_id,
        host=host,
        done=done,
        force=force,
        root=settings.package_root(),
        progress=progress,
        attempt=attempts,
    )
    if got.record is not None:
        store.save_record(got.record, got.samples, generations=got.generations)
        if got.record.status == rec.STATUS_OK and attempts.journal is not None:
            journals.finish(attempts.journal)  # the record holds all of it now


def _file_of(variant: Variant, catalog: Catalog | None, progress: Progress) -> LocalFile:
    """The variant's file: fetched, or built from its base (derived variants)."""
    if variant.source.kind == "derived":
        return ensure_file(variant, catalog or load_catalog(), progress=progress)
    return fetch(variant, progress=progress)


class _Attempts:
    """The journal of a variant in the run's directory and what an earlier attempt left in it
    (runner.Attempt): its speed phase is kept only when the earlier record, with the memory
    measured alongside, was stored (a killed bench stores none)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.journal: Path | None = None

    def __call__(self, key: str, name: str) -> Attempt:
        self.journal = journals.journal_path(self.run_id, key, name)
        path = store.run_dir(self.run_id, settings.reports_dir()) / "records.jsonl"
        found = [r for r in store.read_jsonl(path, rec.ModelRecord) if r.key == key]
        earlier = found[-1] if found else None
        kept = journals.resume_from(
            self.journal, speed=earlier is not None and earlier.memory is not None
        )
        if kept is None:
            return Attempt(journal=self.journal)
        prior, journal = kept
        return Attempt(self.journal, prior, earlier, _prior_words(prior, journal))


def _prior_words(prior: Prior, journal: Journal) -> str:
    """What a resumed attempt keeps, in words."""
    parts = ["speed kept" if prior.speed_done else "speed measured again"]
    finished = [t for t in prior.result.tasks if t.status != rec.STATUS_SKIPPED]
    if finished:
        parts.append(f"{len(finished)} finished task(s) kept")
    for task, (done, planned, _) in journal.open_tasks.items():
        parts.append(f"{task}: {done}/{planned} items kept, {planned - done} to go")
    return "; ".join(parts)


def render(run: str, *, budget_gb: float | None = None) -> BenchOutcome:
    """(Re)write a run's reports from its stored records; loads no model."""
    run_id, rows, paths = render_run(run, budget_gb=budget_gb)
    return BenchOutcome(run_id=run_id, records=store.load_records(run_id), rows=rows, paths=paths)
