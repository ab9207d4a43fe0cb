"""The sections of report.md written as Markdown lines: what to know before the ranking,
memory and the roofline, what failed or was skipped, and the host and settings. report.html
shows the same lines through report.mdhtml, so both pages carry them alike."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeeval import records as rec
from edgeeval.report.cells import md
from edgeeval.report.energy import energy_markdown
from edgeeval.report.kvmem import kv_markdown
from edgeeval.report.speed import memory_speed_markdown
from edgeeval.report.summarize import RankRow
from edgeeval.settings import GB

if TYPE_CHECKING:  # render imports this module
    from edgeeval.report.render import ReportMeta


def host_markdown(records: Sequence[rec.ModelRecord]) -> list[str]:
    """The host and settings section: the first record's host, backend and settings."""
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
        f"- backend: {md(ran_on(host, records[0].settings))}; llama-cpp-python "
        f"{host.llama_cpp_python_version}; edgeeval {host.edgeeval_version}; "
        f"Python {host.python_version}",
        f"- llama.cpp system info: `{host.llama_cpp_system_info}`",
        f"- settings: `{json.dumps(records[0].settings.shown())}`",
        *context_line(records),
    ]


def context_line(records: Sequence[rec.ModelRecord]) -> list[str]:
    """The context the models ran in (every value the records hold: a knob sweep measures
    each point as its own record), and the --as runtime profile it came from; none for a run
    at edgeeval's own defaults (its reports stay as they were)."""
    runs = [r.settings for r in records]
    s = runs[0]

    def values(single: str, *sweeps: str) -> list[Any]:
        seen: list[Any] = []
        for one in runs:
            for value in (*(v for f in sweeps for v in getattr(one, f)), getattr(one, single)):
                if value not in seen:
                    seen.append(value)
        return seen

    ctx = values("n_ctx", "sweep_n_ctx")
    types_k = values("cache_type_k", "sweep_cache_type_k", "sweep_cache_type_kv")
    types_v = values("cache_type_v", "sweep_cache_type_v", "sweep_cache_type_kv")
    flashes = values("flash_attn", "sweep_flash_attn")
    swa = values("swa_full", "sweep_swa_full")
    knobs = (types_k, types_v, swa, flashes, s.runtime)
    if knobs == (["f16"], ["f16"], [True], [False], "") and len(ctx) == 1:
        return []
    flash = ",".join("auto" if f == "auto" else ("on" if f else "off") for f in flashes)
    windows = ",".join("full-size" if full else "windowed" for full in swa)
    source = f"as {s.runtime} loads by default (README: Runtime profiles)" if s.runtime else "given"
    return [
        f"- context: n_ctx {','.join(map(str, ctx))}, KV cache K {','.join(types_k)} / V "
        f"{','.join(types_v)}, flash attention {flash}, sliding-window cache {windows}, batch "
        f"{s.n_batch} / micro-batch {s.n_ubatch}; {source}"
    ]


def ran_on(host: rec.HostInfo, settings: rec.RunSettings) -> str:
    """Which backend and device ran the layers: "CUDA, 99 layers on CUDA0: NVIDIA H200 (...)"
    or "CPU" when nothing was offloaded."""
    layers = settings.sweep_n_gpu_layers or (settings.n_gpu_layers,)
    offloaded = [n for n in layers if n != 0]
    if not offloaded or not host.gpu_offload:
        return f"{host.backend} build, all layers on the CPU" if host.gpu_offload else "CPU"
    count = ", ".join("all" if n < 0 else str(n) for n in offloaded)
    device = host.gpu_devices or "the GPU"
    return f"{host.backend}, {count} layers offloaded to {device}"


def preamble_markdown(meta: ReportMeta, records: Sequence[rec.ModelRecord]) -> list[str]:
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


def memory_markdown(records: Sequence[rec.ModelRecord], *, kv: bool = True) -> list[str]:
    """The memory and roofline section, with memory per context length when there is one
    and `kv` (the HTML page draws that part itself: kvmem.kv_html)."""
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
    per_ctx = kv_markdown(records) if kv else ""
    energy = energy_markdown(records)  # [] for runs stored before energy was read
    return parts + (["", per_ctx] if per_ctx else []) + (["", *energy] if energy else [])


def failed_markdown(rows: Sequence[RankRow], records: Sequence[rec.ModelRecord]) -> list[str]:
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
