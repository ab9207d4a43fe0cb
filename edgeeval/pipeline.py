"""Wires the stages together: catalog -> fetch -> runner -> store -> summarize -> report.

This module and the CLI are the only places that import more than one stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.catalog.models import Catalog, Variant, load_catalog
from edgeeval.engine import host as hostinfo
from edgeeval.engine.backend import library_info
from edgeeval.engine.batch import resolve_eval_batch
from edgeeval.engine.sandbox import choose as choose_sandbox
from edgeeval.errors import EdgeevalError, InvalidModelFileError, PreflightError
from edgeeval.fetch.gguf_check import check_gguf, kv_cache_bytes
from edgeeval.fetch.quantize import ensure_file
from edgeeval.fetch.sources import fetch
from edgeeval.report.render import render_run
from edgeeval.report.summarize import RankRow
from edgeeval.run.runner import failed_record, measure_variant, preflight, variant_info
from edgeeval.store import runs as store
from edgeeval.tasks.suite import load_suite, prefetch

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOutcome:
    run_id: str
    records: list[rec.ModelRecord]
    rows: list[RankRow]
    paths: dict[str, Path]


def _unfetched_info(variant: Variant) -> rec.VariantInfo:
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


def bench(
    variants: list[Variant],
    run_settings: rec.RunSettings,
    *,
    run_id: str | None = None,
    force: bool = False,
    budget_gb: float | None = None,
    progress: Progress = print,
    catalog: Catalog | None = None,
) -> BenchOutcome:
    """Measure `variants` and write the report. With an existing `run_id`, resume it: variants
    whose finished record has the same file hash, settings and host are not measured again.
    Derived variants are built from `catalog`'s recipes (default: the repo's models.yaml)."""
    if run_id is not None:  # before anything is fetched or written
        store.check_run_id(run_id)
    reports = settings.reports_dir()
    if run_settings.allow_code_exec:  # refuse before any download when no sandbox works
        choose_sandbox(unsafe=run_settings.unsafe_code_exec)
    if run_settings.suite:  # datasets are fetched (and suite errors raised) before any model
        prefetch(load_suite(run_settings.suite))
    host = hostinfo.collect(library_info())
    resuming = run_id is not None and (store.run_dir(run_id, reports) / "run.json").exists()
    run_id = run_id or store.new_run_id()
    done = (
        {r.key for r in store.load_records(run_id, reports) if r.status == rec.STATUS_OK}
        if resuming
        else set()
    )
    store.write_manifest(
        run_id,
        {
            "run_id": run_id,
            "host": rec.to_dict(host),
            "settings": rec.to_dict(run_settings),
            "variants": [v.name for v in variants],
        },
        reports,
    )
    n_threads = run_settings.n_threads or hostinfo.physical_cores()
    for index, variant in enumerate(variants, 1):
        progress(f"[{index}/{len(variants)}] {variant.name}")
        _bench_one(
            variant,
            run_settings,
            run_id=run_id,
            host=host,
            done=done,
            force=force,
            n_threads=n_threads,
            progress=progress,
            catalog=catalog,
        )
    return render(run_id, budget_gb=budget_gb)


def _bench_one(
    variant: Variant,
    run_settings: rec.RunSettings,
    *,
    run_id: str,
    host: rec.HostInfo,
    done: set[str],
    force: bool,
    n_threads: int,
    progress: Progress,
    catalog: Catalog | None = None,
) -> None:
    try:
        file = (
            fetch(variant, progress=progress)
            if variant.source.kind != "derived"
            else ensure_file(variant, catalog or load_catalog(), progress=progress)
        )
        info = variant_info(variant, file)
        key = rec.record_key(info.name, info.sha256, run_settings, host)
        if key in done:
            progress(f"{variant.name}: already measured in this run (resume), skipping")
            return
        eval_batch = resolve_eval_batch(run_settings.eval_batch, run_settings.n_gpu_layers)
        kv = _kv_estimate(file.path, run_settings.n_ctx)
        preflight(variant, file, kv, force=force, eval_batch=eval_batch)
    except (EdgeevalError, OSError) as exc:
        status = rec.STATUS_SKIPPED
        progress(
            f"{variant.name}: {'refused' if isinstance(exc, PreflightError) else 'failed'}: {exc}"
        )
        store.save_record(
            failed_record(run_id, _unfetched_info(variant), host, run_settings, status, str(exc))
        )
        return
    record, samples, generations = measure_variant(
        variant,
        file,
        run_id=run_id,
        host=host,
        settings=run_settings,
        root=settings.package_root(),
        n_threads=n_threads,
        progress=progress,
    )
    if record.status != rec.STATUS_OK:
        progress(f"{variant.name}: {record.status}: {record.error}")
    store.save_record(record, samples, generations=generations)


def _kv_estimate(path: Path, n_ctx: int) -> int | None:
    """KV cache bytes from the header, for pre-flight. A malformed file gives None here: the
    child runs the same check first thing and its failure is recorded with the reason."""
    try:
        return kv_cache_bytes(check_gguf(path), n_ctx)
    except InvalidModelFileError:
        return None


def render(run: str, *, budget_gb: float | None = None) -> BenchOutcome:
    """(Re)write a run's reports from its stored records; loads no model."""
    run_id, rows, paths = render_run(run, budget_gb=budget_gb)
    return BenchOutcome(run_id=run_id, records=store.load_records(run_id), rows=rows, paths=paths)
