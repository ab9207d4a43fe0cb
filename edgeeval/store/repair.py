"""`edgeeval repair`: bring a run's files and its SQLite rows back together, losing nothing.

Repair never reduces what is stored. For each run:
- a records.jsonl or fidelity.jsonl (or samples/generations.jsonl) that is not a regular file
  (a directory, a FIFO, a link to a device or to nothing) or is too large to read is set aside
  as <name>.corrupt-<timestamp>, never deleted;
- the records and fidelity results the SQLite store holds and the JSONL lacks (the JSONL was
  deleted, set aside, or cut short) are written back to the JSONL;
- the rows of the keys the JSONL holds are replaced with its records (the JSONL is the truth
  for what it holds); rows it lacks and could not take back are kept;
- a missing or damaged run.json is rewritten from the records (the damaged copy is kept as
  run.json.corrupt-<timestamp>);
- unreadable lines are counted.
A damaged SQLite file is set aside and rebuilt from every run first. One run that cannot be
repaired is reported and the others are still repaired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.errors import DamagedRunError, EdgeevalError, RunNotFoundError, StoreFileError
from edgeeval.safeio import kind_of
from edgeeval.store import database, files, runs

JSONL_FILES: dict[str, type] = {
    database.RECORDS_FILE: rec.ModelRecord,
    "samples.jsonl": rec.SampleResult,
    "generations.jsonl": rec.GenSampleResult,
    database.FIDELITY_FILE: rec.FidelityResult,
}


@dataclass
class RunRepair:
    """One run: rows restored from its JSONL, records and fidelity results written back to its
    JSONL from the SQLite store, unreadable lines per file, files set aside, what was done to
    run.json, and the problem that stopped the repair ("" when none)."""

    run_id: str
    records: int = 0
    fidelity: int = 0
    records_back: int = 0
    fidelity_back: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    set_aside: list[str] = field(default_factory=list)
    manifest: str = ""  # "" when run.json was sound
    problem: str = ""


@dataclass
class Repair:
    """Every run repaired, and what was done to the SQLite file ("" when it was sound)."""

    runs: list[RunRepair] = field(default_factory=list)
    database: str = ""


def stored_run_ids(root: Path | None = None) -> list[str]:
    """Every run with a manifest, JSONL files or rows in the SQLite store, oldest first."""
    directory = root or settings.reports_dir()
    ids = set(runs.list_runs(directory)) | {p.name for p in database.run_dirs(directory)}
    return sorted(ids | database.held_run_ids(directory))


def repair(run_ids: list[str] | None = None, root: Path | None = None) -> Repair:
    """Repair the given runs (all stored runs when None); return what was done. A run that
    cannot be repaired has its `problem` set; the others are still repaired."""
    directory = root or settings.reports_dir()
    outcome = Repair()
    problem = database.check(directory)
    if problem:
        aside, restored = database.recover(directory, problem)
        outcome.database = (
            f"{database.DB_NAME} was damaged ({problem}); set aside as "
            f"{aside.name if aside else '-'} and rebuilt with {restored.records} records "
            f"from {restored.runs} runs"
        )
        if restored.refused:
            outcome.database += (
                f"; {len(restored.refused)} file(s) could not be read (the runs below set them "
                f"aside): {restored.refused[0]}"
            )
    ids = stored_run_ids(directory) if run_ids is None else run_ids
    for run_id in ids:
        try:
            outcome.runs.append(repair_run(run_id, directory))
        except RunNotFoundError:
            if run_ids is not None and len(run_ids) == 1:
                raise
            outcome.runs.append(RunRepair(run_id, problem=f"no run '{run_id}' in {directory}"))
        except (EdgeevalError, OSError) as exc:
            outcome.runs.append(RunRepair(run_id, problem=str(exc)))
    return outcome


def repair_run(run_id: str, root: Path | None = None) -> RunRepair:
    """Repair one run (see the module docstring); return what was done."""
    directory = root or settings.reports_dir()
    path = runs.run_dir(run_id, directory)
    held = database.held(directory, run_id)
    if not path.is_dir() and not (held.records or held.fidelity):
        raise RunNotFoundError(
            f"no run '{run_id}' in {directory}; run `edgeeval runs` to list stored runs"
        )
    files.make_dir(path)
    result = RunRepair(run_id)
    read: dict[str, files.Lines[Any]] = {}
    for name, cls in JSONL_FILES.items():
        read[name] = _read_or_set_aside(path / name, cls, result)
        if read[name].skipped:
            result.skipped[name] = read[name].skipped
    records, results = read[database.RECORDS_FILE], read[database.FIDELITY_FILE]
    back = _missing(held.records, {(r.variant.name, r.key) for r in records}, rec.ModelRecord)
    result.records_back = _write_back(path / database.RECORDS_FILE, back)
    found = {database.fidelity_key(r) for r in results}
    back_fidelity = _missing(held.fidelity, found, rec.FidelityResult)
    result.fidelity_back = _write_back(path / database.FIDELITY_FILE, back_fidelity)
    every = [*records, *back]
    restored = database.rebuild_run(directory, run_id, every, [*results, *back_fidelity])
    result.records, result.fidelity = restored.records, restored.fidelity
    result.manifest = _repair_manifest(run_id, directory, every)
    return result


def _read_or_set_aside(path: Path, cls: type, result: RunRepair) -> files.Lines[Any]:
    """The JSONL file's lines; a path that is not a regular file, or too large to read, is
    set aside (renamed, never deleted) and reads as empty."""
    what = kind_of(path)
    if what in ("", "missing"):
        try:
            return files.read_jsonl(path, cls)
        except StoreFileError as exc:  # too large (or replaced while being read)
            what = exc.reason
    aside = files.set_aside(path)
    result.set_aside.append(f"{path.name} was {what}; set aside as {aside.name}")
    return files.Lines(path=path)


def _missing(held: dict[Any, str], found: set[Any], cls: type) -> list[Any]:
    """The database's rows whose keys are not in `found`, as records (rows that no longer
    parse stay in the database and are not written back)."""
    out: list[Any] = []
    for key, text in sorted(held.items()):
        if key in found:
            continue
        try:
            out.append(files.parse_line(text.encode("utf-8"), cls))
        except ValueError:
            continue
    return out


def _write_back(path: Path, items: list[Any]) -> int:
    """Append `items` to the JSONL file at `path` (created when missing); return how many."""
    if items:
        files.append_line(path, "\n".join(rec.to_json(item) for item in items))
    return len(items)


def _repair_manifest(run_id: str, directory: Path, records: list[rec.ModelRecord]) -> str:
    """Rewrite a missing or damaged run.json from the run's records; say what was done."""
    path = runs.run_dir(run_id, directory) / runs.MANIFEST
    kept = ""
    try:
        runs.read_manifest(run_id, directory)
        return ""
    except RunNotFoundError:
        reason = "missing"
    except DamagedRunError as exc:
        reason = exc.reason
        kept = f"; the damaged copy is kept as {files.set_aside(path).name}"
    runs.write_manifest(run_id, runs.manifest_from_records(run_id, records, reason), directory)
    return f"run.json rewritten from records.jsonl ({reason}{kept})"
