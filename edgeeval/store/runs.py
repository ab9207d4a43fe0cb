"""Where measurements live: JSON lines per run, plus one SQLite file that accumulates runs.

Layout under the reports directory:
    <run-id>/run.json        the run's manifest (settings, host, requested variants)
    <run-id>/records.jsonl   one ModelRecord per line, appended (and fsynced) as each finishes
    <run-id>/samples.jsonl   per-item results, so tasks can be re-scored without a model
    edgeeval.sqlite          every record of every run (table `records`)
A record is appended the moment its model finishes, so a killed run loses nothing finished.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.errors import RunNotFoundError

T = TypeVar("T")
DB_NAME = "edgeeval.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    record_key TEXT NOT NULL,
    host_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (run_id, variant, record_key)
);
CREATE INDEX IF NOT EXISTS records_key ON records (record_key);
"""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_dir(run_id: str, root: Path | None = None) -> Path:
    return (root or settings.reports_dir()) / run_id


def append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_manifest(run_id: str, manifest: dict[str, Any], root: Path | None = None) -> Path:
    directory = run_dir(run_id, root)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_manifest(run_id: str, root: Path | None = None) -> dict[str, Any]:
    path = run_dir(run_id, root) / "run.json"
    if not path.exists():
        raise RunNotFoundError(
            f"no run '{run_id}' in {path.parent.parent} (missing {path.name}); "
            "run `edgeeval runs` to list stored runs"
        )
    return json.loads(path.read_text())


def save_record(
    record: rec.ModelRecord,
    samples: Iterable[rec.SampleResult] = (),
    root: Path | None = None,
    generations: Iterable[rec.GenSampleResult] = (),
) -> None:
    """Append one finished model's record to the run's JSONL and to the SQLite store, and its
    per-item results (log-likelihoods to samples.jsonl, generations to generations.jsonl)."""
    directory = run_dir(record.run_id, root)
    directory.mkdir(parents=True, exist_ok=True)
    for name, items in (("samples.jsonl", samples), ("generations.jsonl", generations)):
        lines = [rec.to_json(s) for s in items]
        if lines:
            append_line(directory / name, "\n".join(lines))
    line = rec.to_json(record)
    append_line(directory / "records.jsonl", line)
    insert_records([record], root=root)


def insert_records(records: Iterable[rec.ModelRecord], root: Path | None = None) -> int:
    """Insert records into the SQLite store, ignoring ones already there; return how many new."""
    rows = [
        (r.run_id, r.variant.name, r.key, r.host.host_id, r.status, r.started_at, rec.to_json(r))
        for r in records
    ]
    with connect(root) as db:
        before = db.total_changes
        db.executemany("INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return db.total_changes - before


def connect(root: Path | None = None) -> sqlite3.Connection:
    directory = root or settings.reports_dir()
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / DB_NAME, timeout=30)
    db.executescript(_SCHEMA)
    return db


def load_records(run_id: str, root: Path | None = None) -> list[rec.ModelRecord]:
    """All records of a run, from its JSONL (the last record per variant wins)."""
    path = run_dir(run_id, root) / "records.jsonl"
    if not path.exists():
        raise RunNotFoundError(
            f"no results for run '{run_id}' ({path} is missing); "
            "run `edgeeval runs` to list stored runs"
        )
    latest = {r.variant.name: r for r in read_jsonl(path, rec.ModelRecord)}
    return list(latest.values())


def load_samples(run_id: str, root: Path | None = None) -> list[rec.SampleResult]:
    """Per-item log-likelihoods of a run's multiple-choice tasks."""
    return read_jsonl(run_dir(run_id, root) / "samples.jsonl", rec.SampleResult)


def load_generations(run_id: str, root: Path | None = None) -> list[rec.GenSampleResult]:
    """Per-item prompts, outputs and extracted answers of a run's generative and code tasks."""
    return read_jsonl(run_dir(run_id, root) / "generations.jsonl", rec.GenSampleResult)


def read_jsonl(path: Path, cls: type[T]) -> list[T]:
    """Records of type `cls`, one per line ([] when the file is missing). A line cut short by
    a kill mid-write is skipped: every line before it was fsynced and is intact."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(rec.from_dict(cls, json.loads(line)))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
    return out


def list_runs(root: Path | None = None) -> list[str]:
    """Run ids in the reports directory, oldest first."""
    directory = root or settings.reports_dir()
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if (p / "run.json").exists())


def resolve_run(run: str, root: Path | None = None) -> str:
    """Accept a run id, `latest`, or a path to a run directory; return the run id."""
    if run == "latest":
        # a run that has just started has a manifest but nothing to report yet
        runs = [r for r in list_runs(root) if (run_dir(r, root) / "records.jsonl").exists()]
        if not runs:
            raise RunNotFoundError("no stored runs yet; run `make bench` or `edgeeval bench`")
        return runs[-1]
    return Path(run).name if Path(run).is_dir() else run
