"""`edgeeval plan`: which variants should fit in a memory budget at a context, and how fast they
should run here, before anything is downloaded.

Per variant, from its GGUF header (the local copy, else a ranged read of the Hub file:
fetch/header.py):
- peak = weights (the header's tensor bytes) + KV cache at n_ctx (gguf/kvcache.py, F16 and a
  full-size sliding-window cache, as `edgeeval bench` runs it) + the runtime's own memory;
- tg t/s = efficiency x bandwidth / bytes read per token (metrics.predicted_tg), at an empty
  context (as the tg tests run) and with the whole n_ctx of KV read per token;
- pp t/s = this machine's effective compute rate / (2 x parameters) (metrics.predicted_pp).

The calibration comes from this machine's earlier runs in the store (same hostname and CPU).
Generation: per variant, its fastest CPU tg test at depth 0 (contention only slows a test
down) gives a measured efficiency (tg / roofline). Small models reach a smaller share of the
roofline than large ones (fixed costs per token weigh more), so the efficiency is fitted as a
power of the bytes read per token (metrics.fit_power_law, exponent 0 to 1) and capped at the
highest measured efficiency, so a model larger than any measured one is bandwidth-bound at
the best share seen. One variant, or points that give no such fit: the median efficiency for
every size. Prompt: the compute rate pp t/s x 2 x parameters per quant type. Runtime memory:
the median of (speed-phase peak - weights - KV). Without earlier runs: efficiency 0.55
(llmfit's factor, metrics.DEFAULT_TG_EFFICIENCY), no pp prediction, runtime memory 300 MB
(run.runner's pre-flight margin). The bandwidth is the host's measured copy bandwidth
(engine/bandwidth.py's cache, or the newest stored record's).
"""

from __future__ import annotations

import platform
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeeval import metrics, settings
from edgeeval import records as rec
from edgeeval.catalog.models import Source, Variant
from edgeeval.errors import EdgeevalError
from edgeeval.fetch.header import Header, variant_header
from edgeeval.gguf.kvcache import kv_bytes
from edgeeval.report.speed import speed_rows
from edgeeval.report.summarize import main_speed
from edgeeval.store.plans import Prediction

#: Runtime memory beyond weights + KV when no earlier run measured it (run.runner's margin).
DEFAULT_OVERHEAD_BYTES = 300 * 10**6


class PlanInputError(EdgeevalError):
    """An option plan cannot use (a budget of 0, a context above what a model was trained
    for): one line naming the option and what is allowed; a usage error."""

    exit_code = 2


@dataclass(frozen=True)
class Calibration:
    bandwidth_bytes_per_s: float
    efficiency: float
    efficiency_source: str
    flops_per_s: dict[str, float]  # quant type ("" = any) -> effective prompt FLOP/s
    pp_source: str
    overhead_bytes: int
    overhead_source: str
    # efficiency = c x bytes**b (b in 0..1), capped: None = `efficiency` for every size
    fit: tuple[float, float] | None = None
    efficiency_cap: float = 0.0

    def efficiency_at(self, bytes_per_token: float) -> float:
        """The share of the roofline a model reading `bytes_per_token` should reach here."""
        if self.fit is None:
            return self.efficiency
        c, b = self.fit
        return min(c * bytes_per_token**b, self.efficiency_cap)


@dataclass(frozen=True)
class PlanRow:
    variant: Variant
    prediction: Prediction | None  # None when there is no header to predict from
    header_source: str  # "local file", "Hub header (1.0 MiB read)"; or why there is none
    refused: str = ""  # why the variant cannot run at this context (above its trained length)


def this_machine() -> tuple[str, str]:
    """(hostname, CPU model), the keys earlier runs of this machine are found by."""
    from edgeeval.engine.host import cpu_model

    return socket.gethostname(), cpu_model() or platform.processor()


def mine(records: Sequence[rec.ModelRecord], hostname: str, cpu: str) -> list[rec.ModelRecord]:
    return [
        r
        for r in records
        if r.host.hostname == hostname and r.host.cpu_model == cpu and r.status == rec.STATUS_OK
    ]


def calibrate(records: Sequence[rec.ModelRecord], bandwidth: float | None) -> Calibration:
    """The factors for this machine from its stored records (already filtered with `mine`);
    `bandwidth` overrides the stored one. The module docstring says how."""
    on_cpu = [r for r in records if not r.host.gpu_offload or r.settings.n_gpu_layers == 0]
    bw = bandwidth or next(
        (
            r.host.mem_bandwidth_bytes_per_s
            for r in reversed(on_cpu)
            if r.host.mem_bandwidth_bytes_per_s
        ),
        None,
    )
    if not bw:
        raise PlanInputError(
            "plan: this machine's memory bandwidth is unknown (no cached measurement, no "
            "stored run); run one `edgeeval bench` first"
        )
    best: dict[str, tuple[float, float]] = {}  # variant -> (bytes per token, efficiency)
    for r in on_cpu:
        bw_then = r.host.mem_bandwidth_bytes_per_s
        for row in speed_rows([r]):
            if not row["roofline_efficiency"] or row["n_depth"] or not bw_then:
                continue
            point = (bw_then / row["roofline_ts"], row["roofline_efficiency"])
            if r.variant.name not in best or point[1] > best[r.variant.name][1]:
                best[r.variant.name] = point
    fit = metrics.fit_power_law(list(best.values()))
    if fit and 0 <= fit[1] <= 1:
        cap = max(e for _, e in best.values())
        eff = statistics.median(e for _, e in best.values())
        eff_source = (
            f"measured: efficiency = {fit[0]:.3g} x bytes^{fit[1]:.2f} (a fit over the fastest "
            f"tg test of {len(best)} variants on this machine), at most {cap:.2f}"
        )
    else:
        fit, cap = None, 0.0
        if best:
            eff = statistics.median(e for _, e in best.values())
            eff_source = f"measured: median tg / roofline of {len(best)} variants on this machine"
        else:
            eff = metrics.DEFAULT_TG_EFFICIENCY
            eff_source = f"default {eff} (llmfit's factor): no earlier tg test on this machine"
    rates: dict[str, tuple[str, float]] = {}  # variant -> (quant, its best compute rate)
    overheads = []
    for r in on_cpu:
        pp = main_speed(r, "pp")
        if pp is not None and r.n_params:
            rate = pp.avg_ts * 2 * r.n_params
            if rate > rates.get(r.variant.name, ("", 0.0))[1]:
                rates[r.variant.name] = (r.variant.quant.upper(), rate)
        peak = r.memory and (r.memory.speed_peak_rss_bytes or r.memory.peak_rss_bytes)
        if peak and r.weights_bytes:
            overheads.append(peak - r.weights_bytes - (r.kv_cache_bytes or 0))
    by_quant: dict[str, list[float]] = {}
    for quant, rate in rates.values():
        by_quant.setdefault(quant, []).append(rate)
    flops = {q: statistics.median(v) for q, v in by_quant.items()}
    if rates:
        flops[""] = statistics.median(rate for _, rate in rates.values())
    pp_source = (
        f"measured: per quant type, the median over its variants of their best pp compute "
        f"rate ({', '.join(f'{q} {v / 1e9:.0f}' for q, v in sorted(flops.items()) if q)} "
        "GFLOP/s); another type takes the median of all (rough: prompt kernels differ by type)"
        if rates
        else "no earlier pp test on this machine: not predicted"
    )
    if overheads:
        overhead = max(0, int(statistics.median(overheads)))
        over_source = f"measured: median of {len(overheads)} runs' peak - weights - KV"
    else:
        overhead, over_source = DEFAULT_OVERHEAD_BYTES, "default 300 MB: no earlier run"
    return Calibration(
        bw, eff, eff_source, flops, pp_source, overhead, over_source, fit=fit, efficiency_cap=cap
    )


def trained_context(meta: dict[str, object]) -> int | None:
    arch = meta.get("general.architecture")
    value = meta.get(f"{arch}.context_length") if isinstance(arch, str) else None
    return value if type(value) is int and value > 0 else None


def predict(
    variant: Variant,
    header: Header,
    *,
    n_ctx: int,
    budget_bytes: int,
    cal: Calibration,
    machine: tuple[str, str],
) -> tuple[Prediction, str]:
    """The variant's prediction, and why it is refused at `n_ctx` ("" when it is not)."""
    summary = header.summary
    weights = summary.data_bytes
    trained = trained_context(summary.metadata)
    refused = ""
    if trained is not None and n_ctx > trained:
        refused = (
            f"--ctx {n_ctx} is above its trained context length {trained} (allowed: 1 to {trained})"
        )
    kv = kv_bytes(summary.metadata, n_ctx)
    rate = cal.flops_per_s.get(variant.quant.upper()) or cal.flops_per_s.get("")
    peak = weights + (kv or 0) + cal.overhead_bytes
    bw, eff = cal.bandwidth_bytes_per_s, cal.efficiency_at(weights)
    prediction = Prediction(
        made_at=time.strftime(settings.ISO_TIME),
        hostname=machine[0],
        cpu_model=machine[1],
        variant=variant.name,
        n_ctx=n_ctx,
        weights_bytes=weights,
        kv_bytes=kv,
        peak_bytes=peak,
        budget_bytes=budget_bytes,
        fits=peak <= budget_bytes and not refused,
        tg_ts=metrics.predicted_tg(bw, eff, weights),
        tg_full_ctx_ts=metrics.predicted_tg(bw, eff, weights, kv or 0),
        pp_ts=metrics.predicted_pp(rate, summary.n_params) if rate else None,
        efficiency=eff,
        efficiency_source=cal.efficiency_source,
        bandwidth_bytes_per_s=bw,
    )
    return prediction, refused


def check_budget(budget_gb: float, n_ctx: int) -> None:
    """One line for a budget or context no plan can use."""
    if not budget_gb > 0:
        raise PlanInputError(
            f"--budget-gb {budget_gb:g}: the budget must be more than 0 GB (e.g. 8)"
        )
    if n_ctx < 1:
        raise PlanInputError(f"--ctx {n_ctx}: the context must be at least 1 token (e.g. 4096)")


def plan(
    variants: Sequence[Variant],
    *,
    budget_gb: float,
    n_ctx: int,
    stored: Sequence[rec.ModelRecord],
    bandwidth: float | None,
    machine: tuple[str, str],
    header_of: Callable[[Variant], Header | str] = variant_header,
) -> tuple[list[PlanRow], Calibration]:
    """A row per variant (fitting ones first, fastest first), and the calibration used."""
    check_budget(budget_gb, n_ctx)
    here = mine(stored, *machine)
    cal = calibrate(here, bandwidth)
    budget = int(budget_gb * settings.GB)
    rows = []
    for variant in variants:
        header = header_of(variant)
        if isinstance(header, str):
            rows.append(PlanRow(variant, None, header))
            continue
        source = header.source
        if header.bytes_read:
            n = header.bytes_read
            source += (
                f" ({n / 2**20:.1f} MiB read)" if n >= 2**20 else f" ({n / 1024:.0f} KiB read)"
            )
        # a variant already measured here is predicted from the others only, so the report's
        # "predicted vs measured" is a real test of the method, never its own measurement
        others = [r for r in here if r.variant.name != variant.name]
        own = calibrate(others, cal.bandwidth_bytes_per_s) if len(others) < len(here) else cal
        prediction, refused = predict(
            variant, header, n_ctx=n_ctx, budget_bytes=budget, cal=own, machine=machine
        )
        rows.append(PlanRow(variant, prediction, source, refused))
    rows.sort(
        key=lambda r: (
            r.prediction is None,
            not (r.prediction and r.prediction.fits),
            -(r.prediction.tg_ts if r.prediction else 0),
        )
    )
    return rows, cal


def hub_spec_variant(text: str) -> Variant:
    """A variant for an `hf:` spec without downloading it (the tree API names the file when
    the spec gives a quant), for plan's ranged header read."""
    from edgeeval.fetch import hub
    from edgeeval.fetch.specs import parse_hf, pick_hf_file

    spec = parse_hf(text.removeprefix("hf:"))
    filename = spec.filename
    if filename is None:
        filename = pick_hf_file(spec, [f.path for f in hub.list_files(spec.repo_id, spec.revision)])
    name = filename.rsplit("/", 1)[-1].removesuffix(".gguf").lower()
    return Variant(
        name=name,
        family="unknown",
        model=spec.repo_id,
        quant=spec.quant or "",
        source=Source(kind="hub", repo_id=spec.repo_id, filename=filename, revision=spec.revision),
        license="",
        kind="unknown",
        spec=text,
    )
