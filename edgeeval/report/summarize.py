"""From stored ModelRecords to a ranking: capability, capability per GB, noise-aware dominance.

capability = 100 * mean over tasks of max(0, (acc - chance) / (1 - chance))   (0..100, with SE)
capability per GB = capability / peak GB (resident set + CUDA device memory; GB = 10^9 bytes)
Example: a model with capability 30.0 that peaked at 0.60 GB resident scores 50.0 per GB.

Two capabilities are *tied* when they differ by less than 1.96 standard errors of their
difference: the paired SE over the items both answered (edgeeval.stats, report.paired) when
the run stored them, else 1.96 * sqrt(se_a^2 + se_b^2): the test items cannot tell them
apart. A variant is *dominated* when another one (on the same host) uses no more peak
memory and is more capable beyond that noise, or is tied with it and uses strictly less
memory. Variants over a memory budget are listed but not ranked; failed variants are listed,
never ranked as zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from edgeeval import records as rec
from edgeeval.metrics import capability, proportion_se
from edgeeval.settings import GB

#: Two-sided 95 % normal quantile: differences below TIE_Z combined SEs are ties.
TIE_Z = 1.96

FORMULA = (
    "capability = 100 * mean over tasks of max(0, (acc - chance) / (1 - chance)); "
    "capability per GB = capability / peak memory in GB (the resident set, plus the "
    "process's device memory on CUDA; 1 GB = 10^9 bytes); "
    "per file GB uses the GGUF file size instead."
)

TIE_RULE = (
    "Two variants are tied when their capabilities differ by less than 1.96 standard "
    "errors of the difference: the paired SE over the items both answered where the run "
    "stored them (see the comparisons), else the unpaired 1.96 * sqrt(se_a^2 + se_b^2); "
    "neither is better. A variant is "
    "dominated when another on the same host uses no more peak memory and is more "
    "capable beyond that noise, or is tied with it and uses strictly less memory. Ranks "
    "are shared (=2) when capability per GB differs by less than 1.96 combined SEs of "
    "capability per GB (SE / peak GB, or the paired SE of the per-GB difference; peak memory "
    "is taken as exact)."
)

WORKED_EXAMPLE = (
    "Worked example: variant A scores 62.5 % (SE 5 points) on a 4-choice task "
    "(chance 25 %) and 50 % (SE 5) on a 2-choice task (chance 50 %). Gains are "
    "(0.625 - 0.25) / 0.75 = 0.5 and 0, so capability = 100 * (0.5 + 0) / 2 = "
    "25.0, SE = 100 * sqrt((0.05/0.75)^2 + (0.05/0.5)^2) / 2 = 6.0. Peaking at "
    "0.50 GB it scores 25.0 / 0.50 = 50.0 per GB (SE 12.0). Variant B, capability "
    "30.0 +- 5.0 at 0.80 GB, differs from A by 5.0 < 1.96 * sqrt(6.0^2 + 5.0^2) = "
    "15.3: a tie, and A is smaller, so B is dominated by A."
)


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
    capability_per_gb_se: float | None = None
    tied_with: tuple[str, ...] = ()  # same-host variants whose capability is within noise
    rank_tied: bool = False  # the rank is shared with another row (shown as "=2")
    pareto: bool = False  # on the Pareto front of peak memory vs capability
    over_budget: bool = False  # peak memory above the budget: listed, not ranked
    # other row -> (paired SE of the capability difference, of the cap/GB difference)
    paired_se: dict[str, tuple[float, float]] = field(default_factory=dict)
    # a race ended its accuracy work early (store.racelog): "stopped after 40 items: beaten by
    # X (p = 0.0004)"; its capability, from fewer items, has the wider interval
    race_stop: str = ""
    # an emulated format (FP8 in an F16 file): peak_rss_gb and file_gb are the storage the
    # format would take, speed and load time are left out (they are F16's)
    emulated: str = ""
    # the context the row was measured in (records.KNOB_DEFAULTS); a variant measured at
    # several knob points has a row per point, named "<variant> + KV q8_0" (label_knob_points)
    n_ctx: int | None = None
    type_k: str = ""
    type_v: str = ""
    flash_attn: bool | str | None = None
    swa_full: bool | None = None
    # energy of the headline tg test (engine/energy.py): generated tokens per joule, and
    # capability per joule = capability x that (the --rank-by capability_per_joule axis; its
    # SE is the capability's, scaled: energy is taken as exact, as peak memory is); None where
    # no energy was measured, never 0. `unranked`: why a measured row has no rank on that axis.
    gen_tokens_per_j: float | None = None
    capability_per_joule: float | None = None
    capability_per_joule_se: float | None = None
    unranked: str = ""

    @property
    def measured(self) -> bool:
        """True when the variant has a capability and a peak memory (it can be compared)."""
        return self.capability_per_gb is not None


def scored_tasks(record: rec.ModelRecord) -> list[rec.TaskScore]:
    """Tasks that count toward capability: scored ones, not skipped (code execution off) or
    failed ones, which are shown as such and never counted as zero."""
    return [t for t in record.tasks if t.status == "ok"]


def _status(record: rec.ModelRecord, ok: bool) -> str:
    if record.status != rec.STATUS_OK:
        return record.status
    if not scored_tasks(record):
        return "no tasks"
    return "ok" if ok else "no memory"


def summarize_record(record: rec.ModelRecord) -> RankRow:
    """A ranking row for one record (rank and noise marks are filled in by `rank_rows`)."""
    tasks = scored_tasks(record)
    ok = record.status == rec.STATUS_OK and bool(tasks) and record.memory is not None
    cap = se = per_gb = per_gb_se = per_file = peak = None
    if record.memory is not None and record.load_s is not None:
        # shown for a model stopped after its load too (what was measured), never ranked on
        peak = record.memory.model_peak_bytes / GB
    if ok:
        # a task at 0 % or 100 % counts with the SE its Wilson interval implies, not 0
        cap, se = capability(
            [(t.acc, proportion_se(t.acc, t.acc_se, t.n), t.chance) for t in tasks]
        )
        per_gb, per_gb_se = (cap / peak, se / peak) if peak else (None, None)
        per_file = cap / (record.variant.size_bytes / GB) if record.variant.size_bytes else None
    pp, tg = main_speed(record, "pp"), main_speed(record, "tg")
    per_j = tg.tokens_timed / tg.energy_j if tg and tg.energy_j and tg.tokens_timed else None
    emulated = record.variant.emulated if record.variant.storage_bytes else ""
    file_gb = (emulated and record.variant.storage_bytes or record.variant.size_bytes) / GB
    uss = record.memory.peak_uss_bytes / GB if record.memory and ok else None
    if emulated:  # ranked by the format's storage; its speed and memory are F16's: left out
        pp = tg = uss = per_j = None
        peak = file_gb if peak is not None else None
        if cap is not None and se is not None:
            per_gb, per_gb_se, per_file = cap / file_gb, se / file_gb, cap / file_gb
    return RankRow(
        rank=None,
        name=record.variant.name,
        family=record.variant.family,
        model=record.variant.model,
        quant=record.variant.quant,
        kind=record.variant.kind,
        status=_status(record, ok),
        error=record.error,
        file_gb=file_gb,
        peak_rss_gb=peak,
        peak_uss_gb=uss,
        load_s=None if emulated else record.load_s,
        pp_ts=pp.avg_ts if pp else None,
        pp_stddev_ts=pp.stddev_ts if pp else None,
        tg_ts=tg.avg_ts if tg else None,
        tg_stddev_ts=tg.stddev_ts if tg else None,
        capability=cap,
        capability_se=se,
        capability_per_gb=per_gb,
        capability_per_file_gb=per_file,
        task_acc={t.task: t.acc for t in tasks},
        task_acc_se={t.task: proportion_se(t.acc, t.acc_se, t.n) for t in tasks},
        host_id=record.host.host_id,
        capability_per_gb_se=per_gb_se,
        emulated=emulated,
        n_ctx=record.settings.n_ctx,
        type_k=record.settings.cache_type_k,
        type_v=record.settings.cache_type_v,
        flash_attn=record.settings.flash_attn,
        swa_full=record.settings.swa_full,
        gen_tokens_per_j=per_j,
        capability_per_joule=cap * per_j if cap is not None and per_j else None,
        capability_per_joule_se=se * per_j if se is not None and per_j else None,
    )


def label_knob_points(records: Sequence[rec.ModelRecord]) -> list[rec.ModelRecord]:
    """The records with each variant x knob point named as its own row: where the records
    disagree on a context knob (n_ctx, KV cache types, flash attention, windowing), each
    record's name gains the knobs in which it differs from the default, "<variant> + KV q8_0";
    the others (and every record of a run without a knob sweep) keep their names.

    Two records of one variant differ in some knob, and at most one of them has its default
    value, so their names differ."""
    shown = rec.varying_knobs(r.settings for r in records)
    if not shown:
        return list(records)
    return [
        replace(
            r, variant=replace(r.variant, name=rec.knob_label(r.variant.name, r.settings, shown))
        )
        for r in records
    ]


def speed_kind(speed: rec.SpeedResult) -> str | None:
    """ "pp" or "tg" for a plain llama-bench test at depth 0 ("pp128", "tg32"); None for the
    combined "pp+tg" test and tests at a depth ("tg32 @ d512")."""
    match = re.fullmatch(r"(pp|tg)\d+", speed.test)
    return match.group(1) if match and not speed.n_depth else None


def threads_used(record: rec.ModelRecord) -> int:
    """Threads a record ran with: n_threads, where 0 means the host's physical cores."""
    return rec.resolve_threads(record.settings.n_threads, record.host.cores_physical)


def _as_configured(speed: rec.SpeedResult, record: rec.ModelRecord) -> int:
    """How many of a test's parameters match the run's own settings (sweeps add others)."""
    st = record.settings
    pairs = (
        (speed.n_threads, threads_used(record)),
        (speed.n_batch, st.n_batch),
        (speed.n_gpu_layers, st.n_gpu_layers),
        (speed.flash_attn, st.flash_attn),
    )
    return sum(got == want for got, want in pairs)


def main_speed(record: rec.ModelRecord, kind: str) -> rec.SpeedResult | None:
    """The headline "pp" or "tg" result: the plain test at depth 0 whose threads, batch, GPU
    layers and flash-attention best match the run's settings (the first one on a draw)."""
    plain = [s for s in record.speed if speed_kind(s) == kind]
    return max(plain, key=lambda s: _as_configured(s, record)) if plain else None


def noise(se_a: float | None, se_b: float | None) -> float:
    """The smallest difference that is not a tie: TIE_Z * sqrt(se_a^2 + se_b^2).

    >>> round(noise(6.0, 5.0), 1)
    15.3
    """
    return TIE_Z * math.hypot(se_a or 0.0, se_b or 0.0)


def diff_se(a: RankRow, b: RankRow, *, per_gb: bool = False) -> float:
    """SE of a's capability (per GB) minus b's: paired when `a.paired_se` has b, else the
    unpaired sqrt(se_a^2 + se_b^2)."""
    paired = a.paired_se.get(b.name)
    if paired is not None:
        return paired[1 if per_gb else 0]
    if per_gb:
        return math.hypot(a.capability_per_gb_se or 0.0, b.capability_per_gb_se or 0.0)
    return math.hypot(a.capability_se or 0.0, b.capability_se or 0.0)


def tied(a: RankRow, b: RankRow) -> bool:
    """True when the capabilities of two measured rows differ by less than the noise.

    Example: 40.0 +- 4.0 and 33.0 +- 3.0 differ by 7.0 < 1.96 * sqrt(4^2 + 3^2) = 9.8: tied;
    with a paired SE of the difference of 2.0 they are not (7.0 > 1.96 * 2.0 = 3.9).
    """
    gap = abs(a.capability - b.capability)  # type: ignore[operator]
    return gap == 0 or gap < TIE_Z * diff_se(a, b)  # equal: tied, even at SE 0


def dominates(other: RankRow, row: RankRow) -> bool:
    """True when `other` dominates `row`: same host, no more peak memory, and either more
    capable beyond noise or tied within noise with strictly less peak memory."""
    if other is row or other.host_id != row.host_id or not (other.measured and row.measured):
        return False
    if other.peak_rss_gb > row.peak_rss_gb:  # type: ignore[operator]
        return False
    if tied(other, row):
        return other.peak_rss_gb < row.peak_rss_gb  # type: ignore[operator]
    return other.capability > row.capability  # type: ignore[operator]


def dominator(row: RankRow, rows: Sequence[RankRow]) -> str:
    """Name of the variant that dominates `row` with the best capability per GB, or ""."""
    beaters = [o for o in rows if dominates(o, row)]
    if not beaters:
        return ""
    return min(beaters, key=lambda o: (-(o.capability_per_gb or 0.0), o.name)).name


def _mark(row: RankRow, rows: Sequence[RankRow], budget_gb: float | None) -> RankRow:
    """`row` with its dominance, ties, Pareto flag and budget flag filled in."""
    by = dominator(row, rows)
    ties = tuple(
        sorted(o.name for o in rows if o is not row and o.host_id == row.host_id and tied(o, row))
    )
    over = budget_gb is not None and row.peak_rss_gb > budget_gb  # type: ignore[operator]
    return replace(row, dominated_by=by, tied_with=ties, pareto=not by, over_budget=over)


def _per_gb_tied(a: RankRow, b: RankRow) -> bool:
    gap = abs(a.capability_per_gb - b.capability_per_gb)  # type: ignore[operator]
    return gap == 0 or gap < TIE_Z * diff_se(a, b, per_gb=True)


def _per_joule_tied(a: RankRow, b: RankRow) -> bool:
    """Capability per joule within noise: the unpaired SEs (the paired SE of a per-joule
    difference is not computed; unpaired is the wider, so fewer rows are told apart)."""
    gap = abs(a.capability_per_joule - b.capability_per_joule)  # type: ignore[operator]
    return gap == 0 or gap < noise(a.capability_per_joule_se, b.capability_per_joule_se)


#: The ranking axes (--rank-by): capability per GB of peak memory (the default), or capability
#: per joule (only where energy was measured; race/rules.py names the first the same).
PER_GB, PER_JOULE = "capability_per_gb", "capability_per_joule"
RANK_BY = (PER_GB, PER_JOULE)


def _with_ranks(ranked: list[RankRow], rank_by: str = PER_GB) -> list[RankRow]:
    """Competition ranks over capability per GB (1, =2, =2, 4): a row shares the rank of the
    first row of its group while their capability per GB is tied. Comparing with the group's
    first row, not the previous one, keeps a long chain of small gaps from becoming one tie.
    `rank_by` PER_JOULE ranks capability per joule the same way."""
    same = _per_joule_tied if rank_by == PER_JOULE else _per_gb_tied
    ranks: list[int] = []
    leader = 0
    for index, row in enumerate(ranked):
        if index and not same(ranked[leader], row):
            leader = index
        ranks.append(leader + 1)
    return [
        replace(row, rank=rank, rank_tied=ranks.count(rank) > 1)
        for row, rank in zip(ranked, ranks, strict=True)
    ]


def rank_rows(
    records: Sequence[rec.ModelRecord],
    *,
    budget_gb: float | None = None,
    paired: dict[str, dict[str, tuple[float, float]]] | None = None,
    rank_by: str = PER_GB,
) -> list[RankRow]:
    """Rows ranked by capability per GB (best first), then variants over `budget_gb` (peak
    resident GB; unranked), then failed variants (unranked, never scored as zero). `paired`
    (report.paired.paired_ses) gives the paired SEs that ties and dominance use. `rank_by`
    PER_JOULE ranks by capability per joule instead: rows without an energy figure are listed
    after the ranked ones, unranked (`unranked` says why), never ranked as 0; the caller
    refuses the axis when no row has one (energy_refusal)."""
    if budget_gb is not None and budget_gb <= 0:
        raise ValueError(f"budget_gb must be positive, got {budget_gb}")
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    rows = [summarize_record(r) for r in records]
    if paired:
        rows = [replace(r, paired_se=paired.get(r.name, {})) for r in rows]
    measured = [r for r in rows if r.measured]
    marked = [_mark(r, measured, budget_gb) for r in measured]
    fits = [r for r in marked if not r.over_budget]
    no_energy: list[RankRow] = []
    if rank_by == PER_JOULE:
        no_energy = [
            replace(r, unranked="no energy measured: not ranked per joule")
            for r in fits
            if r.capability_per_joule is None
        ]
        fits = [r for r in fits if r.capability_per_joule is not None]
    score = (
        (lambda r: r.capability_per_joule)
        if rank_by == PER_JOULE
        else (lambda r: r.capability_per_gb)
    )
    ranked = sorted(fits, key=lambda r: (-(score(r) or 0.0), r.name))
    over = sorted((r for r in marked if r.over_budget), key=lambda r: (r.peak_rss_gb, r.name))
    failed = sorted((r for r in rows if not r.measured), key=lambda r: r.name)
    return _with_ranks(ranked, rank_by) + sorted(no_energy, key=lambda r: r.name) + over + failed


def energy_refusal(records: Sequence[rec.ModelRecord]) -> str:
    """Why capability per joule cannot rank these records ("" when some measured row has an
    energy figure): what the speed tests said about energy, in one line."""
    rows = [summarize_record(r) for r in records]
    if any(r.capability_per_joule is not None for r in rows):
        return ""
    said = sorted({s.energy_method for r in records for s in r.speed if s.energy_method})
    how = (
        "; ".join(said)
        if said
        else "the run's speed tests read no energy (recorded before energy was read)"
    )
    return f"no variant has energy measured ({how})"


def verdict(row: RankRow) -> str:
    """One phrase for the status column: the failure, "over budget", "dominated by X" or
    "pareto front", plus the variants it is tied with."""
    if not row.measured:
        return row.status
    text = (
        "over budget"
        if row.over_budget
        else (f"dominated by {row.dominated_by}" if row.dominated_by else "pareto front")
    )
    if row.tied_with:
        text += "; tied with " + ", ".join(row.tied_with)
    if row.race_stop:
        text += "; " + row.race_stop
    if row.unranked:
        text = row.unranked + "; " + text
    if row.emulated:
        text = f"emulated ({row.emulated}; GB = its storage, no speed); " + text
    return text


def with_race_stops(rows: Sequence[RankRow], stops: dict[str, str]) -> list[RankRow]:
    """`rows` with the race's stop (variant -> its words) marked on the variants it names."""
    return [replace(r, race_stop=stops[r.name]) if r.name in stops else r for r in rows]


def rank_label(row: RankRow) -> str:
    """The rank as shown: "3", "=2" for a shared rank, "-" when unranked."""
    if row.rank is None:
        return "-"
    return f"={row.rank}" if row.rank_tied else str(row.rank)


@dataclass(frozen=True)
class HostGroup:
    """One host's measurements of a run's variants (same files, same settings), ranked."""

    host: rec.HostInfo
    run_ids: tuple[str, ...]
    rows: list[RankRow]


@dataclass(frozen=True)
class ThreadPoint:
    """Speed of one variant at one thread count (mean tokens/s and sample stddev)."""

    threads: int
    pp_ts: float | None
    pp_stddev_ts: float | None
    tg_ts: float | None
    tg_stddev_ts: float | None


def _preferred_last(records: Sequence[rec.ModelRecord]) -> list[rec.ModelRecord]:
    """Oldest first and failed before ok, so that `dict` updates keep the latest ok record."""
    return sorted(records, key=lambda r: (r.status == rec.STATUS_OK, r.started_at))


def group_by_host(
    run_records: Sequence[rec.ModelRecord], stored: Sequence[rec.ModelRecord]
) -> list[HostGroup]:
    """The run's variants as measured on every host found in `stored` (same file sha256 and
    same settings key), ranked per host; [] when only one host has them. On each host the
    latest ok record wins, and the run's own records win on the run's host."""
    wanted = {(r.variant.sha256, r.settings.key()) for r in run_records if r.variant.sha256}
    latest: dict[tuple[str, str, tuple], rec.ModelRecord] = {}
    for r in [*_preferred_last(stored), *run_records]:
        if (r.variant.sha256, r.settings.key()) in wanted:
            latest[(r.host.host_id, r.variant.sha256, rec.knob_point(r.settings))] = r
    hosts: dict[str, list[rec.ModelRecord]] = {}
    for r in latest.values():
        hosts.setdefault(r.host.host_id, []).append(r)
    if len(hosts) < 2:
        return []
    groups = [
        HostGroup(
            host=rs[0].host,
            run_ids=tuple(sorted({r.run_id for r in rs})),
            rows=rank_rows(label_knob_points(rs)),
        )
        for rs in hosts.values()
    ]
    return sorted(groups, key=lambda g: (g.host.hostname, g.host.host_id))


def _same_but_threads(a: rec.RunSettings, b: rec.RunSettings) -> bool:
    def base(s: rec.RunSettings) -> dict:
        ignored = ("n_threads", "sweep_threads", "timeout_s")
        return {k: v for k, v in rec.to_dict(s).items() if k not in ignored}

    return base(a) == base(b)


def _speeds_by_threads(record: rec.ModelRecord) -> dict[int, dict[str, rec.SpeedResult]]:
    """Plain pp/tg results at depth 0 by thread count (a threads sweep gives several); where
    other sweeps give several per thread count, the one closest to the settings wins."""
    out: dict[int, dict[str, rec.SpeedResult]] = {}
    for s in sorted(record.speed, key=lambda s: _as_configured(s, record)):
        kind = speed_kind(s)
        if kind:
            out.setdefault(s.n_threads or threads_used(record), {})[kind] = s
    return out


def thread_scaling(
    run_records: Sequence[rec.ModelRecord], stored: Sequence[rec.ModelRecord]
) -> dict[str, list[ThreadPoint]]:
    """Speed by thread count for each ok variant of the run, on the run's host: from the
    record's own threads sweep and from other stored ok records of the same file with the same
    settings apart from the thread count (the latest wins at each thread count)."""
    series: dict[str, list[ThreadPoint]] = {}
    for record in run_records:
        if record.status != rec.STATUS_OK:
            continue
        merged: dict[int, dict[str, rec.SpeedResult]] = {}
        for other in [*_preferred_last(stored), record]:
            if (
                other.status == rec.STATUS_OK
                and other.host.host_id == record.host.host_id
                and other.variant.sha256 == record.variant.sha256
                and _same_but_threads(other.settings, record.settings)
            ):
                for threads, speeds in _speeds_by_threads(other).items():
                    merged.setdefault(threads, {}).update(speeds)
        series[record.variant.name] = [_thread_point(n, merged[n]) for n in sorted(merged)]
    return series


def _thread_point(threads: int, speeds: dict[str, rec.SpeedResult]) -> ThreadPoint:
    pp, tg = speeds.get("pp"), speeds.get("tg")
    return ThreadPoint(
        threads=threads,
        pp_ts=pp.avg_ts if pp else None,
        pp_stddev_ts=pp.stddev_ts if pp else None,
        tg_ts=tg.avg_ts if tg else None,
        tg_stddev_ts=tg.stddev_ts if tg else None,
    )
