"""Speed results in llama-bench's own output shapes: Markdown, CSV, JSON and JSONL.

Field names follow llama-bench (`model_filename`, `n_threads`, `n_prompt`, `n_gen`, `n_depth`,
`avg_ns`, `stddev_ns`, `avg_ts`, `stddev_ts`, `samples_ns`, `samples_ts`, ...) so its users can
read them without a glossary. edgeeval adds `peak_rss_bytes` and, for generation tests, the
roofline: `roofline_ts` = host bandwidth / (weights + KV bytes read per token) and
`roofline_efficiency` = avg_ts / roofline_ts. The roofline is given only for tests that keep
every layer in host memory: with layers offloaded to a GPU, the device's memory bandwidth bounds
generation (and on Apple silicon the GPU reads unified memory faster than the CPU's copy loop
that measured the host), so the host's figure would be a wrong ceiling.

The report's memory section (`memory_speed_markdown`: weights, KV cache, the rest of the peak,
time to first token and the roofline per variant) is built from the same rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.metrics import mean_stddev, tg_ceiling
from edgeeval.report.cells import gb, md
from edgeeval.store.files import write_atomic

FIELDS = [
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "backends",
    "cpu_info",
    "n_threads",
    "n_batch",
    "n_ubatch",
    "n_gpu_layers",
    "flash_attn",
    "use_mmap",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "samples_ns",
    "samples_ts",
    "peak_rss_bytes",
    "roofline_ts",
    "roofline_efficiency",
    "llama_cpp_python_version",
    "host_id",
]


def kv_bytes_at(record: rec.ModelRecord, depth: int) -> int:
    """KV cache bytes holding `depth` tokens (the full-context estimate scaled linearly)."""
    if not record.kv_cache_bytes or not record.settings.n_ctx:
        return 0
    return record.kv_cache_bytes * depth // record.settings.n_ctx


def speed_rows(records: list[rec.ModelRecord]) -> list[dict[str, Any]]:
    """One llama-bench style row per speed test of every successful record."""
    rows = []
    for record in records:
        for s in record.speed:
            rows.append(_row(record, s))
    return rows


def _speed_peak(record: rec.ModelRecord) -> int | None:
    """Peak RSS of load + speed tests (one sequence); the whole child's peak for records from
    before the accuracy phase was batched (the same thing then)."""
    if record.memory is None:
        return None
    return record.memory.speed_peak_rss_bytes or record.memory.peak_rss_bytes


def _row(record: rec.ModelRecord, s: rec.SpeedResult) -> dict[str, Any]:
    host = record.host
    avg_ns, std_ns = mean_stddev([float(x) for x in s.samples_ns])
    row: dict[str, Any] = {
        "model_filename": record.variant.name,
        "model_type": record.variant.quant,
        "model_size": record.variant.size_bytes,
        "model_n_params": record.variant.params,
        "backends": host.backend,
        "cpu_info": host.cpu_model,
        "n_threads": s.n_threads,
        "n_batch": s.n_batch,
        "n_ubatch": s.n_ubatch,
        "n_gpu_layers": s.n_gpu_layers,
        "flash_attn": s.flash_attn,
        "use_mmap": record.settings.use_mmap,
        "n_prompt": s.n_prompt,
        "n_gen": s.n_gen,
        "n_depth": s.n_depth,
        "test": s.test,
        "avg_ns": round(avg_ns),
        "stddev_ns": round(std_ns),
        "avg_ts": s.avg_ts,
        "stddev_ts": s.stddev_ts,
        "samples_ns": list(s.samples_ns),
        "samples_ts": list(s.samples_ts),
        "peak_rss_bytes": _speed_peak(record),
        "roofline_ts": None,
        "roofline_efficiency": None,
        "llama_cpp_python_version": host.llama_cpp_python_version,
        "host_id": host.host_id,
    }
    weights = record.weights_bytes
    on_host = s.n_gpu_layers == 0 or not host.gpu_offload
    if s.n_gen and not s.n_prompt and host.mem_bandwidth_bytes_per_s and weights and on_host:
        # mid-test depth: the KV cache grows from n_depth to n_depth + n_gen during the test
        ceiling = tg_ceiling(
            host.mem_bandwidth_bytes_per_s, weights, kv_bytes_at(record, s.n_depth + s.n_gen // 2)
        )
        row["roofline_ts"], row["roofline_efficiency"] = ceiling, s.avg_ts / ceiling
    return row


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | quant | backend | threads | n_batch | ngl | fa | test | t/s "
        "| roofline t/s | efficiency |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        roof = f"{r['roofline_ts']:.1f}" if r["roofline_ts"] else "-"
        eff = f"{100 * r['roofline_efficiency']:.0f} %" if r["roofline_efficiency"] else "-"
        lines.append(
            f"| {md(r['model_filename'])} | {md(r['model_type'])} | {md(r['backends'])} "
            f"| {r['n_threads']} | {r['n_batch']} | {r['n_gpu_layers']} "
            f"| {int(r['flash_attn'])} | {r['test']} "
            f"| {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} | {roof} | {eff} |"
        )
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
    return buf.getvalue()


def write_speed_tables(directory: Path, records: list[rec.ModelRecord]) -> dict[str, Path]:
    """Write speed.md, speed.csv, speed.json and speed.jsonl in `directory` (atomically);
    return their paths by extension."""
    rows = speed_rows(records)
    paths = {ext: directory / f"speed.{ext}" for ext in ("md", "csv", "json", "jsonl")}
    write_atomic(paths["md"], to_markdown(rows))
    write_atomic(paths["csv"], to_csv(rows))
    write_atomic(paths["json"], json.dumps(rows, indent=2))
    write_atomic(paths["jsonl"], "".join(json.dumps(r) + "\n" for r in rows))
    return paths


def memory_speed_markdown(records: Sequence[rec.ModelRecord]) -> str:
    """Per variant: where the memory went (weights, KV cache, the rest of the runtime), time to
    first token, and generation speed against the host's bandwidth roofline. The peaks cover
    the whole child, including the accuracy phase's KV cache for `accuracy batch` sequences;
    the speed-phase peak is the memory of load + speed tests alone (one sequence)."""
    roof = {(r["model_filename"], r["test"]): r for r in speed_rows(list(records))}
    # runs from before the batched accuracy phase have no speed-phase peak: their table
    # keeps its old columns, so a stored run renders as it always did
    batched = any(r.memory and r.memory.speed_peak_rss_bytes is not None for r in records)
    lines = [
        "| variant | weights GB | KV GB @ n_ctx | peak RSS GB | runtime other GB "
        "| peak USS GB | footprint / GPU GB | mmap | TTFT ms | tg roofline t/s "
        "| efficiency |" + (" speed-phase peak GB (1 seq) | accuracy batch |" if batched else ""),
        "|---|" + "---:|" * 6 + "---|" + "---:|" * (5 if batched else 3),
    ]
    for r in records:
        if r.status != rec.STATUS_OK or r.memory is None:
            continue
        m = r.memory
        other = max(0, m.peak_rss_bytes - (r.weights_bytes or 0) - (r.kv_cache_bytes or 0))
        extra = " / ".join(gb(v) for v in (m.peak_footprint_bytes, m.peak_gpu_bytes))
        ttft = f"{r.ttft[0].avg_ms:.0f} ± {r.ttft[0].stddev_ms:.0f}" if r.ttft else "-"
        tg = next((s for s in r.speed if s.n_gen and not s.n_prompt and not s.n_depth), None)
        row = roof.get((r.variant.name, tg.test)) if tg else None
        ceiling = f"{row['roofline_ts']:.1f}" if row and row["roofline_ts"] else "-"
        eff = (
            f"{100 * row['roofline_efficiency']:.0f} %"
            if row and row["roofline_efficiency"]
            else "-"
        )
        lines.append(
            f"| {md(r.variant.name)} | {gb(r.weights_bytes)} | {gb(r.kv_cache_bytes)} "
            f"| {gb(m.peak_rss_bytes)} | {gb(other)} | {gb(m.peak_uss_bytes)} "
            f"| {extra} | {'on' if m.use_mmap else 'off'} | {ttft} | {ceiling} "
            f"| {eff} |" + (f" {gb(m.speed_peak_rss_bytes)} | {m.eval_batch} |" if batched else "")
        )
    return "\n".join(lines)
