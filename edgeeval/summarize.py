"""From stored ModelRecords to a ranking: capability, capability per GB, Pareto dominance.

capability = 100 * mean over tasks of max(0, (acc - chance) / (1 - chance))   (0..100, with SE)
capability per GB = capability / peak resident GB   (GB = 10^9 bytes)
Example: a model with capability 30.0 that peaked at 0.60 GB resident scores 50.0 per GB.
A variant is dominated when another one uses no more memory and is at least as capable, and
is strictly better in one of the two. Failed variants are listed, never ranked as zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeeval import records as rec
from edgeeval.metrics import capability
from edgeeval.settings import GB

FORMULA = ("capability = 100 * mean over tasks of max(0, (acc - chance) / (1 - chance)); "
           "capability per GB = capability / peak resident memory in GB (1 GB = 10^9 bytes); "
           "per file GB uses the GGUF file size instead.")


@dataclass(frozen=True)
class RankRow:
    """One line of the ranking; numbers are None where the variant failed."""

    rank: int | None
    name: str
    family: str
    model: str
    quant: str
    kind: str
    status: str
    error: str
    file_gb: float
    peak_rss_gb: float | None
    peak_uss_gb: float | None
    load_s: float | None
    pp_ts: float | None
    pp_stddev_ts: float | None
    tg_ts: float | None
    tg_stddev_ts: float | None
    capability: float | None
    capability_se: float | None
    capability_per_gb: float | None
    capability_per_file_gb: float | None
    task_acc: dict[str, float] = field(default_factory=dict)
    task_acc_se: dict[str, float] = field(default_factory=dict)
    dominated_by: str = ""
    host_id: str = ""


def summarize_record(record: rec.ModelRecord) -> RankRow:
    """A ranking row for one record (rank is filled in by `rank_rows`)."""
    ok = record.status == rec.STATUS_OK and bool(record.tasks)
    cap = se = per_gb = per_file = None
    peak = record.memory.peak_rss_bytes / GB if record.memory and ok else None
    if ok:
        cap, se = capability([(t.acc, t.acc_se, t.chance) for t in record.tasks])
        per_gb = cap / peak if peak else None
        per_file = cap / (record.variant.size_bytes / GB)
    pp, tg = record.speed_of("pp"), record.speed_of("tg")
    return RankRow(
        rank=None, name=record.variant.name, family=record.variant.family,
        model=record.variant.model, quant=record.variant.quant, kind=record.variant.kind,
        status=record.status if ok or record.status != rec.STATUS_OK else "no tasks",
        error=record.error, file_gb=record.variant.size_bytes / GB, peak_rss_gb=peak,
        peak_uss_gb=record.memory.peak_uss_bytes / GB if record.memory and ok else None,
        load_s=record.load_s, pp_ts=pp.avg_ts if pp else None,
        pp_stddev_ts=pp.stddev_ts if pp else None, tg_ts=tg.avg_ts if tg else None,
        tg_stddev_ts=tg.stddev_ts if tg else None, capability=cap, capability_se=se,
        capability_per_gb=per_gb, capability_per_file_gb=per_file,
        task_acc={t.task: t.acc for t in record.tasks},
        task_acc_se={t.task: t.acc_se for t in record.tasks}, host_id=record.host.host_id)


def dominator(row: RankRow, rows: list[RankRow]) -> str:
    """Name of a variant that dominates `row` (smaller-or-equal memory, at least as capable,
    strictly better in one), or ""."""
    for other in rows:
        if other is row or other.capability is None or other.peak_rss_gb is None:
            continue
        no_worse = (other.peak_rss_gb <= row.peak_rss_gb  # type: ignore[operator]
                    and other.capability >= row.capability)  # type: ignore[operator]
        better = (other.peak_rss_gb < row.peak_rss_gb  # type: ignore[operator]
                  or other.capability > row.capability)  # type: ignore[operator]
        if no_worse and better:
            return other.name
    return ""


def rank_rows(records: list[rec.ModelRecord]) -> list[RankRow]:
    """Rows sorted by capability per GB (best first), failed variants last and unranked."""
    rows = [summarize_record(r) for r in records]
    ranked = [r for r in rows if r.capability_per_gb is not None]
    failed = [r for r in rows if r.capability_per_gb is None]
    ranked.sort(key=lambda r: (-(r.capability_per_gb or 0.0), r.name))
    out = []
    for index, row in enumerate(ranked, 1):
        out.append(_replace(row, rank=index, dominated_by=dominator(row, ranked)))
    return out + sorted(failed, key=lambda r: r.name)


def _replace(row: RankRow, **changes: object) -> RankRow:
    from dataclasses import replace

    return replace(row, **changes)  # type: ignore[arg-type]
