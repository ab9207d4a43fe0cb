"""`edgeeval repair`: rebuild what can be rebuilt from the runs' JSONL files.

For each run: count the unreadable lines of its JSONL files, rewrite a damaged or missing
run.json from its records (the damaged copy is kept as run.json.corrupt-<timestamp>), and
replace its rows in the SQLite store with what its JSONL holds. A damaged SQLite file is set
aside and rebuilt from every run first. JSONL files are read, never rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.errors import DamagedRunError, RunNotFoundError
from edgeeval.store import database, files, runs

JSONL_FILES: dict[str, type] = {
    database.RECORDS_FILE: rec.ModelRecord,
    "samples.jsonl": rec.SampleResult,
    "generations.jsonl": rec.GenSampleResult,
    database.FIDELITY_FILE: rec.FidelityResult,
}


@dataclass
class RunRepair:
    """One run: rows restored, unreadable lines per file, and what was done to run.json."""

    run_id: str
    records: int = 0
    fidelity: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    manifest: str = ""  # "" when run.json was sound


@dataclass
class Repair:
    """Every run repaired, and what was done to the SQLite file ("" when it was sound)."""

    runs: list[RunRepair] = field(default_factory=list)
    database: str = ""


def stored_run_ids(root: Path | None = None) -> list[str]:
    """Every run directory with a manifest or records, oldest first."""
    directory = root or settings.reports_dir()
    ids = set(runs.list_runs(directory)) | {p.name for p in database.run_dirs(directory)}
    return sorted(ids)


def repair(run_ids: list[str] | None = None, root: Path | None = None) -> Repair:
    """Repair the given runs (all stored runs when None); return what was done."""
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
    ids = stored_run_ids(directory) if run_ids is None else run_ids
    outcome.runs = [repair_run(run_id, directory) for run_id in ids]
    return outcome


def repair_run(run_id: str, root: Path | None = None) -> RunRepair:
    """Repair one run (see the module docstring); return what was done."""
    directory = root or settings.reports_dir()
    path = runs.run_dir(run_id, directory)
    if not path.is_dir():
        raise RunNotFoundError(
            f"no run '{run_id}' in {directory}; run `edgeeval runs` to list stored runs"
        )
    result = RunRepair(run_id)
    for name, cls in JSONL_FILES.items():
        skipped = files.read_jsonl(path / name, cls).skipped
        if skipped:
            result.skipped[name] = skipped
    result.manifest = _repair_manifest(run_id, directory)
    restored = database.rebuild_run(directory, run_id)
    result.records, result.fidelity = restored.records, restored.fidelity
    return result


def _repair_manifest(run_id: str, directory: Path) -> str:
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
    records = list(files.read_jsonl(path.with_name(database.RECORDS_FILE), rec.ModelRecord))
    runs.write_manifest(run_id, runs.manifest_from_records(run_id, records, reason), directory)
    return f"run.json rewritten from records.jsonl ({reason}{kept})"
