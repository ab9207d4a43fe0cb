"""Per-item right/wrong tables of a stored run's variants, the input of replays and of the
race's paired tests. Pure: it takes records and per-item lines, reads no file.

A stored per-item line (samples.jsonl, generations.jsonl) names its variant when the run was
stored with that field; older lines are attributed by their order in the file, and only where
that is provably unambiguous: every record's tasks, in order, must account for exactly the lines
that follow the previous record's, each line naming the task it is counted for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgeeval import records as rec
from edgeeval.metrics import pick
from edgeeval.race.rules import RaceInputError, counts_of

#: Generated samples that are judged (timeouts count as wrong); harness errors are not.
JUDGED = ("ok", "passed", "failed", "timeout")

Line = rec.SampleResult | rec.GenSampleResult


def task_key(score: rec.TaskScore) -> str:
    """The task as the race compares it: its name, plus the thinking mode when it has one."""
    return f"{score.task}[thinking {score.thinking}]" if score.thinking else score.task


def verdict(line: Line) -> bool | None:
    """True/False for a judged item (multiple choice: the highest log-likelihood is the gold
    answer, as acc; generated: `correct`), None for one the harness could not judge."""
    if isinstance(line, rec.SampleResult):
        return pick(line.logliks, line.choice_chars, normalize=False) == line.gold
    return bool(line.correct) if line.status in JUDGED else None


@dataclass(frozen=True)
class TaskVerdicts:
    """One task's items (ids in the stored order) and each variant's verdicts on them."""

    task: str
    version: int
    chance: float
    item_ids: tuple[str, ...]
    right: dict[str, tuple[bool, ...]]


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
        """(chance, TaskCounts) per task for a pair, over all items or the positions `ids`."""
        out = []
        for t in self.tasks:
            pos = ids[t.task] if ids is not None else range(len(t.item_ids))
            ra, rb = t.right[a], t.right[b]
            out.append((t.chance, counts_of([ra[i] for i in pos], [rb[i] for i in pos])))
        return out


def attribute(
    records: Sequence[rec.ModelRecord], lines: Sequence[Line], *, file: str
) -> dict[str, list[Line]]:
    """Each record's per-item lines of one file (its kind of lines: samples or generations).

    Lines that carry a `variant` field are grouped by it; otherwise by order (see the module
    doc). RaceInputError naming the file, the record and the task when the order does not
    account for the lines exactly."""
    named = [getattr(line, "variant", "") for line in lines]
    if lines and all(named):
        out: dict[str, list[Line]] = {}
        for name, line in zip(named, lines, strict=True):
            out.setdefault(name, []).append(line)
        return out
    want_mc = file == "samples.jsonl"
    out, pos = {}, 0
    for record in records:
        taken: list[Line] = []
        for score in record.tasks:
            is_mc = score.protocol == "loglikelihood"
            if is_mc != want_mc or score.status == rec.STATUS_SKIPPED:
                continue
            count = score.n if is_mc else score.n + score.n_harness_error
            chunk = list(lines[pos : pos + count])
            if len(chunk) < count or any(x.task != score.task for x in chunk):
                raise RaceInputError(
                    f"{file}: the lines of {record.variant.name}'s task {score.task} are not "
                    "where the order of records.jsonl puts them, and the lines carry no "
                    "variant, so they cannot be attributed; re-run the variants",
                    option=score.task,
                )
            taken += chunk
            pos += count
        out.setdefault(record.variant.name, []).extend(taken)
    if pos != len(lines):
        raise RaceInputError(
            f"{file}: {len(lines) - pos} lines are left over after every record's tasks, and "
            "the lines carry no variant, so they cannot be attributed; re-run the variants",
            option=file,
        )
    return out


def build_table(
    records: Iterable[rec.ModelRecord], per_item: dict[str, Sequence[Line]]
) -> VerdictTable:
    """The verdict table of ok `records` (one per variant) from their per-item lines.

    Every variant must have scored the same tasks at the same version on the same items:
    otherwise RaceInputError names the task and the two variants (a changed task version, a
    task that failed for one of them). Items some variant's harness could not judge are left
    out for all, and counted."""
    ok = [r for r in records if r.status == rec.STATUS_OK and r.memory is not None]
    names = [r.variant.name for r in ok]
    if len(set(names)) != len(names):
        raise RaceInputError("two records of one variant: replay one host's run", option="--run")
    memory = {r.variant.name: r.memory.model_peak_bytes / 1e9 for r in ok}  # type: ignore[union-attr]
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
        task, n_dropped = _task(key, names, scores, per_item)
        tasks.append(task)
        dropped += n_dropped
    return VerdictTable(tuple(names), memory, tuple(tasks), dropped)


def _task(
    key: str,
    names: list[str],
    scores: dict[str, dict[str, rec.TaskScore]],
    per_item: dict[str, Sequence[Line]],
) -> tuple[TaskVerdicts, int]:
    first = names[0]
    ref = scores[first][key]
    by_variant: dict[str, dict[str, bool | None]] = {}
    for name in names:
        score = scores[name][key]
        if score.version != ref.version:
            raise RaceInputError(
                f"task {key}: version {score.version} for {name} but {ref.version} for "
                f"{first}; its items changed, so the two cannot be paired: re-run both",
                option=key,
            )
        lines = [
            x
            for x in per_item.get(name, ())
            if x.task == score.task and getattr(x, "thinking", "") == score.thinking
        ]
        by_variant[name] = {x.item_id: verdict(x) for x in lines}
    ids = list(by_variant[first])
    for name in names[1:]:
        if set(by_variant[name]) != set(ids):
            extra = sorted(set(by_variant[name]) ^ set(ids))
            raise RaceInputError(
                f"task {key}: {name} and {first} answered different items (e.g. {extra[0]}); "
                "a changed task or --limit/--sample; pair only runs of the same items",
                option=key,
            )
    kept = [i for i in ids if all(by_variant[n][i] is not None for n in names)]
    right = {n: tuple(bool(by_variant[n][i]) for i in kept) for n in names}
    return TaskVerdicts(key, ref.version, ref.chance, tuple(kept), right), len(ids) - len(kept)

