"""Speed results in llama-bench's own output shapes: Markdown, CSV, JSON and JSONL.

Every row holds llama-bench's full field set first (store/llamabench.py: the fields of the
llama-bench that the bundled llama.cpp builds, in its order and with its JSON types, real
values such as build_commit from ggml_commit() and model_type from llama_model_desc), then
`samples_ns` and `samples_ts` as llama-bench's JSON has them, so llama.cpp's
scripts/compare-llama-bench.py reads speed.json, speed.jsonl and speed.csv (with
`-t llama-bench`), and the store's edgeeval.sqlite (table llama_bench), as they are.

edgeeval adds, after those: `test` (the test's name), `use_mmap` (the field older llama-bench
versions key on), `peak_rss_bytes` and, for generation tests, the roofline: `roofline_ts` =
host bandwidth / (weights + KV bytes read per token) and `roofline_efficiency` = avg_ts /
roofline_ts; then `llama_cpp_python_version`, `host_id` and `run_id`. The roofline is given
only for tests that keep every layer in host memory: with layers offloaded to a GPU, the
device's memory bandwidth bounds generation (and on Apple silicon the GPU reads unified memory
faster than the CPU's copy loop that measured the host), so the host's figure would be a wrong
ceiling.

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
from edgeeval.metrics import tg_ceiling
from edgeeval.report.cells import gb, md
from edgeeval.store import llamabench
from edgeeval.store.files import write_atomic

EXTRA_FIELDS = [
    "test",
    "use_mmap",
    "peak_rss_bytes",
    "roofline_ts",
    "roofline_efficiency",
    "llama_cpp_python_version",
    "host_id",
    "run_id",
]
FIELDS = [*llamabench.FIELDS, "samples_ns", "samples_ts", *EXTRA_FIELDS]


def kv_bytes_at(record: rec.ModelRecord, depth: int) -> int:
    """KV cache bytes holding `depth` tokens (the full-context estimate scaled linearly)."""
    if not record.kv_cache_bytes or not record.settings.n_ctx:
        return 0
    return record.kv_cache_bytes * depth // record.settings.n_ctx


def speed_rows(records: list[rec.ModelRecord]) -> list[dict[str, Any]]:
    """One llama-bench row (plus edgeeval's fields) per speed test of every record."""
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
    row: dict[str, Any] = {
        **llamabench.row(record, s),
        "samples_ns": list(s.samples_ns),
        "samples_ts": list(s.samples_ts),
        "test": s.test,
        "use_mmap": record.settings.use_mmap,
        "peak_rss_bytes": _speed_peak(record),
        "roofline_ts": None,
        "roofline_efficiency": None,
        "llama_cpp_python_version": host.llama_cpp_python_version,
        "host_id": host.host_id,
        "run_id": record.run_id,
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


def size_text(n_bytes: int) -> str:
    """llama-bench's size column: MiB below 1 GiB, else GiB.

    >>> size_text(96576768), size_text(5 * 1024**3)
    ('92.10 MiB', '5.00 GiB')
    """
    if n_bytes < 1024**3:
        return f"{n_bytes / 1024**2:.2f} MiB"
    return f"{n_bytes / 1024**3:.2f} GiB"


def params_text(n_params: int) -> str:
    """llama-bench's params column: M below a billion, else B.

    >>> params_text(134515008), params_text(1_543_714_304)
    ('134.52 M', '1.54 B')
    """
    if n_params < 1_000_000_000:
        return f"{n_params / 1e6:.2f} M"
    return f"{n_params / 1e9:.2f} B"


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """llama-bench's Markdown columns (model, size, params, backend, ngl, threads, test,
    t/s), with the variant first and n_batch, fa and the roofline added."""
    # llama-bench adds the KV cache type columns when a test's types are not f16
    kv = any((r["type_k"], r["type_v"]) != ("f16", "f16") for r in rows)
    lines = [
        "| variant | model | size | params | backend | ngl | threads | n_batch | fa | "
        + ("type_k | type_v | " if kv else "")
        + "test | t/s | roofline t/s | efficiency |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|"
        + ("---|---|" if kv else "")
        + "---:|---:|---:|---:|",
    ]
    for r in rows:
        roof = f"{r['roofline_ts']:.1f}" if r["roofline_ts"] else "-"
        eff = f"{100 * r['roofline_efficiency']:.0f} %" if r["roofline_efficiency"] else "-"
        types = f"{r['type_k']} | {r['type_v']} | " if kv else ""
        lines.append(
            f"| {md(r['model_filename'])} | {md(r['model_type'])} "
            f"| {size_text(r['model_size'])} | {params_text(r['model_n_params'])} "
            f"| {md(r['backends'])} | {r['n_gpu_layers']} | {r['n_threads']} | {r['n_batch']} "
            f"| {r['flash_attn']} | {types}{r['test']} "
            f"| {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} | {roof} | {eff} |"
        )
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    """As llama-bench's CSV writes it: booleans 0/1; lists (the samples) as JSON."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list):
        return json.dumps(value)
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(v) for k, v in r.items()})
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
