"""`edgeeval compare RUN_A RUN_B`: the same variants in two runs, or on two machines.

Variants are matched by name and file sha256. For each metric the table gives A, B, the ratio
B/A, and whether the difference exceeds the noise:

- pp and tg tokens/s, from the raw repetition samples (Welch's standard error of a difference of
  means): beyond noise when |mean_B - mean_A| > 2 * sqrt(sd_A^2 / n_A + sd_B^2 / n_B). With
  fewer than 2 samples on a side the noise is unknown ("?").
  Example: tg samples A = (10, 11, 12), B = (13, 14, 15): means 11 and 14, sd 1 each, noise
  2 * sqrt(1/3 + 1/3) = 1.63 < 3, so B is faster beyond noise (ratio 1.27).
- capability: the ranking's tie rule, |cap_B - cap_A| > 1.96 * sqrt(se_A^2 + se_B^2).
- peak memory: measured once per run, so there is no repetition noise; a change of more than
  3 % is flagged (the sampler agrees with the kernel's ru_maxrss within 3 %).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeeval import records as rec
from edgeeval.errors import EdgeevalError
from edgeeval.metrics import mean_stddev
from edgeeval.report.summarize import label_knob_points, noise, summarize_record
from edgeeval.settings import GB
from edgeeval.store import runs as store
from edgeeval.text import safe_text

#: Relative change in peak memory treated as real (there is one measurement per run).
MEMORY_TOLERANCE = 0.03


class NothingToCompareError(EdgeevalError):
    """The two runs share no variant (same name and file sha256)."""


@dataclass(frozen=True)
class MetricDiff:
    """One metric of one variant in runs A and B. `spread_*` is the sd (speed) or SE
    (capability); `noise` the threshold |B - A| is compared with; `beyond_noise` is None when
    it cannot be told (a side is missing or has fewer than 2 samples)."""

    metric: str
    a: float | None
    b: float | None
    spread_a: float | None = None
    spread_b: float | None = None
    ratio: float | None = None
    noise: float | None = None
    beyond_noise: bool | None = None


@dataclass(frozen=True)
class VariantDiff:
    name: str
    sha256: str
    status_a: str
    status_b: str
    metrics: tuple[MetricDiff, ...]


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    hosts: tuple[str, str]
    settings_changed: dict[str, tuple[object, object]]
    variants: list[VariantDiff]
    only_a: list[str]
    only_b: list[str]


def diff(
    metric: str,
    a: float | None,
    b: float | None,
    *,
    spread_a: float | None = None,
    spread_b: float | None = None,
    threshold: float | None = None,
) -> MetricDiff:
    """A MetricDiff; beyond noise when |b - a| > threshold (unknown without a threshold)."""
    if a is None or b is None:
        return MetricDiff(metric, a, b, spread_a, spread_b)
    ratio = b / a if a else None
    beyond = None if threshold is None else abs(b - a) > threshold
    return MetricDiff(metric, a, b, spread_a, spread_b, ratio, threshold, beyond)


def speed_diff(metric: str, a: rec.SpeedResult | None, b: rec.SpeedResult | None) -> MetricDiff:
    """Compare two speed tests by their raw samples (rule and example in the module
    docstring); the noise is unknown when either side has fewer than 2 samples."""
    if a is None or b is None or not a.samples_ts or not b.samples_ts:
        return diff(metric, a.avg_ts if a else None, b.avg_ts if b else None)
    (mean_a, sd_a), (mean_b, sd_b) = mean_stddev(a.samples_ts), mean_stddev(b.samples_ts)
    n_a, n_b = len(a.samples_ts), len(b.samples_ts)
    threshold = 2 * math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b) if min(n_a, n_b) > 1 else None
    return diff(metric, mean_a, mean_b, spread_a=sd_a, spread_b=sd_b, threshold=threshold)


_SWEPT = ("n_threads", "n_batch", "n_ubatch", "n_gpu_layers", "flash_attn", "type_k", "type_v")


def _test_id(s: rec.SpeedResult) -> tuple[object, ...]:
    """What makes two speed results the same test: its name plus every swept parameter."""
    return (s.test, *(getattr(s, f) for f in _SWEPT))


def _speed_label(s: rec.SpeedResult, varying: Sequence[str]) -> str:
    """ "tg32 t/s", plus the swept parameters that vary within the run ("threads=2")."""
    extra = ", ".join(f"{f.removeprefix('n_')}={getattr(s, f)}" for f in varying)
    return f"{s.test} t/s" + (f" ({extra})" if extra else "")


def speed_diffs(a: rec.ModelRecord, b: rec.ModelRecord) -> list[MetricDiff]:
    """Every speed test of A against B's same test (same name and swept parameters; a name
    that occurs once on both sides also matches, for records from before the sweeps)."""
    by_id = {_test_id(s): s for s in b.speed}
    names_a, names_b = [s.test for s in a.speed], [s.test for s in b.speed]
    by_name = {s.test: s for s in b.speed if names_b.count(s.test) == 1}
    varying = [f for f in _SWEPT if len({getattr(s, f) for s in a.speed}) > 1]
    out = []
    for s in a.speed:
        other = by_id.get(_test_id(s))
        if other is None and names_a.count(s.test) == 1:
            other = by_name.get(s.test)
        out.append(speed_diff(_speed_label(s, varying), s, other))
    return out


def compare_records(a: rec.ModelRecord, b: rec.ModelRecord) -> VariantDiff:
    """Every metric of one variant measured in two runs."""
    row_a, row_b = summarize_record(a), summarize_record(b)
    peak_a = a.memory.model_peak_bytes / GB if a.memory else None
    peak_b = b.memory.model_peak_bytes / GB if b.memory else None
    metrics = (
        *speed_diffs(a, b),
        diff("peak GB", peak_a, peak_b, threshold=MEMORY_TOLERANCE * peak_a if peak_a else None),
        diff(
            "capability",
            row_a.capability,
            row_b.capability,
            spread_a=row_a.capability_se,
            spread_b=row_b.capability_se,
            threshold=noise(row_a.capability_se, row_b.capability_se),
        ),
    )
    return VariantDiff(a.variant.name, a.variant.sha256, a.status, b.status, metrics)


def _settings_changed(
    a: Sequence[rec.ModelRecord], b: Sequence[rec.ModelRecord]
) -> dict[str, tuple[object, object]]:
    if not a or not b:
        return {}
    sa, sb = dataclasses.asdict(a[0].settings), dataclasses.asdict(b[0].settings)
    return {k: (sa[k], sb[k]) for k in sa if k != "timeout_s" and sa[k] != sb.get(k)}


def compare_runs(run_a: str, run_b: str, *, root: Path | None = None) -> Comparison:
    """Match the variants (and knob points) of two stored runs by name + sha256 and compare
    each pair."""
    id_a, id_b = store.resolve_run(run_a, root), store.resolve_run(run_b, root)
    # a knob sweep's points by their row names ("<variant> + KV q8_0"), as the reports name them
    recs_a = label_knob_points(store.load_records(id_a, root))
    recs_b = label_knob_points(store.load_records(id_b, root))
    by_b = {(r.variant.name, r.variant.sha256): r for r in recs_b}
    pairs = [
        (r, by_b[(r.variant.name, r.variant.sha256)])
        for r in recs_a
        if (r.variant.name, r.variant.sha256) in by_b
    ]
    if not pairs:
        raise NothingToCompareError(
            f"runs {id_a} and {id_b} share no variant with the same name and file sha256 "
            f"(A has {sorted(r.variant.name for r in recs_a)}, B has "
            f"{sorted(r.variant.name for r in recs_b)}); `edgeeval runs` lists stored runs"
        )
    matched = {r.variant.name for r, _ in pairs}
    hosts = (recs_a[0].host.hostname, recs_b[0].host.hostname)
    return Comparison(
        id_a,
        id_b,
        hosts,
        _settings_changed(recs_a, recs_b),
        [compare_records(a, b) for a, b in pairs],
        sorted({r.variant.name for r in recs_a} - matched),
        sorted({r.variant.name for r in recs_b} - matched),
    )


def _value(value: float | None, spread: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if spread is None else f"{value:.3f} ± {spread:.3f}"


def _verdict(d: MetricDiff) -> str:
    return {None: "?", True: "yes", False: "no"}[d.beyond_noise]


def format_comparison(c: Comparison) -> str:
    """The comparison as a Markdown table, with the runs, hosts and changed settings."""
    lines = [f"A: run {c.run_a} on {c.hosts[0]}", f"B: run {c.run_b} on {c.hosts[1]}"]
    lines += [
        f"settings differ: {k} {a} (A) vs {b} (B)" for k, (a, b) in c.settings_changed.items()
    ]
    lines += [
        "",
        "| variant | metric | A | B | B/A | beyond noise |",
        "|---|---|---:|---:|---:|---|",
    ]
    for v in c.variants:
        status = (
            "" if v.status_a == v.status_b == rec.STATUS_OK else f" ({v.status_a} / {v.status_b})"
        )
        for d in v.metrics:
            ratio = "-" if d.ratio is None else f"{d.ratio:.3f}"
            lines.append(
                f"| {safe_text(v.name, 120, markdown=True)}{status} | {d.metric} "
                f"| {_value(d.a, d.spread_a)} "
                f"| {_value(d.b, d.spread_b)} | {ratio} | {_verdict(d)} |"
            )
    lines += [f"only in A: {name}" for name in c.only_a]
    lines += [f"only in B: {name}" for name in c.only_b]
    lines += [
        "",
        "beyond noise: speed |B - A| > 2 * sqrt(sd_A^2/n_A + sd_B^2/n_B) over the "
        "raw samples; capability |B - A| > 1.96 * sqrt(se_A^2 + se_B^2); peak memory "
        f"more than {MEMORY_TOLERANCE:.0%} apart (one measurement per run).",
    ]
    return "\n".join(lines)
