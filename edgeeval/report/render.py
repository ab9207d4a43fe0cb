"""Render a run's ranking as Markdown, CSV and JSON (one schema), one self-contained HTML page
with PNG plots beside it, and the compact terminal table.

Everything here works from stored records: no model is loaded to (re)render a report. Other
runs in the local store (other hosts, other thread counts) feed the "By host" section and the
speed-vs-threads plot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeeval import records as rec
from edgeeval.errors import ConfigError, DamagedRunError
from edgeeval.report.answer import (
    answer_section,
    comparison_section,
    power_section,
    sections_html,
    sections_markdown,
)
from edgeeval.report.cells import md, num, pm
from edgeeval.report.exports import to_csv, to_json
from edgeeval.report.fidelity import (
    fidelity_markdown,
    label_fidelity,
    variant_rows,
    variants_markdown,
)
from edgeeval.report.kvmem import kv_html, kv_plot, rank_note, records_at_ctx
from edgeeval.report.lmeval import write_lm_eval
from edgeeval.report.mdhtml import markdown_html
from edgeeval.report.paired import Pairing, load_pairing, paired_ses, pairing, pairing_json
from edgeeval.report.planned import planned_markdown
from edgeeval.report.protocols import protocol_markdown, split_thinking
from edgeeval.report.sections import (
    failed_markdown,
    host_markdown,
    memory_markdown,
    preamble_markdown,
)
from edgeeval.report.speed import write_speed_tables
from edgeeval.report.summarize import (
    FORMULA,
    PER_GB,
    PER_JOULE,
    TIE_RULE,
    WORKED_EXAMPLE,
    HostGroup,
    RankRow,
    energy_refusal,
    group_by_host,
    label_knob_points,
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
from edgeeval.store.items import RunItems
from edgeeval.store.plans import read_predictions
from edgeeval.store.racelog import stop_notes

if TYPE_CHECKING:  # plots imports matplotlib; render loads it only when writing
    from edgeeval.report.plots import Plot

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


LEGEND_MD = (
    "Ranked by cap/GB, capability per GB of peak memory (higher is better). Rank =2: a "
    "shared rank (tied within noise); -: not ranked (failed, or over the budget). ± is a "
    "standard error (capability, cap/GB) or a sample stddev (speed). See "
    "[How to read this](#how-to-read-this)."
)


LEGEND_J_MD = (
    "Ranked by cap/J, capability per joule: capability x generated tokens per joule of the "
    "tg test (higher is better; the ± is the capability's SE, scaled: energy is taken as "
    "exact). Rows without an energy figure are listed unranked, never as 0. Rank =2: a "
    "shared rank; -: not ranked. See [How to read this](#how-to-read-this)."
)


def ranking_table(rows: Sequence[RankRow], *, per_joule: bool = False) -> str:
    """The ranking as a Markdown table, the ranked metric (cap/GB, or cap/J with `per_joule`
    and the generated tokens per joule beside it) beside the variant: at the top of report.md
    and in its by-host sections."""
    j_head = " cap/J | gen tok/J |" if per_joule else ""
    lines = [
        f"| rank | variant |{j_head} cap/GB | capability | peak GB | tg t/s | pp t/s | file GB "
        "| load s | quant | status |",
        "|---:|---|" + "---:|---:|" * per_joule + "---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        j_cells = (
            f" {pm(r.capability_per_joule, r.capability_per_joule_se)} "
            f"| {num(r.gen_tokens_per_j, 1)} |"
            if per_joule
            else ""
        )
        lines.append(
            f"| {rank_label(r)} | {md(r.name)} |{j_cells} "
            f"{pm(r.capability_per_gb, r.capability_per_gb_se)}"
            f" | {pm(r.capability, r.capability_se)} | {num(r.peak_rss_gb, 3)} "
            f"| {pm(r.tg_ts, r.tg_stddev_ts)} | {pm(r.pp_ts, r.pp_stddev_ts)} "
            f"| {num(r.file_gb, 3)} | {num(r.load_s)} | {md(r.quant)} | {md(verdict(r), 300)} |"
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
    rank_by: str = PER_GB

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
        if self.rank_by != PER_GB:
            data["rank_by"] = self.rank_by
        return data


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
        *preamble_markdown(meta, records),
        ranking_table(rows, per_joule=meta.rank_by == PER_JOULE),
        "",
        LEGEND_J_MD if meta.rank_by == PER_JOULE else LEGEND_MD,
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
        *memory_markdown(records),
        *failed_markdown(rows, records),
        *_hosts_markdown(host_groups),
        *host_markdown(records),
    ]
    return "\n".join(parts) + "\n"


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
    """Write report.md/.csv/.json/.html and plot-*.png (the plots with data) into
    `directory`; return their paths (keys md, csv, json, html and png-<plot>). `stored` are
    the other runs' records for the by-host section and the threads plot; by default the
    store beside `directory`."""
    # Imported here: matplotlib takes about half a second to import, and the CLI imports
    # this module for every command (to register `report --budget-gb`).
    from edgeeval.report.html import render_html

    stored = stored_records(directory.parent) if stored is None else stored
    groups = group_by_host(records, stored)
    tasks = sorted({t for r in rows for t in r.task_acc})
    plots = _plots(rows, records, stored, meta.budget_gb, fidelity)
    table = variant_rows(rows, records, fidelity) if fidelity else []
    pairs = pairs or Pairing("none")
    first = [answer_section(rows, pairs, meta.budget_gb)]
    later = [comparison_section(pairs), power_section(pairs)]
    # how far `edgeeval plan` was off for the variants it predicted (none planned: no lines)
    planned = planned_markdown(records, read_predictions(directory.parent))
    evidence = [*sections_markdown(later), *planned]
    markdown = to_markdown(rows, records, meta, tasks, groups, sections_markdown(first), evidence)
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
            extra=sections_html(later) + markdown_html("\n".join(planned)) + kv_html(records),
            first=sections_html(first),
            fidelity=fidelity,
        ),
    }
    return _write_files(directory, texts, plots)


def _plots(
    rows: Sequence[RankRow],
    records: Sequence[rec.ModelRecord],
    stored: Sequence[rec.ModelRecord],
    budget_gb: float | None,
    fidelity: Sequence[rec.FidelityResult],
) -> list[Plot]:
    """The report's plots, memory per context length last when the run has one."""
    # Imported here: matplotlib takes about half a second to import (see write_report).
    from edgeeval.report.plots import all_plots

    plots = all_plots(
        rows, records, thread_scaling(records, stored), budget_gb=budget_gb, fidelity=fidelity
    )
    kv = kv_plot(records)
    return [*plots, kv] if kv else list(plots)


def _write_files(directory: Path, texts: dict[str, str], plots: Sequence[Plot]) -> dict[str, Path]:
    """report.<kind> for each text and plot-<key>.png for each plot with data; their paths."""
    paths = {kind: store.write_atomic(directory / f"report.{kind}", t) for kind, t in texts.items()}
    for plot in plots:  # a plot without data has no file (nor a stale one from a re-render)
        png = directory / f"plot-{plot.key}.png"
        if plot.has_data:
            paths[f"png-{plot.key}"] = store.write_atomic(png, plot.png)
        else:
            png.unlink(missing_ok=True)
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


def relabelled_items(
    items: RunItems | str, records: Sequence[rec.ModelRecord], labelled: Sequence[rec.ModelRecord]
) -> RunItems | str:
    """The run's per-item scores keyed by the labelled records (label_knob_points renames a
    knob point's record, and a record's key holds its name); a refusal stays as it is."""
    if isinstance(items, str):
        return items
    scores = {
        new.key: items.scores[old.key]
        for old, new in zip(records, labelled, strict=True)
        if old.key in items.scores
    }
    return dataclasses.replace(items, scores=scores)


def render_run(
    run: str,
    *,
    budget_gb: float | None = None,
    root: Path | None = None,
    rank_at_ctx: int | None = None,
    rank_by: str = PER_GB,
) -> tuple[str, list[RankRow], dict[str, Path]]:
    """(Re)write a run's reports from its stored records, ranking within `budget_gb` when
    given, by peak memory estimated at `rank_at_ctx` tokens of context when given, by
    capability per joule with `rank_by` PER_JOULE (a ConfigError naming --rank-by, before
    anything is written, when no variant has energy measured); loads no model. Returns (run
    id, rows, paths)."""
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
    why = energy_refusal(records) if rank_by == PER_JOULE else ""
    if why:
        raise ConfigError(
            f"--rank-by {PER_JOULE}: run {run_id}: {why}; it is not ranked per joule (never "
            f"as 0); allowed here: --rank-by {PER_GB} (the default)",
            path="the command line",
            key="--rank-by",
        )
    labelled = label_knob_points(records)  # a variant x knob point is its own row
    ranked, kept = records_at_ctx(labelled, rank_at_ctx) if rank_at_ctx else (labelled, [])
    directory = store.run_dir(run_id, root)
    items = relabelled_items(load_pairing(run_id, directory.parent, records), records, labelled)
    pairs = pairing(ranked, items)
    paired = paired_ses(pairs)
    rows = rank_rows(split_thinking(ranked), budget_gb=budget_gb, paired=paired, rank_by=rank_by)
    rows = with_race_stops(rows, stop_notes(run_id, directory.parent))
    meta = ReportMeta(
        run_id=run_id,
        host=manifest.get("host"),
        settings=manifest.get("settings"),
        budget_gb=budget_gb,
        warnings=tuple(warnings),
        rank_at_ctx=rank_at_ctx,
        rank_note=rank_note(rank_at_ctx, kept) if rank_at_ctx else "",
        rank_by=rank_by,
    )
    points = label_fidelity(fidelity, records)  # each knob point's KLD on its own row
    paths = write_report(directory, rows, labelled, meta, fidelity=points, pairs=pairs)
    # the llama-bench shaped speed tables, as `edgeeval bench` writes them (pipeline.render);
    # their type_k/type_v/flash_attn columns tell the knob points apart
    paths.update({f"speed_{k}": v for k, v in write_speed_tables(directory, records).items()})
    paths.update(write_lm_eval(directory, labelled))  # lm-eval's results_<date>.json, samples
    return run_id, rows, paths
