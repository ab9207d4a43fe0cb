"""Fidelity results on disk: <run>/fidelity.jsonl and the SQLite store's `fidelity` table."""

from __future__ import annotations

from pathlib import Path

from edgeeval import records as rec
from edgeeval.store import database, runs


def save_fidelity(result: rec.FidelityResult, root: Path | None = None) -> None:
    """Append to <run>/fidelity.jsonl and upsert into the SQLite store's `fidelity` table."""
    directory = runs.make_dir(runs.run_dir(result.run_id, root))
    runs.append_line(directory / database.FIDELITY_FILE, rec.to_json(result))
    database.transact(root, lambda db: database.insert_fidelity(db, [result]))


def load_fidelity(run_id: str, root: Path | None = None) -> runs.Lines[rec.FidelityResult]:
    """A run's fidelity results from its JSONL (the last per variant, knob point and
    reference wins); `.skipped` counts unreadable lines."""
    path = runs.run_dir(run_id, root) / database.FIDELITY_FILE
    results = runs.read_jsonl(path, rec.FidelityResult)
    latest = {(r.point_name, r.reference): r for r in results}
    return runs.Lines(
        latest.values(), path=path, skipped=results.skipped, first_problem=results.first_problem
    )
