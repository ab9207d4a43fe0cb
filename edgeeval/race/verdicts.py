"""Per-item right/wrong tables of a stored run's variants, the input of replays and of the
race's paired tests. Pure: it takes records and their per-item scores, reads no file (the
store attributes each stored line to its record: store.items.load_items).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edgeeval import records as rec
from edgeeval.race.rules import RaceInputError, counts_of
from edgeeval.settings import GB

#: (task, thinking) -> item id -> 1.0 right / 0.0 wrong, judged items only (store.items)
ItemScores = dict[tuple[str, str], dict[str, float]]
#: (task key, item ids) -> each item's cluster, or None: store.items.RunItems.clusters_of
ClustersOf = Callable[[str, Sequence[str]], "tuple[str, ...] | None"]


def task_key(score: rec.TaskScore) -> str:
    """The task as the race compares it: its name, plus the thinking mode when it has one."""
    return f"{score.task}@{score.thinking}" if score.thinking else score.task


@dataclass(frozen=True)
class TaskVerdicts:
    """One task's items (ids in the stored order) and each variant's verdicts on them;
    `clusters`, each item's cluster (aligned with `item_ids`) where the task declares them."""

    task: str
    version: int
    chance: float
    item_ids: tuple[str, ...]
    right: dict[str, tuple[bool, ...]]
    clusters: tuple[str, ...] | None = None


@dataclass(frozen=True)
class VerdictTable:
    """Variants (with their peak memory in GB) and their verdicts on the same items."""

    variants: tuple[str, ...]
    memory_gb: dict[str, float]
    tasks: tuple[TaskVerdicts, ...]
    dropped_items: int = 0  # items left out because some variant's harness could not judge them

    @property
    def n_items(self) -> int:
        return sum(len(t.item_ids) for t in self.tasks)

    def counts(self, a: str, b: str, ids: dict[str, Sequence[int]] | None = None) -> list:
        """(chance, TaskCounts) per task for a pair, over all items or the positions `ids`
        (per cluster where the task has clusters)."""
        out = []
        for t in self.tasks:
            pos = ids[t.task] if ids is not None else range(len(t.item_ids))
            ra, rb, cl = t.right[a], t.right[b], t.clusters
            groups = [cl[i] for i in pos] if cl is not None else None
            out.append((t.chance, counts_of([ra[i] for i in pos], [rb[i] for i in pos], groups)))
        return out


def build_table(
    records: Iterable[rec.ModelRecord],
    items: dict[str, ItemScores],
    clusters_of: ClustersOf | None = None,
) -> VerdictTable:
    """The verdict table of ok `records` (one per variant) from `items` (variant name -> its
    per-item scores, store.items.RunItems.of(record)); each task's item clusters from
    `clusters_of` (store.items.RunItems.clusters_of: None for a task without them, and then
    its tests stay unclustered).

    Every variant must have scored the same tasks at the same version on the same items:
    otherwise RaceInputError names the task and the two variants (a changed task version, a
    task that failed for one of them). An item one variant's harness could not judge (it
    scored no verdict) is left out for all, and counted; more missing items than that variant
    had harness errors means the items differ."""
    ok = [r for r in records if r.status == rec.STATUS_OK and r.memory is not None]
    names = [r.variant.name for r in ok]
    if len(set(names)) != len(names):
        raise RaceInputError("two records of one variant: replay one host's run", option="--run")
    memory = {r.variant.name: r.memory.model_peak_bytes / GB for r in ok}  # type: ignore[union-attr]
    scores = {r.variant.name: {task_key(t): t for t in r.tasks if t.status == "ok"} for r in ok}
    if not names:
        return VerdictTable((), {}, ())
    first = names[0]
    for other in names[1:]:
        gone = sorted(set(scores[first]) ^ set(scores[other]))
        if gone:
            raise RaceInputError(
                f"task {gone[0]} was scored for only one of {first} and {other}: they cannot "
                "be compared on it; re-run the variant whose task failed",
                option=gone[0],
            )
    tasks, dropped = [], 0
    for key in sorted(scores[first]):
        task, n_dropped = _task(key, names, scores, items, clusters_of)
        tasks.append(task)
        dropped += n_dropped
    return VerdictTable(tuple(names), memory, tuple(tasks), dropped)


def _task(
    key: str,
    names: list[str],
    scores: dict[str, dict[str, rec.TaskScore]],
    items: dict[str, ItemScores],
    clusters_of: ClustersOf | None = None,
) -> tuple[TaskVerdicts, int]:
    first = names[0]
    ref = scores[first][key]
    by_variant: dict[str, dict[str, float]] = {}
    for name in names:
        score = scores[name][key]
        if score.version != ref.version:
            raise RaceInputError(
                f"task {key}: version {score.version} for {name} but {ref.version} for "
                f"{first}; its items changed, so the two cannot be paired: re-run both",
                option=key,
            )
        by_variant[name] = items.get(name, {}).get((score.task, score.thinking), {})
    every = set().union(*by_variant.values())
    for name in names:
        missing = every - set(by_variant[name])
        if len(missing) > scores[name][key].n_harness_error:
            raise RaceInputError(
                f"task {key}: {name} has no answer to {len(missing)} items the others "
                f"answered (e.g. {sorted(missing)[0]}): a changed task, or --limit/--sample; "
                "pair only runs of the same items",
                option=key,
            )
    kept = sorted(i for i in every if all(i in by_variant[n] for n in names))
    right = {n: tuple(by_variant[n][i] >= 0.5 for i in kept) for n in names}
    clusters = clusters_of(key, kept) if clusters_of is not None else None
    task = TaskVerdicts(key, ref.version, ref.chance, tuple(kept), right, clusters)
    return task, len(every) - len(kept)
