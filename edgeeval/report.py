"""Render a run's ranking as Markdown, CSV and JSON (one schema), and a terminal table.

Everything here works from stored records: no model is loaded to (re)render a report.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.summarize import FORMULA, RankRow

TIMED = ("Speed follows llama-bench: synthetic random tokens; only the llama_decode calls (and "
         "the final synchronize) are timed, never loading, tokenization or sampling. One "
         "untimed warmup, then r repetitions with the KV cache cleared before each. pp N = N "
         "prompt tokens decoded in n_batch chunks; tg N = N single-token decodes. tokens/s is "
         "reported as mean ± sample stddev over the repetitions. Peak memory is the child "
         "process's resident set (RSS), sampled from the parent every 20 ms from start to exit; "
         "mmap'd weights count once touched. Load time is the llama.cpp model + context "
         "creation.")

COLUMNS = ["rank", "name", "family", "quant", "kind", "status", "file_gb", "peak_rss_gb",
           "peak_uss_gb", "load_s", "pp_ts", "pp_stddev_ts", "tg_ts", "tg_stddev_ts",
           "capability", "capability_se", "capability_per_gb", "capability_per_file_gb",
           "dominated_by", "error"]


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pm(mean: float | None, sd: float | None, digits: int = 1) -> str:
    return "-" if mean is None else f"{mean:.{digits}f} ± {(sd or 0):.{digits}f}"


def to_json(rows: list[RankRow], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "formula": FORMULA, "gb_bytes": 10**9,
                       "rows": [dataclasses.asdict(r) for r in rows]}, indent=2, sort_keys=True)


def to_csv(rows: list[RankRow], tasks: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS + [f"acc_{t}" for t in tasks] + [f"acc_se_{t}" for t in tasks])
    for row in rows:
        data = dataclasses.asdict(row)
        writer.writerow([data[c] if data[c] is not None else "" for c in COLUMNS]
                        + [row.task_acc.get(t, "") for t in tasks]
                        + [row.task_acc_se.get(t, "") for t in tasks])
    return buf.getvalue()


def ranking_table(rows: list[RankRow]) -> str:
    """The compact Markdown table printed in the terminal and at the top of report.md."""
    lines = ["| rank | variant | quant | file GB | peak GB | load s | pp t/s | tg t/s "
             "| capability | cap/GB | status |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        status = r.status if r.status != "ok" else ("dominated by " + r.dominated_by
                                                   if r.dominated_by else "ok")
        lines.append(
            f"| {_fmt(r.rank)} | {r.name} | {r.quant} | {_fmt(r.file_gb, 3)} "
            f"| {_fmt(r.peak_rss_gb, 3)} | {_fmt(r.load_s)} | {_pm(r.pp_ts, r.pp_stddev_ts)} "
            f"| {_pm(r.tg_ts, r.tg_stddev_ts)} | {_pm(r.capability, r.capability_se)} "
            f"| {_fmt(r.capability_per_gb, 1)} | {status} |")
    return "\n".join(lines)


def _task_table(rows: list[RankRow], tasks: list[str]) -> str:
    head = "| variant | " + " | ".join(tasks) + " |"
    lines = [head, "|---|" + "---:|" * len(tasks)]
    for r in rows:
        cells = [_pm(100 * r.task_acc[t], 100 * r.task_acc_se.get(t, 0.0)) if t in r.task_acc
                 else "-" for t in tasks]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(rows: list[RankRow], records: list[rec.ModelRecord], meta: dict[str, Any],
                tasks: list[str]) -> str:
    host = records[0].host if records else None
    parts = [f"# edgeeval report — run {meta.get('run_id', '?')}", "",
             ranking_table(rows), "", "## How to read this", "", FORMULA,
             "Numbers after ± are the sample standard deviation (speed) or standard error "
             "(accuracy, capability). A variant is *dominated* when another uses no more peak "
             "memory and is at least as capable.", "", TIMED, "",
             "## Accuracy per task (%, ± standard error)", "", _task_table(rows, tasks)]
    failed = [r for r in rows if r.rank is None]
    if failed:
        parts += ["", "## Failed or skipped", ""]
        parts += [f"- **{r.name}** ({r.status}): {r.error}" for r in failed]
    if host:
        parts += ["", "## Host and settings", "",
                  f"- host: {host.hostname} ({host.host_id}), {host.cpu_model}, "
                  f"{host.cores_physical} physical / {host.cores_logical} logical cores, "
                  f"{host.ram_bytes / 1e9:.1f} GB RAM, {host.os} {host.os_version} "
                  f"{host.machine}",
                  f"- backend: {host.backend}; llama-cpp-python {host.llama_cpp_python_version};"
                  f" edgeeval {host.edgeeval_version}; Python {host.python_version}",
                  f"- llama.cpp system info: `{host.llama_cpp_system_info}`",
                  f"- settings: `{json.dumps(dataclasses.asdict(records[0].settings))}`"]
    return "\n".join(parts) + "\n"


def write_report(directory: Path, rows: list[RankRow], records: list[rec.ModelRecord],
                 meta: dict[str, Any]) -> dict[str, Path]:
    """Write report.md, report.csv and report.json into `directory`; return their paths."""
    tasks = sorted({t for r in rows for t in r.task_acc})
    paths = {"md": directory / "report.md", "csv": directory / "report.csv",
             "json": directory / "report.json"}
    paths["md"].write_text(to_markdown(rows, records, meta, tasks), encoding="utf-8")
    paths["csv"].write_text(to_csv(rows, tasks), encoding="utf-8")
    paths["json"].write_text(to_json(rows, meta), encoding="utf-8")
    return paths
