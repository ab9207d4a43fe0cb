"""A race's log: `<run>/race.jsonl`, one line per event, appended (and fsynced) as it happens.

- "start": the race's settings (confidence, first round fraction, seed, ranking) and variants;
- "round": one variant's verdicts on the items it answered in one round (task -> item id ->
  right, wrong or null for an item the harness could not judge), and its peak memory (GB)
  after the first round;
- "stop": why a variant's accuracy work ended, in words ("stopped after 40 items: beaten by X
  (p = 0.0004)"), with the reason, the beater, p and the items answered;
- "note": a pair the race could not compare, and why (it never decides on unpaired evidence).
Which items each variant answered, and why it stopped, is all here: `--resume` rebuilds the
race from it, and the report reads the stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval.store.files import append_line, read_jsonl
from edgeeval.store.runs import make_dir, run_dir

RACE_FILE = "race.jsonl"
START, ROUND, STOP, NOTE = "start", "round", "stop", "note"
EXHAUSTED = "items ran out"  # race.rules.EXHAUSTED: the reason of a variant that answered all


@dataclass(frozen=True)
class RaceLine:
    """One event of a race (see the module doc for the kinds)."""

    kind: str
    variant: str = ""
    round: int = -1
    memory_gb: float | None = None
    verdicts: dict[str, dict[str, bool | None]] = field(default_factory=dict)
    reason: str = ""
    by: str = ""
    p: float | None = None
    n_items: int = 0
    text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] = ()


def append_race_line(run_id: str, line: RaceLine, root: Path | None = None) -> None:
    """Append one event to the run's race log."""
    directory = make_dir(run_dir(run_id, root))
    append_line(directory / RACE_FILE, rec.to_json(line))


def read_race(run_id: str, root: Path | None = None) -> list[RaceLine]:
    """The run's race events in the order written; [] for a run that did not race."""
    return list(read_jsonl(run_dir(run_id, root) / RACE_FILE, RaceLine))


def race_stops(run_id: str, root: Path | None = None) -> dict[str, RaceLine]:
    """Variant -> its stop event (the last one written), for the report."""
    return {line.variant: line for line in read_race(run_id, root) if line.kind == STOP}


def stop_notes(run_id: str, root: Path | None = None) -> dict[str, str]:
    """Variant -> the words of its early stop (beaten, settled or failed), for the report's
    status column; variants that answered every item are not named."""
    return {
        v: line.text for v, line in race_stops(run_id, root).items() if line.reason != EXHAUSTED
    }
