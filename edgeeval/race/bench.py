"""`edgeeval bench --race`: the race's rounds measured by the bench's own path.

Each round of a variant is one worker (run.runner.bench_one) told to score `only_ids`, the
items of the shared order answered so far; the items of earlier rounds are in the variant's
journal (store.journal) and are kept, not scored again (the prior of a resumed attempt); the
first round measures speed and memory, later rounds keep them. After every round the variant's
record so far (its tasks scored over the items it answered) is stored with the round's new
per-item lines, so the report always shows the race as it stands, and `--resume` continues it
(the race's log, store.racelog, says which rounds are done).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.metrics import pick
from edgeeval.race.drive import RoundResult, Verdicts, run_race
from edgeeval.race.rules import RaceConfig, RaceState, check_field
from edgeeval.run.accuracy import row_key, select_run_tasks, skipped
from edgeeval.run.runner import Attempt, bench_one
from edgeeval.settings import GB
from edgeeval.store import journal as journals
from edgeeval.store import racelog
from edgeeval.store import runs as store
from edgeeval.text import Progress


def race_config(settings: rec.RunSettings) -> RaceConfig:
    """The race a run's settings ask for (RaceInputError naming --confidence when invalid)."""
    return RaceConfig(
        confidence=settings.race_confidence or 0.95,
        seed=settings.seed,
        margin=settings.race_margin,
        rank_by=settings.race_by,
    )


def race_items(settings: rec.RunSettings, root: Path) -> tuple[dict[str, list[str]], dict]:
    """(task -> item ids, task -> chance) of the run's tasks that run (no model loaded)."""
    items, chance, _ = race_tasks(settings, root)
    return items, chance


def race_tasks(
    settings: rec.RunSettings, root: Path
) -> tuple[dict[str, list[str]], dict[str, float], dict[str, dict[str, str]]]:
    """`race_items`, and task -> item id -> cluster for the tasks that declare clusters
    (`cluster_by`) and whose every item names one: the race tests those clustered."""
    items, chance, clusters = {}, {}, {}
    for task in select_run_tasks(settings, root):
        if skipped(task, settings) is not None:
            continue
        got = task.items(limit=settings.task_limit, seed=settings.seed, sample=settings.task_sample)
        items[task.name] = [item.id for item in got]
        chance[task.name] = task.chance
        named = {item.id: item.cluster for item in got}
        if named and all(named.values()):
            clusters[task.name] = named
    return items, chance, clusters


def verdicts_of(
    samples: Sequence[rec.SampleResult], gens: Sequence[rec.GenSampleResult]
) -> Verdicts:
    """Per row key, each item's verdict (None: not judged), as the ranking scores them."""
    out: Verdicts = {}
    for s in samples:
        right = pick(s.logliks, s.choice_chars, normalize=False) == s.gold
        out.setdefault(row_key(s), {})[s.item_id] = right
    for g in gens:
        judged = g.status in ("ok", "passed", "failed", "timeout")
        out.setdefault(row_key(g), {})[g.item_id] = bool(g.correct) if judged else None
    return out


class _Rounds:
    """One variant's rounds: its journal, its first round's record (speed and memory)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.first: dict[str, rec.ModelRecord] = {}
        self.journal: dict[str, Path] = {}
        # the items an attempt kept from the journal: their verdicts go into the round's log
        # too (after an interruption a round's items may all be in the journal already)
        self.kept: dict[str, ct.WorkerResult] = {}

    def attempt(self, name: str, round_: int) -> Callable[[str, str], Attempt]:
        def make(key: str, _name: str) -> Attempt:
            path = journals.journal_path(self.run_id, key, name)
            self.journal[name] = path
            earlier = self.first.get(name) or _stored(self.run_id, key)
            kept = journals.resume_from(path, speed=earlier is not None)
            if kept is None:
                return Attempt(journal=path)
            prior, _ = kept
            self.kept[name] = prior.result
            # a finished task gets more items in the next round: it is reopened, its items so
            # far kept (skipped by the worker) and scored together with the new ones
            reopened = ct.Prior(
                result=dataclasses.replace(prior.result, tasks=()),
                speed_done=prior.speed_done,
                open_chunks=tuple(prior.open_chunks) + tuple(prior.result.tasks),
            )
            return Attempt(path, reopened, earlier, f"race round {round_ + 1}")

        return make


def _logged_items(run_id: str, name: str) -> set[tuple[str, str]]:
    """(row key, item id) of the rounds the race log holds for `name` (their per-item lines
    are stored: a round is logged after its record and lines)."""
    return {
        (key, item)
        for line in racelog.read_race(run_id)
        if line.kind == racelog.ROUND and line.variant == name
        for key, items in line.verdicts.items()
        for item in items
    }


def _stored(run_id: str, key: str) -> rec.ModelRecord | None:
    path = store.run_dir(run_id) / "records.jsonl"
    found = [r for r in store.read_jsonl(path, rec.ModelRecord) if r.key == key]
    return found[0] if found else None


@dataclasses.dataclass
class _Measure:
    """Measures one variant's round through the runner's one path (bench_one), stores its
    record and new items, and returns the verdicts the race looks at."""

    by_name: dict[str, Any]
    settings: rec.RunSettings
    run_id: str
    host: rec.HostInfo
    force: bool
    root: Path
    get_file: Callable[[Any], Any]
    progress: Progress
    rounds: _Rounds

    def __call__(self, name: str, only_ids: dict[str, list[str]], round_: int) -> RoundResult:
        variant = self.by_name[name]
        got = bench_one(
            variant,
            self.settings,
            lambda: self.get_file(variant),
            run_id=self.run_id,
            host=self.host,
            done=(),
            force=self.force,
            root=self.root,
            progress=self.progress,
            attempt=self.rounds.attempt(name, round_),
            only_ids={t: tuple(ids) for t, ids in only_ids.items()},
        )
        record = got.record
        if record is None or record.status != rec.STATUS_OK or record.memory is None:
            error = record.error if record is not None else "not measured"
            if record is not None:
                store.save_record(record, got.samples, generations=got.generations)
            return RoundResult({}, error=error or (record.status if record else "not measured"))
        if round_ == 0:
            self.rounds.first[name] = record
        kept = self.rounds.kept.pop(name, ct.WorkerResult())
        # the kept items no logged round holds were scored by an interrupted attempt of this
        # round and never stored: they are stored now, with the round's new ones
        logged = _logged_items(self.run_id, name)
        store.save_record(
            record,
            [*(r for r in kept.samples if (row_key(r), r.item_id) not in logged), *got.samples],
            generations=[
                *(g for g in kept.gen_samples if (row_key(g), g.item_id) not in logged),
                *got.generations,
            ],
        )
        memory = record.memory.model_peak_bytes / GB if round_ == 0 else None
        samples = [*kept.samples, *got.samples]
        return RoundResult(
            verdicts_of(samples, [*kept.gen_samples, *got.generations]), memory_gb=memory
        )


def race_bench(
    variants: Sequence[Any],
    settings: rec.RunSettings,
    *,
    run_id: str,
    host: rec.HostInfo,
    force: bool,
    root: Path,
    get_file: Callable[[Any], Any],
    progress: Progress,
) -> RaceState:
    """Race `variants` (catalog Variants) under `settings` (settings.race_confidence set)."""
    check_field([v.name for v in variants])
    items, chance, clusters = race_tasks(settings, root)
    rounds = _Rounds(run_id)
    by_name = {v.name: v for v in variants}
    measure = _Measure(by_name, settings, run_id, host, force, root, get_file, progress, rounds)
    state = run_race(
        run_id,
        [v.name for v in variants],
        items,
        chance,
        race_config(settings),
        measure,
        root=store.run_dir(run_id).parent,
        progress=progress,
        clusters=clusters,
    )
    for path in rounds.journal.values():
        journals.finish(path)  # every round's record and items are stored
    return state
