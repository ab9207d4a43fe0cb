"""A real race: rounds of measurement over the running variants, a look after each, the log.

The measuring itself is the caller's (pipeline): `measure(variant, only_ids, round)` scores
the variant on `only_ids` (task -> the item ids answered so far, a prefix of the shared order;
the items of earlier rounds are already in its journal and are not scored again), measuring
speed and memory in round 0 only, and returns the verdicts it has. Everything the race decides
is logged in the run's race.jsonl (store.racelog) as it happens, so `--resume` rebuilds the
race from the log: the looks are pure functions of the logged verdicts, so the resumed race
decides exactly what the first one did, and goes on from the first unfinished round.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeeval.race.rules import (
    EXHAUSTED,
    RaceConfig,
    RaceInputError,
    RaceState,
    Stop,
    counts_of,
    item_order,
    look,
    round_sizes,
    start,
)
from edgeeval.store import racelog
from edgeeval.text import Progress

Verdicts = dict[str, dict[str, bool | None]]  # row key (task, or task@thinking) -> id -> verdict
FAILED = "failed"


@dataclass(frozen=True)
class RoundResult:
    """What one round of one variant gave: its verdicts on the round's items (at least), its
    peak memory in GB (round 0), or the error that ended its measurement."""

    verdicts: Verdicts
    memory_gb: float | None = None
    error: str = ""


Measure = Callable[[str, dict[str, list[str]], int], RoundResult]


def task_of(row_key: str) -> str:
    """The task of a row key: "gsm8k@on" -> "gsm8k"."""
    return row_key.split("@", 1)[0]


class _Book:
    """Every variant's verdicts and memory so far, as logged; each task's item clusters (task
    -> item id -> cluster, the tasks that declare them), for clustered tests."""

    def __init__(
        self, chance: dict[str, float], clusters: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.chance = chance  # by task; a row key "task@on" takes its task's
        self.clusters = clusters or {}
        self.verdicts: dict[str, Verdicts] = {}
        self.memory: dict[str, float] = {}
        self.rounds: dict[str, set[int]] = {}

    def add(self, line: racelog.RaceLine) -> None:
        book = self.verdicts.setdefault(line.variant, {})
        for key, items in line.verdicts.items():
            book.setdefault(key, {}).update(items)
        if line.memory_gb:
            self.memory[line.variant] = line.memory_gb
        self.rounds.setdefault(line.variant, set()).add(line.round)

    def evidence(self, prefix: dict[str, list[str]], a: str, b: str) -> list:
        """(chance, counts) per row over the prefix items both judged (per cluster where the
        task has clusters); RaceInputError naming the task when one of them has a task the
        other has not."""
        va, vb = self.verdicts.get(a, {}), self.verdicts.get(b, {})
        if set(va) != set(vb):
            gone = sorted(set(va) ^ set(vb))[0]
            raise RaceInputError(
                f"task {gone} was scored for only one of {a} and {b}: not compared on "
                "unpaired evidence",
                option=gone,
            )
        out = []
        for key in sorted(va):
            ids = [i for i in prefix.get(task_of(key), ()) if i in va[key] and i in vb[key]]
            ids = [i for i in ids if va[key][i] is not None and vb[key][i] is not None]
            if ids:
                a_right = [bool(va[key][i]) for i in ids]
                b_right = [bool(vb[key][i]) for i in ids]
                of = self.clusters.get(task_of(key), {})
                groups = [of[i] for i in ids] if all(of.get(i) for i in ids) else None
                out.append((self.chance[task_of(key)], counts_of(a_right, b_right, groups)))
        if not out:
            raise RaceInputError(f"{a} and {b} share no judged item yet", option="--race")
        return out


def run_race(
    run_id: str,
    names: Sequence[str],
    items: dict[str, list[str]],
    chance: dict[str, float],
    config: RaceConfig,
    measure: Measure,
    *,
    root: Path | None = None,
    progress: Progress = lambda _: None,
    clusters: dict[str, dict[str, str]] | None = None,
) -> RaceState:
    """Race `names` over `items` (task -> item ids, as the run selects them; `chance` per row
    key or task), logging to the run's race.jsonl; resumes from the log when it has a start.
    `clusters` (task -> item id -> cluster, for the tasks that declare them) makes those
    tasks' tests clustered. Returns the final state (every variant stopped)."""
    orders = {t: item_order(t, ids, config.seed) for t, ids in items.items()}
    sizes = {t: round_sizes(len(ids), config) for t, ids in orders.items()}
    book, logged = _open_log(run_id, names, chance, config, root, clusters)
    state: RaceState | None = None
    failed: dict[str, str] = {}
    for r in range(config.rounds):
        prefix = {t: orders[t][: sizes[t][r]] for t in orders}
        running = list(state.running) if state is not None else list(names)
        for v in running:
            if r in book.rounds.get(v, set()) or v in failed:
                continue  # logged before an interruption: not measured again
            progress(f"race round {r + 1}/{config.rounds}: {v} on {_count(prefix)} items")
            error = _measure_round(run_id, v, r, prefix, measure, book, root)
            if error:
                failed[v] = error
        if state is None:
            ok = [v for v in names if v not in failed]
            if len(ok) < 2:  # nothing left to race: what is left answers every item
                return _alone(run_id, ok, orders, config, measure, book, root, progress)
            state = start(ok, {v: book.memory.get(v, 0.0) for v in ok}, config)
        else:
            state = dataclasses.replace(
                state, running=tuple(v for v in state.running if v not in failed)
            )
        seen = set(state.not_compared)
        state = look(
            state,
            functools.partial(book.evidence, prefix),
            items_done=_count(prefix),
            last=r == config.rounds - 1,
        )
        for pair in set(state.not_compared) - seen:
            progress(f"race: {pair[0]} and {pair[1]} not compared: {state.not_compared[pair]}")
        _log_stops(run_id, state, logged, root, progress)
        if state.finished:
            break
    assert state is not None
    for v, error in failed.items():
        if v not in logged:
            line = racelog.RaceLine(racelog.STOP, variant=v, reason=FAILED, text=error)
            racelog.append_race_line(run_id, line, root)
    return state


def _open_log(
    run_id: str,
    names: Sequence[str],
    chance: dict[str, float],
    config: RaceConfig,
    root: Path | None,
    clusters: dict[str, dict[str, str]] | None = None,
) -> tuple[_Book, set[str]]:
    """The race's log opened: its start written once; (the rounds logged so far, the
    variants whose stop is logged)."""
    log = racelog.read_race(run_id, root)
    if not any(line.kind == racelog.START for line in log):
        start_line = racelog.RaceLine(
            racelog.START, config=dataclasses.asdict(config), variants=tuple(names)
        )
        racelog.append_race_line(run_id, start_line, root)
    book = _Book(chance, clusters)
    for line in log:
        if line.kind == racelog.ROUND:
            book.add(line)
    return book, {line.variant for line in log if line.kind == racelog.STOP}


def _measure_round(
    run_id: str,
    v: str,
    r: int,
    prefix: dict[str, list[str]],
    measure: Measure,
    book: _Book,
    root: Path | None,
) -> str:
    """Measure `v`'s round `r` on `prefix` and log its verdicts; the error, or ""."""
    got = measure(v, prefix, r)
    if got.error:
        return got.error
    line = racelog.RaceLine(
        racelog.ROUND, variant=v, round=r, memory_gb=got.memory_gb, verdicts=got.verdicts
    )
    racelog.append_race_line(run_id, line, root)
    book.add(line)
    return ""


def _alone(
    run_id: str,
    names: list[str],
    orders: dict[str, list[str]],
    config: RaceConfig,
    measure: Measure,
    book: _Book,
    root: Path | None,
    progress: Progress,
) -> RaceState:
    """Fewer than two variants measured in round 0 (the others failed): no race; the one left
    answers every item."""
    state = RaceState(config=config, memory_gb=dict(book.memory), running=())
    for v in names:
        progress(f"race: only {v} is left to measure; it answers every item")
        last = config.rounds - 1
        got = measure(v, orders, last)
        n = sum(len(ids) for ids in orders.values())
        stop = Stop(v, FAILED if got.error else EXHAUSTED, last, n)
        text = got.error or stop.text
        line = racelog.RaceLine(racelog.STOP, variant=v, reason=stop.reason, n_items=n, text=text)
        racelog.append_race_line(run_id, line, root)
        state = dataclasses.replace(state, stops={**state.stops, v: stop})
    return state


def _count(prefix: dict[str, list[str]]) -> int:
    return sum(len(ids) for ids in prefix.values())


def _log_stops(
    run_id: str, state: RaceState, logged: set[str], root: Path | None, progress: Progress
) -> None:
    """Log (and say) the stops not logged yet; a resumed race re-decides the logged ones."""
    for v, stop in state.stops.items():
        if v in logged:
            continue
        logged.add(v)
        progress(f"race: {v}: {stop.text}")
        racelog.append_race_line(
            run_id,
            racelog.RaceLine(
                racelog.STOP,
                variant=v,
                round=stop.look,
                reason=stop.reason,
                by=stop.by,
                p=stop.p,
                n_items=stop.n_items,
                text=stop.text,
            ),
            root,
        )
