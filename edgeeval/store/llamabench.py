"""Speed results as llama-bench writes them: the field set, the types and one row per test.

The fields are `test::get_fields()` of the llama-bench in the llama.cpp that llama-cpp-python
0.3.36 bundles (tools/llama-bench/llama-bench.cpp), in its order and with its types: JSON
writes its BOOL fields as true/false and its INT fields (flash_attn included) as numbers, and
`-o sql` declares them INTEGER, INTEGER and REAL (avg_ts, stddev_ts) or TEXT. That is what
llama.cpp's scripts/compare-llama-bench.py reads; `FIELDS` moves with llama.cpp versions (an
older llama-bench keyed on use_mmap, this one on load_mode), so it follows the bundled one.

Where each value comes from:
- measured or set per test (SpeedResult): n_threads, n_batch, n_ubatch, n_gpu_layers,
  flash_attn, n_prompt, n_gen, n_depth, test_time, model_type (llama_model_desc), type_k,
  type_v, the samples and their mean and standard deviation;
- the host (HostInfo): build_commit (ggml_commit() of the bundled library), cpu_info and
  gpu_info (ggml's device descriptions, as llama-bench), backends;
- the record: model_size (the GGUF's tensor bytes, what llama_model_size gives),
  model_n_params (llama.cpp's count), load_mode (from use_mmap/use_mlock);
- `LOAD_DEFAULTS`: knobs edgeeval never changes from llama.cpp's defaults, spelled as
  llama-bench writes them (engine.backend.llama_bench_load_facts reads them from the params
  edgeeval really passes; a test checks the two agree);
- build_number: 0. The bundled library does not carry llama.cpp's build number; 0 is what
  llama.cpp itself writes for a build made without git history (cmake/build-info.cmake).

`model_filename` is the variant's name, not a path: the key compare-llama-bench.py joins two
builds on stays the same across machines and cache folders.

Records stored before these facts were recorded still export: build_commit "unknown" (what
llama.cpp writes when it does not know), cpu_info the CPU model, test_time the record's start,
model_type "<model> <quant>" (never the quant alone, which would merge two models).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from edgeeval import records as rec
from edgeeval.metrics import mean_stddev

#: llama-bench's test::get_fields() and the SQL type `-o sql` gives each.
SQL_TYPES: dict[str, str] = {
    "build_commit": "TEXT",
    "build_number": "INTEGER",
    "cpu_info": "TEXT",
    "gpu_info": "TEXT",
    "backends": "TEXT",
    "model_filename": "TEXT",
    "model_type": "TEXT",
    "model_size": "INTEGER",
    "model_n_params": "INTEGER",
    "n_batch": "INTEGER",
    "n_ubatch": "INTEGER",
    "n_threads": "INTEGER",
    "cpu_mask": "TEXT",
    "cpu_strict": "INTEGER",
    "poll": "INTEGER",
    "type_k": "TEXT",
    "type_v": "TEXT",
    "n_gpu_layers": "INTEGER",
    "n_cpu_moe": "INTEGER",
    "split_mode": "TEXT",
    "main_gpu": "INTEGER",
    "no_kv_offload": "INTEGER",
    "flash_attn": "INTEGER",
    "devices": "TEXT",
    "tensor_split": "TEXT",
    "tensor_buft_overrides": "TEXT",
    "load_mode": "TEXT",
    "lazy_mode": "TEXT",
    "embeddings": "INTEGER",
    "no_op_offload": "INTEGER",
    "no_host": "INTEGER",
    "repack": "INTEGER",
    "fit_target": "INTEGER",
    "fit_min_ctx": "INTEGER",
    "n_prompt": "INTEGER",
    "n_gen": "INTEGER",
    "n_depth": "INTEGER",
    "test_time": "TEXT",
    "avg_ns": "INTEGER",
    "stddev_ns": "INTEGER",
    "avg_ts": "REAL",
    "stddev_ts": "REAL",
}
FIELDS: list[str] = list(SQL_TYPES)

#: llama-bench's values for what edgeeval leaves at llama.cpp's defaults: no CPU mask or
#: strict placement and ggml's default polling (the threadpool llama.cpp makes by itself),
#: no MoE experts kept on the CPU, layer split over all devices from device 0, KV cache and
#: host ops offloaded, no tensor overrides, no embeddings mode, weight repacking on, no
#: memory fitting. Checked against the real params by tests/test_llama_bench_compat.py.
LOAD_DEFAULTS: dict[str, Any] = {
    "cpu_mask": "0x0",
    "cpu_strict": False,
    "poll": 50,
    "n_cpu_moe": 0,
    "split_mode": "layer",
    "main_gpu": 0,
    "no_kv_offload": False,
    "devices": "auto",
    "tensor_split": "0.00",
    "tensor_buft_overrides": "none",
    "lazy_mode": "auto",
    "embeddings": False,
    "no_op_offload": 0,
    "no_host": False,
    "repack": True,
    "fit_target": 0,
    "fit_min_ctx": 0,
}
UNKNOWN_COMMIT = "unknown"


def load_mode(use_mmap: bool, use_mlock: bool) -> str:
    """llama_load_mode_name of the load mode edgeeval sets.

    >>> load_mode(True, False), load_mode(False, True), load_mode(True, True)
    ('mmap', 'mlock', 'mmap+mlock')
    """
    if use_mlock:
        return "mmap+mlock" if use_mmap else "mlock"
    return "mmap" if use_mmap else "none"


def rfc3339(stamp: str) -> str:
    """A stored ISO time ("2026-11-29T19:25:22+0000") as llama-bench writes test_time
    ("2026-11-29T19:25:22Z"); a text that does not parse is kept as it is.

    >>> rfc3339("2026-11-29T20:25:22+0100")
    '2026-11-29T19:25:22Z'
    """
    for pattern in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            when = datetime.strptime(stamp, pattern)
        except ValueError:
            continue
        return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return stamp


_DEVICE = re.compile(r"^[^:]*:\s*(.*?)(?:\s*\([\d.]+ GB\))?$")


def gpu_info_of(host: rec.HostInfo) -> str:
    """llama-bench's gpu_info: the stored one, or for older records the descriptions read back
    from `gpu_devices` ("CUDA0: NVIDIA H200 (141.0 GB)" -> "NVIDIA H200").

    >>> import dataclasses
    >>> h = rec.HostInfo("h", "b", "Linux", "6", "x86_64", "cpu", 2, 2, 1, "3", "0", "0", "",
    ...                  "CUDA", True, gpu_devices="CUDA0: NVIDIA H200 (141.0 GB); CUDA1: A")
    >>> gpu_info_of(h), gpu_info_of(dataclasses.replace(h, gpu_info="NVIDIA H100"))
    ('NVIDIA H200, A', 'NVIDIA H100')
    """
    if host.gpu_info or not host.gpu_devices:
        return host.gpu_info
    found = (_DEVICE.match(part.strip()) for part in host.gpu_devices.split(";"))
    return ", ".join(m.group(1) for m in found if m)


def model_type_of(record: rec.ModelRecord, s: rec.SpeedResult) -> str:
    """llama_model_desc as recorded; for older records the model and the quant, so that two
    models sharing a quant never share a model_type."""
    if s.model_type:
        return s.model_type
    return f"{record.variant.model or record.variant.name} {record.variant.quant}".strip()


def row(record: rec.ModelRecord, s: rec.SpeedResult) -> dict[str, Any]:
    """One speed test as llama-bench's JSON writes it: FIELDS in order, with its types."""
    host = record.host
    avg_ns, std_ns = mean_stddev([float(x) for x in s.samples_ns])
    values: dict[str, Any] = {
        **LOAD_DEFAULTS,
        "build_commit": host.build_commit or UNKNOWN_COMMIT,
        "build_number": 0,
        "cpu_info": host.cpu_info or host.cpu_model,
        "gpu_info": gpu_info_of(host),
        "backends": host.backends or host.backend,
        "model_filename": record.variant.name,
        "model_type": model_type_of(record, s),
        "model_size": int(record.weights_bytes or record.variant.size_bytes or 0),
        "model_n_params": int(record.n_params or record.variant.params or 0),
        "n_batch": s.n_batch,
        "n_ubatch": s.n_ubatch,
        "n_threads": s.n_threads,
        "type_k": s.type_k,
        "type_v": s.type_v,
        "n_gpu_layers": s.n_gpu_layers,
        "flash_attn": -1 if s.flash_attn == "auto" else int(s.flash_attn),  # llama.cpp: auto -1
        "load_mode": load_mode(record.settings.use_mmap, record.settings.use_mlock),
        "n_prompt": s.n_prompt,
        "n_gen": s.n_gen,
        "n_depth": s.n_depth,
        "test_time": s.test_time or rfc3339(record.started_at),
        "avg_ns": round(avg_ns),
        "stddev_ns": round(std_ns),
        "avg_ts": s.avg_ts,
        "stddev_ts": s.stddev_ts,
    }
    return {name: values[name] for name in FIELDS}


def rows(records: list[rec.ModelRecord]) -> list[dict[str, Any]]:
    """One llama-bench row per speed test of every record, in record order."""
    return [row(r, s) for r in records for s in r.speed]


def sql_value(value: Any) -> Any:
    """A row value as the SQL table holds it (booleans as 0/1, as llama-bench's -o sql)."""
    return int(value) if isinstance(value, bool) else value
