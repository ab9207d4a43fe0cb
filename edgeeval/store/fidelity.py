"""Fidelity results on disk: <run>/fidelity.jsonl and the SQLite store's `fidelity` table."""

from __future__ import annotations

from pathlib import Path

from edgeeval import records as rec
from edgeeval.store import runs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fidelity (
    run_id TEXT NOT NULL, variant TEXT NOT NULL, reference TEXT NOT NULL,
    corpus_sha256 TEXT NOT NULL, n_ctx INTEGER NOT NULL, n_chunks INTEGER NOT NULL,
    status TEXT NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (run_id, variant, reference, corpus_sha256, n_ctx, n_chunks)
);
"""


def save_fidelity(result: rec.FidelityResult, root: Path | None = None) -> None:
    """Append to <run>/fidelity.jsonl and upsert into the SQLite store's `fidelity` table."""
    directory = runs.run_dir(result.run_id, root)
    directory.mkdir(parents=True, exist_ok=True)
    line = rec.to_json(result)
    runs.append_line(directory / "fidelity.jsonl", line)
    with runs.connect(root) as db:
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT OR REPLACE INTO fidelity VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                result.run_id,
                result.variant,
                result.reference,
                result.corpus_sha256,
                result.n_ctx,
                result.n_chunks,
                result.status,
                line,
            ),
        )


def load_fidelity(run_id: str, root: Path | None = None) -> list[rec.FidelityResult]:
    """A run's fidelity results from its JSONL (the last per variant and reference wins)."""
    path = runs.run_dir(run_id, root) / "fidelity.jsonl"
    results = runs.read_jsonl(path, rec.FidelityResult)
    return list({(r.variant, r.reference): r for r in results}.values())
