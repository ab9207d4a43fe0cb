"""Pairs of ranking rows compared on the items both answered (edgeeval.stats), from a stored run.

For two rows measured on one host, each task both scored is compared item by item: the same
items (by id) in both rows' per-item lines (store.items). When every such task shares items,
the pair is *paired*: the capability difference and the capability-per-GB difference get the
paired SE of stats.capability_difference, and McNemar's exact test runs per task. Otherwise
(no per-item lines, an older run whose lines cannot be attributed, a task scored by one row
only, a task whose version or items differ) the pair is *unpaired*: the ranking's own
sqrt(se_a^2 + se_b^2), and `reason` says why.

Clusters: a task whose per-item lines name each item's cluster (its task file's `cluster_by`:
mmlu's subject, hellaswag's activity_label, pydoc-cloze's topic) gets a cluster-robust paired
SE (metrics.clustered_se) over the shared items' clusters, and its TaskPair says "clustered by
<key> (K clusters)". The per-task SEs of the scores themselves (TaskScore.acc_se, which the
ranking and the unpaired SE use) are clustered the same way when the run recorded clusters;
`Pairing.clustering` lists those tasks, and `Pairing.cluster_note` says what was clustered (or
that nothing was: a run stored before clusters were recorded, or tasks that name none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import NormalDist

from edgeeval import records as rec
from edgeeval.errors import UnattributedItemsError
from edgeeval.report.protocols import split_thinking
from edgeeval.report.summarize import RankRow, scored_tasks, summarize_record
from edgeeval.stats import (
    ALPHA,
    TARGET_POINTS,
    TaskItems,
    capability_difference,
    discordant,
    equivalence_p,
    items_needed,
    margin_se_floor,
    mcnemar_exact,
    min_detectable,
    paired_difference,
)
from edgeeval.store import items as store_items
from edgeeval.store.items import BY_ORDER, NONE, RunItems

PAIRED, UNPAIRED = "paired", "unpaired"
NOTES = {
    BY_ORDER: "Per-item lines stored without the variant's name (a run from before they "
    "carried it) are attributed by their order, which is unambiguous here: each variant's "
    "block holds exactly its tasks' item counts, in record order.",
    NONE: "This run stored no per-item lines: every comparison uses unpaired SEs.",
}


@dataclass(frozen=True)
class TaskPair:
    """One task of a pair: the paired difference A - B in points of accuracy (its SEs and SD
    too), the discordant items and McNemar's exact p."""

    task: str
    n: int
    diff: float
    se: float
    se_unpaired: float
    sd: float
    only_a: int
    only_b: int
    p_mcnemar: float
    n_clusters: int | None = None  # the SE is clustered over this many clusters
    cluster_by: str = ""  # ... of this key ("subject"); "" when unclustered

    @property
    def clustering(self) -> str:
        """ "clustered by subject (57 clusters)", or "" when the SE is not clustered."""
        return clustered_by(self.cluster_by, self.n_clusters)


@dataclass(frozen=True)
class Pair:
    """Row `a` against row `b` (same host): capability difference a - b, the SE the ranking
    uses (`method`: paired or unpaired) and both SEs, with power figures."""

    a: str
    b: str
    method: str
    diff: float
    se: float
    se_unpaired: float
    per_gb_se: float
    n_items: int
    reason: str = ""  # why unpaired
    tasks: tuple[TaskPair, ...] = ()
    equal_p: float | None = None  # TOST p of "under TARGET_POINTS apart" (stats.equivalence_p)

    @property
    def settled(self) -> bool:
        """The difference is beyond noise: |diff| >= 1.96 SE. At SE 0 a nonzero difference
        (every item differed the same way) is settled; no difference at all is not (these
        items cannot tell the two apart, which says nothing of others)."""
        return abs(self.diff) >= 1.96 * self.se if self.se else bool(self.diff)

    @property
    def equal(self) -> bool:
        """Not apart beyond noise, and shown to differ by under TARGET_POINTS: the 90 %
        interval of the difference lies inside +-TARGET_POINTS (TOST at 5 %, its SE floored
        at the least one a TARGET_POINTS gap can have on these items). A tie that means
        "equal", not "too few items to tell"."""
        return not self.settled and self.equal_p is not None and self.equal_p < ALPHA

    @property
    def p_value(self) -> float:
        """Two-sided normal p of the capability difference (1.0 when both are exactly equal)."""
        if not self.se:
            return 0.0 if self.diff else 1.0
        return 2 * (1 - NormalDist().cdf(abs(self.diff) / self.se))

    @property
    def min_detectable(self) -> float:
        return min_detectable(self.se)

    @property
    def items_to_settle(self) -> int | None:
        """Further items (beyond n) that would detect the observed difference with 80 % power;
        None when no item count can (no difference seen) or it is settled."""
        if self.settled or abs(self.diff) < NO_DIFFERENCE or not self.n_items:
            return None
        need = items_needed(self.se, self.n_items, abs(self.diff))
        return None if need is None else max(need - self.n_items, 0)

    @property
    def items_for_target(self) -> int | None:
        """Items a TARGET_POINTS capability difference would need (same mix of tasks)."""
        return items_needed(self.se, self.n_items, TARGET_POINTS) if self.n_items else None


#: A capability difference below this (points) is no difference seen: the sums of gains of
#: two variants that answered alike differ by rounding only (1e-14 was seen), and scaling
#: their SE to it would ask for an absurd number of items.
NO_DIFFERENCE = 0.005


def clustered_by(key: str, count: int | None) -> str:
    """The report's words for a clustered SE.

    >>> clustered_by("subject", 57), clustered_by("", None)
    ('clustered by subject (57 clusters)', '')
    """
    return f"clustered by {key or 'cluster'} ({count} clusters)" if count else ""


@dataclass
class Pairing:
    """Every same-host pair of a run's rows, and how its per-item lines were attributed.
    `clustering`: task -> (cluster key, cluster counts seen) for the tasks whose per-task SEs
    are clustered (TaskScore.n_clusters); `cluster_note` says so in words."""

    how: str  # store.items ATTRIBUTED / BY_ORDER / NONE, or "refused"
    note: str = ""
    pairs: list[Pair] = field(default_factory=list)
    clustering: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    cluster_note: str = ""

    def between(self, a: str, b: str) -> Pair | None:
        for p in self.pairs:
            if {p.a, p.b} == {a, b}:
                return p
        return None

    @property
    def any_paired(self) -> bool:
        return any(p.method == PAIRED for p in self.pairs)


Items = dict[str, dict[str, float]]  # task -> item id -> score


def _row_items(record: rec.ModelRecord, items: RunItems) -> dict[str, Items]:
    """Per-item scores of the record's ranking rows (split like split_thinking), by row."""
    scores = items.of(record)
    out: dict[str, Items] = {}
    for row in split_thinking([record]):
        tasks: Items = {}
        for t in scored_tasks(row):
            found = scores.get((t.task, t.thinking)) or scores.get((t.task, ""))
            if found:
                tasks[t.task] = found
        out[row.variant.name] = tasks
    return out


def _task_meta(record: rec.ModelRecord) -> dict[str, dict[str, rec.TaskScore]]:
    return {r.variant.name: {t.task: t for t in scored_tasks(r)} for r in split_thinking([record])}


def _why_unpaired(
    ta: dict[str, rec.TaskScore], tb: dict[str, rec.TaskScore], ia: Items, ib: Items
) -> str:
    if set(ta) != set(tb):
        return "the two scored different tasks: " + ", ".join(sorted(set(ta) ^ set(tb)))
    for name in sorted(ta):
        if ta[name].version != tb[name].version:
            return f"task {name}: version {ta[name].version} vs {tb[name].version} (changed task)"
        if name not in ia or name not in ib:
            return f"task {name}: no per-item lines stored"
        if not set(ia[name]) & set(ib[name]):
            return f"task {name}: no item in common (a changed task?)"
    return ""


def _task_pair(task: TaskItems, cluster_by: str = "") -> TaskPair:
    """One task's paired difference in points of accuracy (not of normalized gain)."""
    name, xa, xb = task.task, task.a, task.b
    paired = paired_difference(xa, xb, task.clusters)
    only_a, only_b = discordant(xa, xb)
    return TaskPair(
        task=name,
        n=paired.n,
        diff=100.0 * paired.diff,
        se=100.0 * paired.se,
        se_unpaired=100.0 * paired.se_unpaired,
        sd=100.0 * paired.sd,
        only_a=only_a,
        only_b=only_b,
        p_mcnemar=mcnemar_exact(only_a, only_b),
        n_clusters=paired.n_clusters,
        cluster_by=cluster_by if paired.n_clusters else "",
    )


def pair_rows(
    ra: RankRow,
    rb: RankRow,
    ta: dict[str, rec.TaskScore],
    tb: dict[str, rec.TaskScore],
    ia: Items,
    ib: Items,
    note: str = "",
    items: RunItems | None = None,
) -> Pair:
    """Compare two measured rows: paired where every task shares items, else unpaired. A task
    whose shared items all name a cluster in `items` (at least two clusters) gets clustered
    SEs (RunItems.clusters_of)."""
    diff = (ra.capability or 0.0) - (rb.capability or 0.0)
    unpaired = math.hypot(ra.capability_se or 0.0, rb.capability_se or 0.0)
    per_gb = math.hypot(ra.capability_per_gb_se or 0.0, rb.capability_per_gb_se or 0.0)
    n_items = sum(t.n for t in ta.values())
    why = note or _why_unpaired(ta, tb, ia, ib)
    if why:
        shape = [(t.chance, min(t.n, tb[k].n if k in tb else t.n)) for k, t in ta.items()]
        return Pair(
            ra.name,
            rb.name,
            UNPAIRED,
            diff,
            unpaired,
            unpaired,
            per_gb,
            n_items,
            why,
            equal_p=_equal_p(diff, unpaired, shape),
        )
    shared = {name: sorted(set(ia[name]) & set(ib[name])) for name in sorted(ta)}
    columns = {
        name: ([ia[name][i] for i in ids], [ib[name][i] for i in ids])
        for name, ids in shared.items()
    }
    found = items or RunItems("", NONE)
    tasks = [
        TaskItems(
            name, tuple(xa), tuple(xb), ta[name].chance, found.clusters_of(name, shared[name])
        )
        for name, (xa, xb) in columns.items()
    ]
    cap = capability_difference(tasks)
    gb = capability_difference(
        tasks, scale_a=1 / (ra.peak_rss_gb or 1.0), scale_b=1 / (rb.peak_rss_gb or 1.0)
    )
    return Pair(
        ra.name,
        rb.name,
        PAIRED,
        cap.diff,
        cap.se,
        cap.se_unpaired,
        gb.se,
        cap.n_items,
        tasks=tuple(_task_pair(t, found.cluster_by.get(t.task, "")) for t in tasks),
        equal_p=_equal_p(cap.diff, cap.se, [(t.chance, len(t.a)) for t in tasks]),
    )


def _equal_p(diff: float, se: float, shape: Sequence[tuple[float, int]]) -> float | None:
    """TOST p that the two are under TARGET_POINTS apart, the SE floored at the least one such
    a gap can have on tasks of this (chance, n) shape; None without items."""
    if not shape or not any(n for _, n in shape):
        return None
    floor = margin_se_floor(shape, TARGET_POINTS)
    return equivalence_p(diff, max(se, floor), TARGET_POINTS)


def load_pairing(run_id: str, root: Path, records: Sequence[rec.ModelRecord]) -> RunItems | str:
    """The run's attributed per-item scores, or the refusal's message (UnattributedItemsError)."""
    try:
        manifest_concurrent = any(r.settings.allow_concurrent for r in records)
        in_order = store_items.records_in_file_order(run_id, root)
        return store_items.load_items(run_id, root, in_order, concurrent=manifest_concurrent)
    except UnattributedItemsError as exc:
        return str(exc)


def pairing(records: Sequence[rec.ModelRecord], items: RunItems | str) -> Pairing:
    """Every same-host pair of the records' measured rows (split by thinking mode)."""
    refused = items if isinstance(items, str) else ""
    loaded = items if isinstance(items, RunItems) else RunItems("", NONE)
    rows: list[tuple[RankRow, dict[str, rec.TaskScore], Items]] = []
    for record in records:
        metas, per_item = _task_meta(record), _row_items(record, loaded)
        for split in split_thinking([record]):
            row = summarize_record(split)
            if row.measured:
                name = split.variant.name
                rows.append((row, metas[name], per_item.get(name, {})))
    note = refused or NOTES.get(loaded.how, "")
    clustering = task_clustering(records)
    out = Pairing(
        "refused" if refused else loaded.how,
        note,
        clustering=clustering,
        cluster_note=cluster_note(clustering),
    )
    for i, (ra, ta, ia) in enumerate(rows):
        for rb, tb, ib in rows[i + 1 :]:
            if ra.host_id == rb.host_id:
                why = "" if not refused else "per-item lines refused (see the note)"
                if loaded.how == NONE and not refused:
                    why = "the run stored no per-item lines"
                out.pairs.append(pair_rows(ra, rb, ta, tb, ia, ib, why, loaded))
    return out


def task_clustering(
    records: Sequence[rec.ModelRecord],
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """task -> (cluster key, the distinct cluster counts) over the records' scored tasks whose
    SEs are clustered (TaskScore.n_clusters; records stored before it have none)."""
    keys: dict[str, str] = {}
    counts: dict[str, set[int]] = {}
    for record in records:
        for t in record.tasks:
            if t.n_clusters:
                keys.setdefault(t.task, t.cluster_by)
                counts.setdefault(t.task, set()).add(t.n_clusters)
    return {task: (keys[task], tuple(sorted(counts[task]))) for task in sorted(keys)}


def cluster_note(clustering: dict[str, tuple[str, tuple[int, ...]]]) -> str:
    """What the report says of clustering: which tasks' SEs are clustered, by what, over how
    many clusters; or that none is.

    >>> cluster_note({"mmlu": ("subject", (12, 14))})[:65]
    'Standard errors of mmlu are clustered by subject (12-14 clusters)'
    >>> cluster_note({})[:36]
    'Standard errors are unclustered: no '
    """
    if not clustering:
        return (
            "Standard errors are unclustered: no per-item result of this run names a cluster "
            "(its tasks set no `cluster_by`, or the run was stored before clusters were "
            "recorded)."
        )
    parts = []
    for task, (key, counts) in clustering.items():
        span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        parts.append(f"{task} are clustered by {key} ({span} clusters)")
    return (
        "Standard errors of "
        + "; of ".join(parts)
        + " (cluster-robust, G/(G-1) factor); other tasks' are not."
    )


def paired_ses(pairing_: Pairing) -> dict[str, dict[str, tuple[float, float]]]:
    """{row: {other row: (SE of the capability difference, SE of the cap/GB difference)}} for
    paired pairs only: what summarize.rank_rows uses instead of the unpaired noise."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for p in pairing_.pairs:
        if p.method == PAIRED:
            out.setdefault(p.a, {})[p.b] = (p.se, p.per_gb_se)
            out.setdefault(p.b, {})[p.a] = (p.se, p.per_gb_se)
    return out


def oriented(p: Pair, first: str) -> Pair:
    """`p` with `first` as its row a (the difference's sign follows)."""
    if p.a == first:
        return p
    flipped = tuple(replace(t, diff=-t.diff, only_a=t.only_b, only_b=t.only_a) for t in p.tasks)
    return replace(p, a=p.b, b=p.a, diff=-p.diff, tasks=flipped)


def pairing_json(pairing_: Pairing) -> dict:
    """The comparisons as report.json holds them: how per-item lines were attributed, the
    note, and every pair with both SEs, the one used, p and the power figures."""
    return {
        "per_item_lines": pairing_.how,
        "note": pairing_.note,
        "clustering": {
            task: {"cluster_by": key, "n_clusters": list(counts)}
            for task, (key, counts) in pairing_.clustering.items()
        },
        "cluster_note": pairing_.cluster_note,
        "pairs": [
            {
                **asdict(p),
                "settled": p.settled,
                "equal_within": TARGET_POINTS,
                "equal": p.equal,
                "p_value": p.p_value,
                "min_detectable": p.min_detectable,
                "items_to_settle": p.items_to_settle,
                "items_for_target": p.items_for_target,
            }
            for p in pairing_.pairs
        ],
    }
