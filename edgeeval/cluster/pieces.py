"""The pieces a cluster run is cut into, and how sharded accuracy is put back together.

No Ray here: these are plain records and functions, so they are tested without a cluster.

- A *device piece* is one variant measured on one host (speed, memory, accuracy), keyed like a
  single-machine record (`records.record_key`: variant, file sha256, settings, host).
- A *shard* is every `n_shards`-th item (offset `shard`) of every task the run selected,
  scored on any worker by the single-machine path (`run.accuracy.score_tasks`, `shard=`).
  `merge_shards` puts the shards of one variant back into the task scores a single-machine run
  gives: the samples are ordered as the task lists its items and scored from those items by
  `run.accuracy.task_score_from_items`, as a task scored in chunks is.
- Finished shards are appended to the run's `cluster-shards.jsonl`, so `--resume` redoes only
  the shards that are missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.run.accuracy import plan_key, task_score_from_items
from edgeeval.store import runs as store

SHARDS_FILE = "cluster-shards.jsonl"
MULTIPLE_CHOICE = "multiple_choice"


@dataclass(frozen=True)
class ShardTask:
    """One task's share of a shard, under one thinking mode ("" for models that do not think;
    a reasoning template with a switch gives two). `score` is None when the shard drew no item
    of the task; `indices` are the items' positions in the task's selected item list."""

    task: str
    kind: str
    score: rec.TaskScore | None
    indices: tuple[int, ...] = ()
    samples: tuple[rec.SampleResult, ...] = ()
    generations: tuple[rec.GenSampleResult, ...] = ()
    thinking: str = ""

    @property
    def key(self) -> str:
        return plan_key(self.task, self.thinking)


@dataclass(frozen=True)
class ShardResult:
    """What a worker returns for one shard of one variant's accuracy tasks."""

    key: str
    variant: str
    sha256: str
    size_bytes: int
    settings_key: str
    shard: int
    n_shards: int
    host_id: str
    hostname: str
    elapsed_s: float
    tasks: tuple[ShardTask, ...] = ()


def shard_key(name: str, sha256: str, settings: rec.RunSettings, shard: int, n: int) -> str:
    """The resume key of one shard: variant, file hash, settings and the shard's place.

    >>> shard_key("m", "ab", rec.RunSettings(), 0, 2).endswith(":shard0/2")
    True
    """
    return f"{name}:{sha256}:{settings.key()}:shard{shard}/{n}"


def merge_task(parts: Sequence[ShardTask]) -> rec.TaskScore:
    """The task score of the whole item list from its shards' parts (of one task and thinking
    mode), computed from the items as a single machine's chunks are."""
    scored = [p for p in parts if p.score is not None]
    if not scored:
        raise ValueError(f"task {parts[0].task}: no shard scored any item")
    first = scored[0].score
    assert first is not None
    return task_score_from_items(
        first,
        _ordered(parts, "samples"),
        _ordered(parts, "generations"),
        elapsed_s=sum(p.score.elapsed_s for p in scored if p.score is not None),
    )


def _pairs(part: ShardTask, items: Sequence[Any]) -> list[tuple[int, Any]]:
    """(item position, result) pairs; [] for the list a task's kind does not use."""
    if not items:
        return []
    if len(items) != len(part.indices):
        raise ValueError(
            f"task {part.task}: a shard has {len(items)} results for {len(part.indices)} items"
        )
    return list(zip(part.indices, items, strict=True))


def _ordered(parts: Sequence[ShardTask], field: str) -> list[Any]:
    """The `field` results ("samples" or "generations") of one task's parts, in item order."""
    pairs = [pair for p in parts for pair in _pairs(p, getattr(p, field))]
    return [result for _, result in sorted(pairs, key=lambda pair: pair[0])]


def merge_shards(
    shards: Sequence[ShardResult],
) -> tuple[list[rec.TaskScore], list[rec.SampleResult], list[rec.GenSampleResult]]:
    """(task scores, per-item samples, generations) of one variant from all of its shards,
    in the suite's task order and each task's item order."""
    if not shards:
        raise ValueError("no shards to merge")
    n = shards[0].n_shards
    if sorted(s.shard for s in shards) != list(range(n)):
        raise ValueError(f"{shards[0].variant}: need shards 0..{n - 1} exactly once")
    hashes = {s.sha256 for s in shards}
    if len(hashes) != 1:
        raise ValueError(
            f"{shards[0].variant}: the workers scored different files (sha256 "
            + ", ".join(sorted(h[:12] for h in hashes))
            + "); give every node the same file (--shared-models or a pinned sha256)"
        )
    names = [t.key for t in shards[0].tasks]  # a task per thinking mode, in the run's order
    by_task = {name: [t for s in shards for t in s.tasks if t.key == name] for name in names}
    scores = [merge_task(by_task[name]) for name in names]
    samples = [s for name in names for s in _ordered(by_task[name], "samples")]
    gens = [g for name in names for g in _ordered(by_task[name], "generations")]
    return scores, samples, gens


def shards_path(run_id: str, root: Path | None = None) -> Path:
    return store.run_dir(run_id, root) / SHARDS_FILE


def save_shard(run_id: str, result: ShardResult, root: Path | None = None) -> None:
    """Append one finished shard to the run's shard log (fsynced, like records)."""
    directory = store.make_dir(store.run_dir(run_id, root))
    store.append_line(directory / SHARDS_FILE, rec.to_json(result))


def load_shards(run_id: str, root: Path | None = None) -> dict[str, ShardResult]:
    """Finished shards of a run by key (unreadable lines are skipped, as in every JSONL)."""
    return {s.key: s for s in store.read_jsonl(shards_path(run_id, root), ShardResult)}


def accuracy_record(
    run_id: str,
    shards: Sequence[ShardResult],
    variant: rec.VariantInfo,
    host: rec.HostInfo,
    settings: rec.RunSettings,
    *,
    started_at: str,
    duration_s: float,
) -> tuple[rec.ModelRecord, list[rec.SampleResult], list[rec.GenSampleResult]]:
    """The record of a sharded accuracy run of one variant: merged task scores, no speed or
    memory (those are per device). `host` is the head's: the record stands for the run, not
    for one of the workers that scored it."""
    scores, samples, gens = merge_shards(shards)
    record = rec.ModelRecord(
        run_id=run_id,
        variant=dataclasses.replace(variant, sha256=shards[0].sha256),
        host=host,
        settings=settings,
        status=rec.STATUS_OK,
        started_at=started_at,
        duration_s=duration_s,
        tasks=tuple(scores),
    )
    return record, samples, gens


def ok_keys(records: Iterable[rec.ModelRecord]) -> set[str]:
    """Resume keys of the finished (ok) records."""
    return {r.key for r in records if r.status == rec.STATUS_OK}
