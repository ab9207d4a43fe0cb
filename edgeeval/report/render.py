"""Render a run's ranking as Markdown, CSV and JSON (one schema), one self-contained HTML page
with PNG plots beside it, and the compact terminal table.

Everything here works from stored records: no model is loaded to (re)render a report. Other
runs in the local store (other hosts, other thread counts) feed the "By host" section and the
speed-vs-threads plot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.errors import DamagedRunError
from edgeeval.report.answer import (
    answer_section,
    comparison_section,
    power_section,
    sections_html,
    sections_markdown,
)
from edgeeval.report.cells import md, num, pm
from edgeeval.report.exports import to_csv, to_json
from edgeeval.report.fidelity import fidelity_markdown, variant_rows, variants_markdown
from edgeeval.report.kvmem import kv_html, kv_markdown, kv_plot, rank_note, records_at_ctx
from edgeeval.report.lmeval import write_lm_eval
from edgeeval.report.paired import Pairing, load_pairing, paired_ses, pairing, pairing_json
from edgeeval.report.protocols import protocol_markdown, split_thinking
from edgeeval.report.speed import memory_speed_markdown, write_speed_tables
from edgeeval.report.summarize import (
    FORMULA,
    TIE_RULE,
    WORKED_EXAMPLE,
    HostGroup,
    RankRow,
    group_by_host,
    rank_label,
    rank_rows,
    thread_scaling,
    verdict,
    with_race_stops,
)
from edgeeval.settings import GB
from edgeeval.store import database
from edgeeval.store import runs as store
from edgeeval.store.fidelity import load_fidelity
from edgeeval.store.racelog import stop_notes

TIMED = (
    "Speed follows llama-bench: synthetic random tokens; only the llama_decode calls (and "
    "the final synchronize) are timed, never loading, tokenization or sampling. One "
    "untimed warmup, then r repetitions with the KV cache cleared before each. pp N = N "
    "prompt tokens decoded in n_batch chunks; tg N = N single-token decodes. tokens/s is "
    "reported as mean ± sample stddev over the repetitions. Peak memory is the child "
    "process's resident set (RSS), sampled from the parent every 20 ms from start to exit; "
    "mmap'd weights count once touched. Load time is the llama.cpp model + context "
    "creation."
)

NOTES = (
    FORMULA,
    "Numbers after ± are the sample standard deviation (speed) or standard error "
    "(accuracy, capability).",
    TIE_RULE,
    WORKED_EXAMPLE,
    TIMED,
)


def ranking_table(rows: Sequence[RankRow]) -> str:
    """The compact Markdown table printed in the terminal and at the top of report.md."""
    lines = [
        "| rank | variant | quant | file GB | peak GB | load s | pp t/s | tg t/s "
        "| capability | cap/GB | status |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {rank_label(r)} | {md(r.name)} | {md(r.quant)} | {num(r.file_gb, 3)} "
            f"| {num(r.peak_rss_gb, 3)} | {num(r.load_s)} | {pm(r.pp_ts, r.pp_stddev_ts)} "
            f"| {pm(r.tg_ts, r.tg_stddev_ts)} | {pm(r.capability, r.capability_se)} "
            f"| {num(r.capability_per_gb, 1)} | {md(verdict(r), 300)} |"
        )
    return "\n".join(lines)


def _task_table(rows: Sequence[RankRow], tasks: Sequence[str]) -> str:
    head = "| variant | " + " | ".join(md(t) for t in tasks) + " |"
    lines = [head, "|---|" + "---:|" * len(tasks)]
    for r in rows:
        cells = [
            pm(100 * r.task_acc[t], 100 * r.task_acc_se.get(t, 0.0)) if t in r.task_acc else "-"
            for t in tasks
        ]
        lines.append(f"| {md(r.name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _hosts_markdown(groups: Sequence[HostGroup]) -> list[str]:
    if not groups:
        return []
    parts = [
        "",
        "## By host",
        "",
        "The same files with the same settings, measured on each "
        "host in the local store (latest ok record per host and variant).",
    ]
    for g in groups:
        h = g.host
        parts += [
            "",
            f"### {md(h.hostname)} ({md(h.host_id)}): {md(h.cpu_model)}, "
            f"{h.cores_physical} cores, {h.ram_bytes / GB:.1f} GB RAM, {md(h.backend)}; "
            f"runs {md(', '.join(g.run_ids), 400)}",
            "",
            ranking_table(g.rows),
        ]
    return parts


def _host_markdown(records: Sequence[rec.ModelRecord]) -> list[str]:
    if not records:
        return []
    host = records[0].host
    return [
        "",
        "## Host and settings",
        "",
        f"- host: {md(host.hostname)} ({md(host.host_id)}), {md(host.cpu_model)}, "
        f"{host.cores_physical} physical / {host.cores_logical} logical cores, "
        f"{host.ram_bytes / GB:.1f} GB RAM, {host.os} {host.os_version} {host.machine}",
        f"- backend: {md(_ran_on(host, records[0].settings))}; llama-cpp-python "
        f"{host.llama_cpp_python_version}; edgeeval {host.edgeeval_version}; "
        f"Python {host.python_version}",
        f"- llama.cpp system info: `{host.llama_cpp_system_info}`",
        f"- settings: `{json.dumps(records[0].settings.shown())}`",
    ]


@dataclass(frozen=True)
class ReportMeta:
    """What a report says about its run besides the rows: the run, its host and settings as
    run.json stores them, the budget it ranks within, warnings about damaged files, and the
    context length it ranks at (with the sentence that says so)."""

    run_id: str
    host: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    budget_gb: float | None = None
    warnings: tuple[str, ...] = ()
    rank_at_ctx: int | None = None
    rank_note: str = ""

    def json_fields(self) -> dict[str, Any]:
        """The top-level keys of report.json (warnings and the rank keys only when set)."""
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "host": self.host,
            "settings": self.settings,
            "budget_gb": self.budget_gb,
        }
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if self.rank_at_ctx:
            data.update(rank_at_ctx=self.rank_at_ctx, rank_note=self.rank_note)
        return data


def _ran_on(host: rec.HostInfo, settings: rec.RunSettings) -> str:
    """Which backend and device ran the layers: "CUDA, 99 layers on CUDA0: NVIDIA H200 (...)"
    or "CPU" when nothing was offloaded."""
    layers = settings.sweep_n_gpu_layers or (settings.n_gpu_layers,)
    offloaded = [n for n in layers if n != 0]
    if not offloaded or not host.gpu_offload:
        return f"{host.backend} build, all layers on the CPU" if host.gpu_offload else "CPU"
    count = ", ".join("all" if n < 0 else str(n) for n in offloaded)
    device = host.gpu_devices or "the GPU"
    return f"{host.backend}, {count} layers offloaded to {device}"


def to_markdown(
    rows: Sequence[RankRow],
    records: Sequence[rec.ModelRecord],
    meta: ReportMeta,
    tasks: Sequence[str],
    host_groups: Sequence[HostGroup] = (),
    answer: Sequence[str] = (),
    evidence: Sequence[str] = (),
) -> str:
    """report.md; `answer` (Markdown lines) goes first, `evidence` after the task table."""
    parts = [
        f"# edgeeval report — run {meta.run_id}",
        "",
        *answer,
        *_preamble_markdown(meta, records),
        ranking_table(rows),
        "",
        "## How to read this",
        "",
        "\n\n".join(NOTES),
        "",
        "## Accuracy per task (%, ± standard error)",
        "",
        _task_table(rows, tasks),
        "",
        *evidence,
        *protocol_markdown(records),
        *_memory_markdown(records),
        *_failed_markdown(rows, records),
        *_hosts_markdown(host_groups),
        *_host_markdown(records),
    ]
    return "\n".join(parts) + "\n"


def _preamble_markdown(meta: ReportMeta, records: Sequence[rec.ModelRecord]) -> list[str]:
    """What to know before the ranking: warnings, the budget, unlocked runs, the rank note."""
    parts = [f"> **Warning:** {w}" for w in meta.warnings] + ([""] if meta.warnings else [])
    if meta.budget_gb:
        parts += [
            f"Memory budget: {meta.budget_gb:g} GB peak memory; variants above it are listed "
            "as over budget and not ranked.",
            "",
        ]
    unlocked = [r.variant.name for r in records if r.settings.allow_concurrent]
    if unlocked:  # measured while another bench may have shared the machine
        parts += [
            "**Measured with --allow-concurrent** (without the host's bench lock): another "
            "bench may have shared this machine, so these speeds may be low: "
            f"{', '.join(unlocked)}.",
            "",
        ]
    if meta.rank_note:
        parts += [meta.rank_note, ""]
    return parts


def _memory_markdown(records: Sequence[rec.ModelRecord]) -> list[str]:
    """The memory and roofline section, with memory per context length when there is one."""
    parts = [
        "## Memory, latency and the bandwidth roofline",
        "",
        "Weights are the GGUF's tensor bytes; the KV cache is computed from the model's "
        "shape at n_ctx (F16); 'runtime other' is the rest of the peak resident set "
        "(compute buffers, the Python process). The roofline is host bandwidth / bytes "
        "read per generated token (weights + KV), for tests with no layer offloaded to a GPU.",
        "",
        memory_speed_markdown(records),
    ]
    kv = kv_markdown(records)
    return parts + (["", kv] if kv else [])


def _failed_markdown(rows: Sequence[RankRow], records: Sequence[rec.ModelRecord]) -> list[str]:
    """Variants that failed and tasks that were not scored, each with its reason."""
    failed = [r for r in rows if not r.measured]
    unscored = [(r.variant.name, t) for r in records for t in r.tasks if t.status != "ok"]
    if not failed and not unscored:
        return []
    parts = ["", "## Failed or skipped", ""]
    parts += [f"- **{md(r.name)}** ({md(r.status)}): {md(r.error, 2000)}" for r in failed]
    parts += [
        f"- **{md(name)}**, task {md(t.task)} ({md(t.status)}, not counted): {md(t.reason, 2000)}"
        for name, t in unscored
    ]
    return parts


def stored_records(root: Path) -> list[rec.ModelRecord]:
    """Every record in the store under `root` ([] when there is none yet; a damaged store is
    rebuilt from the runs' JSONL first)."""
    return database.all_records(root)


def write_report(
    directory: Path,
    rows: Sequence[RankRow],
    records: Sequence[rec.ModelRecord],
    meta: ReportMeta,
    *,
    stored: Sequence[rec.ModelRecord] | None = None,
    fidelity: Sequence[rec.FidelityResult] = (),
    pairs: Pairing | None = None,
) -> dict[str, Path]:
    """Write report.md/.csv/.json/.html and plot-*.png into `directory`; return their paths
    (keys md, csv, json, html and png-<plot>). `stored` are the other runs' records for the
    by-host section and the threads plot; by default the store beside `directory`."""
    # Imported here: matplotlib takes about half a second to import, and the CLI imports
    # this module for every command (to register `report --budget-gb`).
    from edgeeval.report.html import render_html
    from edgeeval.report.plots import all_plots

    stored = stored_records(directory.parent) if stored is None else stored
    groups = group_by_host(records, stored)
    tasks = sorted({t for r in rows for t in r.task_acc})
    plots = all_plots(
        rows, records, thread_scaling(records, stored), budget_gb=meta.budget_gb, fidelity=fidelity
    )
    kv = kv_plot(records)
    plots = [*plots, kv] if kv else plots
    table = variant_rows(rows, records, fidelity) if fidelity else []
    pairs = pairs or Pairing("none")
    first = [answer_section(rows, pairs, meta.budget_gb)]
    later = [comparison_section(pairs), power_section(pairs)]
    markdown = to_markdown(
        rows, records, meta, tasks, groups, sections_markdown(first), sections_markdown(later)
    )
    texts = {
        "md": markdown + _variants_markdown(table, fidelity),
        "csv": to_csv(rows, tasks),
        "json": to_json(rows, {**meta.json_fields(), "comparisons": pairing_json(pairs)}, groups),
        "html": render_html(
            rows,
            records,
            meta,
            plots,
            tasks=tasks,
            notes=NOTES,
            host_groups=groups,
            variants=table,
            extra=sections_html(later) + kv_html(records),
            first=sections_html(first),
        ),
    }
    paths = {kind: store.write_atomic(directory / f"report.{kind}", t) for kind, t in texts.items()}
    for plot in plots:
        paths[f"png-{plot.key}"] = store.write_atomic(directory / f"plot-{plot.key}.png", plot.png)
    return paths


def _variants_markdown(
    table: Sequence[dict[str, Any]], fidelity: Sequence[rec.FidelityResult]
) -> str:
    """The variants-and-fidelity section of report.md ("" without fidelity results)."""
    if not table:
        return ""
    return (
        "\n## Variants: size, bits per weight, speed, accuracy and fidelity\n\n"
        + variants_markdown(table)
        + "\n\n"
        + fidelity_markdown(fidelity)
    )


def _lines(n: int) -> str:
    return f"{n} unreadable line{'' if n == 1 else 's'}"


def render_run(
    run: str,
    *,
    budget_gb: float | None = None,
    root: Path | None = None,
    rank_at_ctx: int | None = None,
) -> tuple[str, list[RankRow], dict[str, Path]]:
    """(Re)write a run's reports from its stored records, ranking within `budget_gb` when
    given, by peak memory estimated at `rank_at_ctx` tokens of context when given; loads no
    model. Returns (run id, rows, paths)."""
    run_id, root = store.locate_run(run, root)  # a run directory is read where it is
    damaged = None
    try:
        manifest = store.read_manifest(run_id, root)
    except DamagedRunError as exc:  # the records still hold host and settings
        damaged = exc
    records = store.load_records(run_id, root)
    fidelity = load_fidelity(run_id, root)
    warnings = [
        f"{_lines(read.skipped)} skipped in {read.path.name if read.path else '?'} (first: "
        f"{read.first_problem}); the rest of the file is reported"
        for read in (records, fidelity)
        if read.skipped
    ]
    if damaged:
        manifest = store.manifest_from_records(run_id, list(records), damaged.reason)
        warnings.insert(
            0,
            f"{store.MANIFEST} is damaged ({damaged.reason}); host and settings come from "
            f"records.jsonl; `edgeeval repair {run_id}` rewrites it",
        )
    ranked, kept = records_at_ctx(records, rank_at_ctx) if rank_at_ctx else (records, [])
    directory = store.run_dir(run_id, root)
    pairs = pairing(ranked, load_pairing(run_id, directory.parent, ranked))
    rows = rank_rows(split_thinking(ranked), budget_gb=budget_gb, paired=paired_ses(pairs))
    rows = with_race_stops(rows, stop_notes(run_id, directory.parent))
    meta = ReportMeta(
        run_id=run_id,
        host=manifest.get("host"),
        settings=manifest.get("settings"),
        budget_gb=budget_gb,
        warnings=tuple(warnings),
        rank_at_ctx=rank_at_ctx,
        rank_note=rank_note(rank_at_ctx, kept) if rank_at_ctx else "",
    )
    paths = write_report(directory, rows, records, meta, fidelity=fidelity, pairs=pairs)
    # the llama-bench shaped speed tables, as `edgeeval bench` writes them (pipeline.render)
    paths.update({f"speed_{k}": v for k, v in write_speed_tables(directory, records).items()})
    paths.update(write_lm_eval(directory, records))  # lm-eval's results_<date>.json, samples
    return run_id, rows, paths
