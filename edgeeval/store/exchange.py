"""Results from other machines: read exported runs and merge them into the local store.

An export is a run's `records.jsonl`, a run directory holding one, or another machine's
`edgeeval.sqlite`. A record is new unless the store already holds the very same record (same
run, variant and key) or an ok record with the same key, `ModelRecord.key`: host id + file
sha256 + settings key. So importing a file twice adds nothing, and a failed measurement never
shadows a later good one. Each imported record is appended to its own run's directory (run.json
and records.jsonl are created as needed), so `edgeeval report RUN` works for imported runs.
Records are validated first (store.validate: types, ranges, run ids); unfit ones are rejected
and counted, and unreadable lines of the files are skipped and counted, never fatal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from edgeeval import records as rec
from edgeeval.errors import DamagedRunError, EdgeevalError, RunNotFoundError
from edgeeval.store import database, files, validate
from edgeeval.store import runs as store

_SQLITE_MAGIC = b"SQLite format 3\x00"


class ImportFileError(EdgeevalError):
    """A file given to `edgeeval import` is missing or holds no edgeeval records; `path`."""

    exit_code = 2

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(
            f"{path}: {reason}; pass a run's records.jsonl, a run directory or an "
            "edgeeval.sqlite file (`edgeeval runs` lists local runs)"
        )
        self.path = str(path)


@dataclass
class ImportResult:
    """What an import did: records added (per run), how many were already there, how many
    were `rejected` (unfit, see store.validate; `reasons` says why, in order) and how many
    unreadable lines were `skipped` in the files."""

    added: list[rec.ModelRecord] = field(default_factory=list)
    duplicates: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def runs(self) -> list[str]:
        return sorted({r.run_id for r in self.added})


def read_sqlite(path: Path) -> files.Lines[rec.ModelRecord]:
    """Every record in an edgeeval SQLite store, opened read-only (the file is not changed);
    rows that do not parse are skipped and counted."""
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT json FROM records ORDER BY started_at").fetchall()
    except sqlite3.Error as exc:
        raise ImportFileError(path, f"not an edgeeval store ({exc})") from exc
    out, skipped, first = [], 0, ""
    for number, (text,) in enumerate(rows, 1):
        try:
            out.append(files.parse_line(str(text).encode("utf-8"), rec.ModelRecord))
        except ValueError as exc:
            skipped += 1
            first = first or f"{path.name} row {number}: {exc}"
    return files.Lines(out, path=path, skipped=skipped, first_problem=first)


def read_jsonl(path: Path) -> files.Lines[rec.ModelRecord]:
    """Records from a records.jsonl. Unreadable lines (a run killed mid-write, a bad byte) are
    skipped and counted, like the store does; a file with no readable record is an error."""
    out = store.read_jsonl(path, rec.ModelRecord)
    if not out:
        detail = f" ({out.skipped} unreadable lines; {out.first_problem})" if out.skipped else ""
        raise ImportFileError(path, f"no edgeeval records in it{detail}")
    return out


def read_export(path: Path) -> files.Lines[rec.ModelRecord]:
    """Records from an exported file or run directory (see the module docstring)."""
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.is_file():
        raise ImportFileError(path, "no such file")
    with open(path, "rb") as fh:
        is_sqlite = fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    return read_sqlite(path) if is_sqlite else read_jsonl(path)


def _stored_keys(root: Path | None) -> tuple[set[tuple[str, str, str]], set[str]]:
    """(run_id, variant, key) of every stored record, and the keys of the ok ones."""
    rows = database.transact(
        root,
        lambda db: db.execute("SELECT run_id, variant, record_key, status FROM records").fetchall(),
    )
    exact = {(run, variant, key) for run, variant, key, _ in rows}
    return exact, {key for _, _, key, status in rows if status == rec.STATUS_OK}


def _ensure_run(record: rec.ModelRecord, source: str, root: Path | None) -> None:
    """Create or extend the run's manifest so the imported run can be reported; a damaged one
    is set aside and rebuilt from the run's records."""
    rebuilt = False
    try:
        manifest = store.read_manifest(record.run_id, root)
    except RunNotFoundError:
        manifest = {
            "run_id": record.run_id,
            "host": rec.to_dict(record.host),
            "settings": rec.to_dict(record.settings),
            "variants": [],
            "imported_from": source,
        }
    except DamagedRunError as exc:
        files.set_aside(Path(exc.path))
        held = store.read_jsonl(Path(exc.path).with_name(database.RECORDS_FILE), rec.ModelRecord)
        manifest = store.manifest_from_records(record.run_id, [*held, record], exc.reason)
        rebuilt = True
    variants = manifest.get("variants", [])
    if rebuilt or record.variant.name not in variants:
        if record.variant.name not in variants:
            manifest["variants"] = [*variants, record.variant.name]
        store.write_manifest(record.run_id, manifest, root)


def import_records(
    records: Iterable[rec.ModelRecord], *, source: str = "", root: Path | None = None
) -> ImportResult:
    """Add the records the store does not hold yet and that are fit to store (rules in the
    module docstring)."""
    exact, ok_keys = _stored_keys(root)
    result = ImportResult()
    for record in records:
        why = validate.problem(record)
        if why:
            result.rejected += 1
            name = getattr(record.variant, "name", "?")
            result.reasons.append(f"{source or 'record'}: '{name}' of run {record.run_id!r}: {why}")
            continue
        ident = (record.run_id, record.variant.name, record.key)
        if ident in exact or record.key in ok_keys:
            result.duplicates += 1
            continue
        _ensure_run(record, source, root)
        store.save_record(record, root=root)
        exact.add(ident)
        if record.status == rec.STATUS_OK:
            ok_keys.add(record.key)
        result.added.append(record)
    return result


def import_files(paths: Sequence[Path], *, root: Path | None = None) -> ImportResult:
    """Import every file in order; all files are read first, so an unreadable one imports
    nothing."""
    batches = [(str(p), read_export(p)) for p in paths]
    total = ImportResult()
    for source, records in batches:
        result = import_records(records, source=source, root=root)
        total.added += result.added
        total.duplicates += result.duplicates
        total.rejected += result.rejected
        total.reasons += result.reasons
        total.skipped += records.skipped
    return total
