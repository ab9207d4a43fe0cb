"""Where measurements live: JSON lines per run, plus one SQLite file that indexes all runs.

Layout under the reports directory:
    <run-id>/run.json        the run's manifest (settings, host, requested variants)
    <run-id>/records.jsonl   one ModelRecord per line, appended (and fsynced) as each finishes
    <run-id>/samples.jsonl   per-item results, so tasks can be re-scored without a model
    edgeeval.sqlite          every record of every run (table `records`), see store.database
A record is appended the moment its model finishes, so a killed run loses nothing finished.
The JSONL files are the truth: a torn or bad line is skipped and counted, never fatal; a
damaged SQLite file or run.json is rebuilt from them (`edgeeval repair`). Run ids are checked
before they name a path, and whole files (manifests, reports) are written atomically.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.errors import DamagedRunError, RunNotFoundError
from edgeeval.safeio import read_regular
from edgeeval.store import database
from edgeeval.store.files import (  # noqa: F401  (re-exported: the store's file primitives)
    MAX_MANIFEST_BYTES,
    Lines,
    append_line,
    check_run_id,
    is_run_id,
    make_dir,
    read_jsonl,
    storage_errors,
    write_atomic,
)
from edgeeval.store.items import item_line

DB_NAME = database.DB_NAME
MANIFEST = "run.json"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_dir(run_id: str, root: Path | None = None) -> Path:
    """The run's directory under the reports dir; InvalidRunIdError unless `run_id` is a plain
    name (see store.files.check_run_id), so no run id reaches outside it."""
    return (root or settings.reports_dir()) / check_run_id(run_id)


def write_manifest(run_id: str, manifest: dict[str, Any], root: Path | None = None) -> Path:
    """Write the run's run.json atomically; return its path."""
    directory = make_dir(run_dir(run_id, root))
    return write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))


def save_run_manifest(
    manifest: rec.RunManifest, root: Path | None = None, *, keep: dict[str, Any] | None = None
) -> Path:
    """Write a run's run.json from its typed manifest, whoever drives the run (one machine or
    a cluster); `keep` (the manifest read before, on resume) keeps the keys the type does not
    know (an import's source, a recovery note)."""
    return write_manifest(manifest.run_id, {**(keep or {}), **manifest.to_json_dict()}, root)


def load_run_manifest(run_id: str, root: Path | None = None) -> rec.RunManifest:
    """The run's run.json, typed; old manifests load (missing keys take their defaults).
    ValueError or TypeError when a key holds the wrong kind of value."""
    return rec.from_dict(rec.RunManifest, read_manifest(run_id, root))


def read_manifest(run_id: str, root: Path | None = None) -> dict[str, Any]:
    """The run's manifest. RunNotFoundError when it is missing; DamagedRunError (naming the
    file and `edgeeval repair`) when it is torn, not UTF-8, not a JSON object, not a regular
    file (a directory, a FIFO, a device) or over MAX_MANIFEST_BYTES."""
    path = run_dir(run_id, root) / MANIFEST
    if not path.exists():
        raise RunNotFoundError(
            f"no run '{run_id}' in {path.parent.parent} (missing {path.name}); "
            "run `edgeeval runs` to list stored runs"
        )

    def refuse(where: str | Path, reason: str) -> DamagedRunError:
        return DamagedRunError(where, run_id, reason)

    try:
        raw = read_regular(path, limit=MAX_MANIFEST_BYTES, error=refuse)
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DamagedRunError(path, run_id, f"not UTF-8 at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise DamagedRunError(path, run_id, f"not JSON: {exc.msg} at line {exc.lineno}") from exc
    except RecursionError:
        raise DamagedRunError(path, run_id, "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise DamagedRunError(path, run_id, f"a JSON {type(data).__name__}, not an object")
    return data


def save_record(
    record: rec.ModelRecord,
    samples: Iterable[rec.SampleResult] = (),
    root: Path | None = None,
    generations: Iterable[rec.GenSampleResult] = (),
) -> None:
    """Append one finished model's record to the run's JSONL and to the SQLite store, and its
    per-item results (log-likelihoods to samples.jsonl, generations to generations.jsonl),
    each line naming the record's variant, file sha256, settings key and host (store.items)."""
    directory = make_dir(run_dir(record.run_id, root))
    for name, items in (("samples.jsonl", samples), ("generations.jsonl", generations)):
        lines = [item_line(s, record) for s in items]  # each line names its record
        if lines:
            append_line(directory / name, "\n".join(lines))
    line = rec.to_json(record)
    append_line(directory / database.RECORDS_FILE, line)
    insert_records([record], root=root)


def insert_records(records: Iterable[rec.ModelRecord], root: Path | None = None) -> int:
    """Insert records into the SQLite store, ignoring ones already there; return how many new
    (a damaged store is rebuilt from the JSONL first, see store.database)."""
    batch = list(records)
    return database.transact(root, lambda db: database.insert_records(db, batch))


def connect(root: Path | None = None) -> sqlite3.Connection:
    """An open connection to the SQLite store, schema in place."""
    return database.connect(root)


def load_records(run_id: str, root: Path | None = None) -> Lines[rec.ModelRecord]:
    """All records of a run, from its JSONL (the last record per variant, host and context
    knob point wins: a cluster run holds one per host, a knob sweep one per point);
    `.skipped` counts unreadable lines of records.jsonl."""
    path = run_dir(run_id, root) / database.RECORDS_FILE
    if not path.exists():
        raise RunNotFoundError(
            f"no results for run '{run_id}' ({path} is missing); "
            "run `edgeeval runs` to list stored runs"
        )
    lines = read_jsonl(path, rec.ModelRecord)
    latest = {(r.variant.name, r.host.host_id, rec.knob_point(r.settings)): r for r in lines}
    return Lines(
        latest.values(), path=path, skipped=lines.skipped, first_problem=lines.first_problem
    )


def load_samples(run_id: str, root: Path | None = None) -> Lines[rec.SampleResult]:
    """Per-item log-likelihoods of a run's multiple-choice tasks."""
    return read_jsonl(run_dir(run_id, root) / "samples.jsonl", rec.SampleResult)


def load_generations(run_id: str, root: Path | None = None) -> Lines[rec.GenSampleResult]:
    """Per-item prompts, outputs and extracted answers of a run's generative and code tasks."""
    return read_jsonl(run_dir(run_id, root) / "generations.jsonl", rec.GenSampleResult)


def list_runs(root: Path | None = None) -> list[str]:
    """Run ids in the reports directory, oldest first."""
    directory = root or settings.reports_dir()
    if not directory.exists():
        return []
    return sorted(
        p.name for p in directory.iterdir() if is_run_id(p.name) and (p / MANIFEST).exists()
    )


def resolve_run(run: str, root: Path | None = None) -> str:
    """Accept a run id, `latest`, or a path to a run directory; return the run id
    (InvalidRunIdError when what names it is not a valid run id)."""
    if run == "latest":
        # a run that has just started has a manifest but nothing to report yet
        runs = [r for r in list_runs(root) if (run_dir(r, root) / database.RECORDS_FILE).exists()]
        if not runs:
            raise RunNotFoundError("no stored runs yet; run `make bench` or `edgeeval bench`")
        return runs[-1]
    return check_run_id(Path(run).name if Path(run).is_dir() else run)


def locate_run(run: str, root: Path | None = None) -> tuple[str, Path]:
    """(run id, reports dir) of `run`. A run directory (one holding run.json or records.jsonl)
    is read where it is, inside the reports dir or not; an id or "latest" is looked up under
    `root` (default: the reports dir)."""
    path = Path(run)
    if run != "latest" and path.is_dir():
        if (path / MANIFEST).exists() or (path / database.RECORDS_FILE).exists():
            where = path.resolve()
            return check_run_id(where.name), where.parent
    return resolve_run(run, root), root or settings.reports_dir()


def manifest_from_records(
    run_id: str, records: list[rec.ModelRecord], reason: str
) -> dict[str, Any]:
    """A manifest rebuilt from the run's records (host and settings of the first one)."""
    first = records[0] if records else None
    return {
        "run_id": run_id,
        "host": rec.to_dict(first.host) if first else None,
        "settings": rec.to_dict(first.settings) if first else None,
        "variants": sorted({r.variant.name for r in records}),
        "recovered": reason,
    }
