"""The accuracy phase: a variant's tasks scored on its loaded model, whole or in pieces.

One function scores tasks, wherever it runs: `score_tasks` is called by the single-machine
worker (edgeeval.run.worker) and by a cluster node for its shard (edgeeval.cluster.node).

- The tasks come from `select_run_tasks`: `--tasks` or `--suite`, cut to `--num-fewshot`. Each
  task's items are `Task.items(limit=--limit, sample=--sample, seed)`; the plans (protocol and
  thinking rows) are `score.tasks.task_plans`.
- An optional selection narrows the items: `shard=(k, n)` keeps every n-th item from offset k
  (a cluster shard), `only_ids` keeps the listed item ids (a task it does not name scores
  nothing), `skip_ids` drops the listed ones (items already scored). Both map a task name, or
  `plan_key(task, thinking)` for one thinking row (looked up first), to item ids.
- Items are scored in chunks of `chunk_size`; `on_items` receives each chunk's results as
  they are made, so a long task streams them to the parent. `on_progress` hears, inside a
  chunk, how many of its items are done so far (each generated answer, each group of
  multiple-choice questions): progress only, nothing is kept from it.
- A task's score is computed from its per-item results alone (`task_score_from_items`), so a
  task scored in pieces (chunks, shards, resumed items, rounds) scores as in one go, apart
  from the time it took.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.engine.backend import Backend
from edgeeval.engine.batch import BatchEngine, BatchEngineLike
from edgeeval.metrics import score_samples
from edgeeval.score.generate import task_score
from edgeeval.score.protocol import Plan
from edgeeval.score.tasks import (
    TaskFacts,
    describe_score,
    score_items,
    skipped,
    task_facts,
    task_plans,
    task_sandbox,
)
from edgeeval.tasks.suite import Task, select_tasks

MULTIPLE_CHOICE = "multiple_choice"
MIN_CHUNK = 16  # items per chunk at least; 4 batches of `eval_batch` when that is more


def select_run_tasks(settings: rec.RunSettings, root: Path | None = None) -> list[Task]:
    """The tasks a run measures, chosen once from its settings (`--tasks` when given, else
    `--suite`; each cut to `--num-fewshot`); [] when the run has no tasks. Unknown names raise
    before anything is measured."""
    if not (settings.suite or settings.tasks):
        return []
    return select_tasks(settings.suite, settings.tasks, num_fewshot=settings.num_fewshot, root=root)


def plan_key(task: str, thinking: str = "") -> str:
    """The key of one thinking row of a task: its name, with "@on"/"@off" for a reasoning
    template measured twice.

    >>> plan_key("gsm8k"), plan_key("gsm8k", "on")
    ('gsm8k', 'gsm8k@on')
    """
    return f"{task}@{thinking}" if thinking else task


def row_key(row: rec.SampleResult | rec.GenSampleResult) -> str:
    """The plan_key of the row a per-item result belongs to."""
    return plan_key(row.task, getattr(row, "thinking", ""))


@dataclass(frozen=True)
class Chunk:
    """One chunk of a task scored under one plan. `score` is the chunk's own score: its
    plan-level fields (metric, protocol, thinking, prompt format, note, sandbox, n_shot,
    n_source) are the task's, so `task_score_from_items(score, rows)` scores any set of the
    plan's rows. `positions` are the items' places in the task's selected item list."""

    task: str
    kind: str
    plan: Plan | None
    score: rec.TaskScore
    positions: tuple[int, ...]

    @property
    def key(self) -> str:
        return plan_key(self.task, self.score.thinking)


OnItems = Callable[[str, Chunk, list[rec.SampleResult], list[rec.GenSampleResult]], None]
#: (plan_key, items of the chunk being scored that are done so far, seconds since it started)
OnProgress = Callable[[str, int, float], None]


@dataclass(frozen=True)
class TaskResult:
    """A task scored under one plan over the selected items. `score` is None when the
    selection left none of its items; `positions` are the scored items' places in the task's
    item list (after --limit/--sample), in the order of `samples` or `gen_samples`."""

    task: str
    kind: str
    thinking: str
    score: rec.TaskScore | None
    positions: tuple[int, ...] = ()
    samples: tuple[rec.SampleResult, ...] = ()
    gen_samples: tuple[rec.GenSampleResult, ...] = ()


@dataclass(frozen=True)
class Scores:
    """What `score_tasks` returns: one TaskResult per task and plan, in task order."""

    results: tuple[TaskResult, ...]

    @property
    def scores(self) -> list[rec.TaskScore]:
        return [r.score for r in self.results if r.score is not None]

    @property
    def samples(self) -> list[rec.SampleResult]:
        return [s for r in self.results for s in r.samples]

    @property
    def gen_samples(self) -> list[rec.GenSampleResult]:
        return [g for r in self.results for g in r.gen_samples]


@dataclass(frozen=True)
class _Selection:
    shard: tuple[int, int] | None
    only_ids: Mapping[str, Collection[str]] | None
    skip_ids: Mapping[str, Collection[str]] | None

    def positions(self, task: str, thinking: str, items: Sequence[Any]) -> list[int]:
        """The places in `items` to score for one plan of `task`."""
        places = list(range(len(items)))
        if self.shard is not None:
            places = shard_positions(len(items), *self.shard)
        only = _ids(self.only_ids, task, thinking)
        if self.only_ids is not None and only is None:
            only = ()  # a task `only_ids` does not name: none of its items
        skip = _ids(self.skip_ids, task, thinking)
        return [
            i
            for i in places
            if (only is None or items[i].id in only) and (skip is None or items[i].id not in skip)
        ]


def _ids(mapping: Mapping[str, Collection[str]] | None, task: str, thinking: str) -> Any:
    """The ids `mapping` lists for a plan of `task` (its plan_key first, then the name)."""
    if mapping is None:
        return None
    found = mapping.get(plan_key(task, thinking))
    return mapping.get(task) if found is None else found


def shard_positions(n_items: int, shard: int, n_shards: int) -> list[int]:
    """The item positions shard `shard` of `n_shards` scores (every n-th, so long and short
    items spread evenly).

    >>> shard_positions(7, 1, 3)
    [1, 4]
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    return list(range(shard, n_items, n_shards))


def default_chunk(eval_batch: int) -> int:
    """Items per chunk: four batches, at least MIN_CHUNK."""
    return max(MIN_CHUNK, 4 * eval_batch)


def score_tasks(
    backend: Backend,
    tasks: Sequence[Task],
    settings: rec.RunSettings,
    *,
    model_kind: str = "",
    reasoning: bool = False,
    eval_batch: int = 1,
    n_threads: int | None = None,
    shard: tuple[int, int] | None = None,
    only_ids: Mapping[str, Collection[str]] | None = None,
    skip_ids: Mapping[str, Collection[str]] | None = None,
    chunk_size: int | None = None,
    on_items: OnItems | None = None,
    on_score: Callable[[rec.TaskScore], None] | None = None,
    on_task: Callable[[str, int, int], None] | None = None,
    on_progress: OnProgress | None = None,
) -> Scores:
    """Score `tasks` on the loaded model, as `settings` say (limit, sample, seed, protocol,
    thinking rows, code execution), over the selected items (module docstring).

    `eval_batch` sequences per decode (> 1: a BatchEngine on `backend`, engine/batch.py);
    `n_threads` threads when given. `on_task(name, index, total)` is called as each task
    starts, `on_items(task, chunk, samples, gen_samples)` after each chunk, `on_score(score)`
    when a task's plan is scored (not for a plan the selection left empty), `on_progress(key,
    n, seconds)` as items of a chunk are done (module docstring)."""
    selection = _Selection(shard, only_ids, skip_ids)
    size = chunk_size or default_chunk(eval_batch)
    if size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {size}")
    results: list[TaskResult] = []
    engine: BatchEngine | None = None
    try:
        for index, task in enumerate(tasks, 1):
            if on_task is not None:
                on_task(task.name, index, len(tasks))
            if eval_batch > 1:
                engine = engine_for(task, engine, backend, eval_batch)
            _set_threads(backend, engine, n_threads)
            job = _TaskJob(
                backend, task, settings, model_kind, engine, selection, size, on_progress
            )
            for plan in task_plans(
                backend, task, settings, model_kind=model_kind, reasoning=reasoning
            ):
                result = job.run(plan, on_items)
                results.append(result)
                if result.score is not None and on_score is not None:
                    on_score(result.score)
    finally:
        if engine is not None:
            engine.close()
    return Scores(tuple(results))


def _set_threads(backend: Backend, engine: Any, n_threads: int | None) -> None:
    if n_threads is None:
        return
    backend.set_threads(n_threads)
    if engine is not None:
        engine.set_threads(n_threads)


@dataclass
class _TaskJob:
    """One task's items, scored chunk by chunk under each of its plans."""

    backend: Backend
    task: Task
    settings: rec.RunSettings
    model_kind: str
    batch: BatchEngineLike | None
    selection: _Selection
    chunk_size: int
    on_progress: OnProgress | None = None
    _items: list[Any] | None = None
    _facts: TaskFacts | None = None

    def items(self) -> list[Any]:
        if self._items is None:
            s = self.settings
            self._items = self.task.items(limit=s.task_limit, seed=s.seed, sample=s.task_sample)
        return self._items

    def facts(self) -> TaskFacts:
        if self._facts is None:
            self._facts = task_facts(self.task, self.items())
        return self._facts

    def _on_done(self, key: str) -> Callable[[int], None] | None:
        """score_items' `on_done` for a chunk of plan `key` starting now: on_progress with
        the seconds since then."""
        report = self.on_progress
        if report is None:
            return None
        start = time.monotonic()
        return lambda n: report(key, n, time.monotonic() - start)

    def run(self, plan: Plan | None, on_items: OnItems | None) -> TaskResult:
        task, kind = self.task, self.task.kind
        thinking = plan.thinking if plan else ""
        gone = skipped(task, self.settings)
        if gone is not None:  # decided before any item is loaded
            return TaskResult(task.name, kind, thinking, gone)
        items = self.items()
        places = self.selection.positions(task.name, thinking, items)
        sandbox = task_sandbox(task, self.settings) if places else None
        chunks: list[Chunk] = []
        samples: list[rec.SampleResult] = []
        gens: list[rec.GenSampleResult] = []
        for start in range(0, len(places), self.chunk_size):
            part = places[start : start + self.chunk_size]
            score, got, made = score_items(
                self.backend,
                task,
                [items[i] for i in part],
                model_kind=self.model_kind,
                plan=plan,
                batch=self.batch,
                sandbox=sandbox,
                on_done=self._on_done(plan_key(task.name, thinking)),
            )
            chunk = Chunk(task.name, kind, plan, describe_score(score, self.facts()), tuple(part))
            chunks.append(chunk)
            samples += got
            gens += made
            if on_items is not None:
                on_items(task.name, chunk, got, made)
        if not chunks:
            return TaskResult(task.name, kind, thinking, None)
        whole = task_score_from_items(
            chunks[0].score, samples, gens, elapsed_s=sum(c.score.elapsed_s for c in chunks)
        )
        return TaskResult(
            task.name, kind, thinking, whole, tuple(places), tuple(samples), tuple(gens)
        )


def task_score_from_items(
    like: rec.TaskScore,
    samples: Sequence[rec.SampleResult],
    gen_samples: Sequence[rec.GenSampleResult],
    *,
    elapsed_s: float | None = None,
) -> rec.TaskScore:
    """The score of one task under one plan from its per-item results alone, with no model:
    the same score the task gets when all those items are scored in one go. `like` is any
    score of the same task and plan (a chunk's, a shard's, a stored one): its plan-level
    fields (metric, protocol, thinking, prompt format, note, code sandbox, n_shot, n_source)
    are kept. `samples` are multiple-choice results, `gen_samples` generated ones (one of the
    two); `elapsed_s` defaults to like's. A skipped `like` is returned as it is."""
    if like.status == rec.STATUS_SKIPPED:
        return like
    if samples and gen_samples:
        raise ValueError(f"task {like.task}: both choice and generated results given")
    elapsed = like.elapsed_s if elapsed_s is None else elapsed_s
    if samples:
        score = score_samples(
            samples,
            task=like.task,
            version=like.version,
            category=like.category,
            chance=like.chance,
            elapsed_s=elapsed,
        )
    elif gen_samples:
        score = task_score(
            _Meta(like.task, like.version, like.category, like.chance),
            gen_samples,
            metric=like.metric,
            elapsed_s=elapsed,
            prompt_format=like.prompt_format,
            reason=_note(like),
            plan=Plan(like.protocol, like.thinking) if like.protocol else None,
        )
    else:
        raise ValueError(f"task {like.task}: no scored items to score")
    return dataclasses.replace(
        score,
        code_exec_sandbox=like.code_exec_sandbox,
        n_shot=like.n_shot,
        n_source=like.n_source,
        protocol=like.protocol,
        thinking=like.thinking,
    )


@dataclass(frozen=True)
class _Meta:
    """What task_score reads of a task, taken from a score."""

    name: str
    version: int
    category: str
    chance: float


def _note(score: rec.TaskScore) -> str:
    """The prompt note of a generated score (a refused template, a protocol fallback), without
    the "no sample could be judged (...)" that task_score puts first when nothing was judged."""
    if score.status == rec.STATUS_OK:
        return score.reason
    judged, _, note = score.reason.partition("; ")
    return note if judged.startswith("no sample could be judged") else score.reason


def engine_for(task: Task, engine: BatchEngine | None, backend: Any, n_seq: int) -> BatchEngine:
    """The batch engine for `task`, opened (and the previous one closed) when the KV layout
    changes, so at most one is open: multiple choice on one KV buffer for all sequences (each
    decode is then one micro-batch whatever its sequences' lengths; measured 2.08x against
    1.88x for one buffer per sequence on the offline MC tasks), generation on one buffer per
    sequence (its attention reads only its own cells; HumanEval 62.8 s against 74.1 s)."""
    unified = task.kind == MULTIPLE_CHOICE
    if engine is not None and engine.unified == unified:
        return engine
    if engine is not None:
        engine.close()
    return BatchEngine(backend, n_seq, unified=unified)
