"""The SQLite store, <reports>/edgeeval.sqlite: every run's records (table `records`) and
fidelity results (table `fidelity`), for queries across runs, and every speed test of those
records as llama-bench's `-o sql` writes it (table `llama_bench`, see store/llamabench.py:
llama.cpp's scripts/compare-llama-bench.py reads this file as it is).

The runs' JSONL files are the truth and this file an index of them, so a damaged database
(garbage bytes, a truncated file) is never fatal: `transact` sets it aside as
edgeeval.sqlite.corrupt-<timestamp>, says so through the `edgeeval.store` logger, rebuilds
it from every run's JSONL and runs the operation again.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.errors import StorageError, StoreFileError
from edgeeval.store import files, llamabench

T = TypeVar("T")
DB_NAME = "edgeeval.sqlite"
RECORDS_FILE = "records.jsonl"
FIDELITY_FILE = "fidelity.jsonl"
log = logging.getLogger("edgeeval.store")
_SIDE_FILES = ("-journal", "-wal", "-shm")

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
CREATE TABLE IF NOT EXISTS fidelity (
    run_id TEXT NOT NULL, variant TEXT NOT NULL, reference TEXT NOT NULL,
    corpus_sha256 TEXT NOT NULL, n_ctx INTEGER NOT NULL, n_chunks INTEGER NOT NULL,
    status TEXT NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (run_id, variant, reference, corpus_sha256, n_ctx, n_chunks)
);
"""
# llama-bench's columns, then which record each row came from (the script reads only its own).
_LLAMA_BENCH = "CREATE TABLE llama_bench ({}, run_id TEXT, record_key TEXT, host_id TEXT)".format(
    ", ".join(f"{name} {kind}" for name, kind in llamabench.SQL_TYPES.items())
)
_LLAMA_BENCH_COLUMNS = [*llamabench.FIELDS, "run_id", "record_key", "host_id"]
# SQLite result codes (the low byte of an extended code)
_DAMAGED = {11: "database disk image is malformed", 26: "file is not a database"}
_STORAGE = {
    3: "permission denied",
    8: "read-only database or file system",
    10: "disk I/O error",
    13: "no space left on device",
    14: "cannot open the database file",
}


@dataclass
class Restored:
    """What a rebuild put back: rows per table, runs read, unreadable JSONL lines skipped, and
    the JSONL files that could not be read at all (not regular files, too large), with why."""

    records: int = 0
    fidelity: int = 0
    runs: int = 0
    skipped: int = 0
    refused: list[str] = field(default_factory=list)


@dataclass
class Held:
    """One run's rows in the database: key -> JSON text. A record's key is (variant,
    record_key); a fidelity result's (variant, reference, corpus_sha256, n_ctx, n_chunks)."""

    records: dict[tuple[str, str], str] = field(default_factory=dict)
    fidelity: dict[tuple[str, str, str, int, int], str] = field(default_factory=dict)


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF
    text = str(exc).lower()
    codes = {**_DAMAGED, **_STORAGE, 13: "disk is full", 8: "readonly"}
    return next((c for c, words in codes.items() if words in text), None)


def is_damaged(exc: sqlite3.Error) -> bool:
    """Whether the error means the file itself is corrupt or not a database."""
    return _code(exc) in _DAMAGED


def connect(root: Path | None = None) -> sqlite3.Connection:
    """An open connection with the schema in place (no recovery; see `transact`)."""
    directory = files.make_dir(root or settings.reports_dir())
    db = sqlite3.connect(directory / DB_NAME, timeout=30)
    try:
        db.executescript(_SCHEMA)
        _ensure_llama_bench(db)
    except BaseException:
        db.close()
        raise
    return db


def _ensure_llama_bench(db: sqlite3.Connection) -> None:
    """Make the llama_bench table if it is missing, filled from the records already stored (a
    database made before the table existed), in one write transaction so that two processes
    opening the same old file never fill it twice. A read-only store stays as it is (its
    records still read; the table appears once it is opened writable)."""
    if _has_llama_bench(db):
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        if not _has_llama_bench(db):
            db.execute(_LLAMA_BENCH)
            for (text,) in db.execute("SELECT json FROM records").fetchall():
                try:
                    record = files.parse_line(str(text).encode("utf-8"), rec.ModelRecord)
                except ValueError:
                    continue
                _insert_llama_bench(db, [record])
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError) and _code(exc) == 8:  # read-only
            return
        raise


def _has_llama_bench(db: sqlite3.Connection) -> bool:
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'llama_bench'"
    ).fetchone()
    return found is not None


def _insert_llama_bench(db: sqlite3.Connection, records: Iterable[rec.ModelRecord]) -> None:
    """One llama_bench row per speed test of each record."""
    rows = [
        (
            *(llamabench.sql_value(v) for v in llamabench.row(r, s).values()),
            r.run_id,
            r.key,
            r.host.host_id,
        )
        for r in records
        for s in r.speed
    ]
    marks = ", ".join("?" * len(_LLAMA_BENCH_COLUMNS))
    db.executemany(
        f"INSERT INTO llama_bench ({', '.join(_LLAMA_BENCH_COLUMNS)}) VALUES ({marks})", rows
    )


def _once(directory: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """fn in one transaction; a full or read-only disk becomes a StorageError."""
    try:
        with closing(connect(directory)) as db, db:
            return fn(db)
    except sqlite3.DatabaseError as exc:
        if not is_damaged(exc) and _code(exc) in _STORAGE:
            path = directory / DB_NAME
            raise StorageError(path, _STORAGE[_code(exc) or 0]) from exc
        raise


def transact(root: Path | None, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn(db)` in one transaction and return its result. A damaged database is set aside,
    rebuilt from the runs' JSONL (see the module docstring), and `fn` runs again."""
    directory = root or settings.reports_dir()
    try:
        return _once(directory, fn)
    except sqlite3.DatabaseError as exc:
        if not is_damaged(exc):
            raise
        recover(directory, str(exc))
    return _once(directory, fn)


def recover(directory: Path, reason: str) -> tuple[Path | None, Restored]:
    """Set a damaged database aside, rebuild it from every run's JSONL, and say so through the
    `edgeeval.store` logger; return (where the damaged file went, what was restored)."""
    path = directory / DB_NAME
    aside = files.set_aside(path, siblings=_SIDE_FILES) if path.exists() else None
    restored = rebuild(directory)
    log.warning(
        "%s is damaged (%s): set aside as %s and rebuilt from the runs' JSONL "
        "(%d records, %d fidelity results from %d runs; %d unreadable lines skipped)",
        path,
        reason,
        aside.name if aside else "-",
        restored.records,
        restored.fidelity,
        restored.runs,
        restored.skipped,
    )
    return aside, restored


def run_dirs(directory: Path) -> list[Path]:
    """Run directories under `directory` (valid run id names) holding records or fidelity."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_dir()
        and files.is_run_id(p.name)
        and ((p / RECORDS_FILE).exists() or (p / FIDELITY_FILE).exists())
    )


def _read(path: Path, cls: type[T], restored: Restored) -> files.Lines[T]:
    """A run's JSONL file for a rebuild; one that cannot be read at all (a directory, a FIFO,
    a device, too large) reads as empty and is named in `restored.refused`."""
    try:
        return files.read_jsonl(path, cls)
    except StoreFileError as exc:
        restored.refused.append(str(exc))
        return files.Lines(path=path)


def _fill(db: sqlite3.Connection, run: Path, restored: Restored) -> None:
    records = _read(run / RECORDS_FILE, rec.ModelRecord, restored)
    results = _read(run / FIDELITY_FILE, rec.FidelityResult, restored)
    restored.records += insert_records(db, records)
    restored.fidelity += insert_fidelity(db, results)
    restored.skipped += records.skipped + results.skipped
    restored.runs += 1


def rebuild(directory: Path) -> Restored:
    """Fill a new (or empty) database from every run's JSONL; return what was restored."""
    restored = Restored()

    def fill(db: sqlite3.Connection) -> None:
        for run in run_dirs(directory):
            _fill(db, run, restored)

    _once(directory, fill)
    return restored


def fidelity_key(result: rec.FidelityResult) -> tuple[str, str, str, int, int]:
    """The fidelity table's key of a result (without the run id). Its `variant` column holds
    the variant with its knob point ("q4_k_m + KV q8_0 + FA on"; the plain name at the
    defaults), so each point of a KV sweep is its own row."""
    return (
        result.point_name,
        result.reference,
        result.corpus_sha256,
        result.n_ctx,
        result.n_chunks,
    )


def held(directory: Path, run_id: str) -> Held:
    """The run's rows in the database (none when there is no database file)."""
    files.check_run_id(run_id)
    if not (directory / DB_NAME).exists():
        return Held()

    def read(db: sqlite3.Connection) -> Held:
        rows = db.execute(
            "SELECT variant, record_key, json FROM records WHERE run_id = ?", (run_id,)
        ).fetchall()
        found = db.execute(
            "SELECT variant, reference, corpus_sha256, n_ctx, n_chunks, json FROM fidelity "
            "WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        return Held(
            records={(str(v), str(k)): str(j) for v, k, j in rows},
            fidelity={
                (str(v), str(r), str(c), int(n), int(m)): str(j) for v, r, c, n, m, j in found
            },
        )

    return transact(directory, read)


def held_run_ids(directory: Path) -> set[str]:
    """Run ids with rows in the database (empty when there is no database file)."""
    if not (directory / DB_NAME).exists():
        return set()
    rows = transact(
        directory,
        lambda db: db.execute(
            "SELECT run_id FROM records UNION SELECT run_id FROM fidelity"
        ).fetchall(),
    )
    return {str(r) for (r,) in rows if files.is_run_id(str(r))}


def rebuild_run(
    directory: Path,
    run_id: str,
    records: list[rec.ModelRecord],
    results: list[rec.FidelityResult],
) -> Restored:
    """Put the run's JSONL contents (`records`, `results`) into its rows: each row whose key
    they hold is replaced by theirs; a row they lack is kept (never deleted: `edgeeval repair`
    writes such rows back to the JSONL). Returns how many rows came from them."""
    files.check_run_id(run_id)
    restored = Restored()

    def refill(db: sqlite3.Connection) -> None:
        nonlocal restored
        restored = Restored(runs=1)  # a retry after recovery starts counting again
        db.executemany(
            "DELETE FROM records WHERE run_id = ? AND variant = ? AND record_key = ?",
            sorted({(run_id, r.variant.name, r.key) for r in records}),
        )
        db.executemany(
            "DELETE FROM llama_bench WHERE run_id = ? AND record_key = ?",
            sorted({(run_id, r.key) for r in records}),
        )
        db.executemany(
            "DELETE FROM fidelity WHERE run_id = ? AND variant = ? AND reference = ? "
            "AND corpus_sha256 = ? AND n_ctx = ? AND n_chunks = ?",
            sorted({(run_id, *fidelity_key(r)) for r in results}),
        )
        restored.records = insert_records(db, records)
        restored.fidelity = insert_fidelity(db, results)

    transact(directory, refill)
    return restored


def check(directory: Path) -> str | None:
    """None when the database is sound (or absent), else what SQLite says is wrong."""
    if not (directory / DB_NAME).exists():
        return None
    try:
        rows = _once(directory, lambda db: db.execute("PRAGMA quick_check").fetchall())
    except sqlite3.DatabaseError as exc:
        if is_damaged(exc):
            return str(exc)
        raise
    problems = [str(row[0]) for row in rows if row[0] != "ok"]
    return "; ".join(problems[:3]) or None


def insert_records(db: sqlite3.Connection, records: Iterable[rec.ModelRecord]) -> int:
    """Insert records, ignoring ones already there, and the speed tests of the new ones into
    llama_bench; return how many records were new."""
    new = []
    for r in records:
        row = (r.run_id, r.variant.name, r.key, r.host.host_id, r.status, r.started_at)
        cursor = db.execute(
            "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", (*row, rec.to_json(r))
        )
        if cursor.rowcount > 0:
            new.append(r)
    _insert_llama_bench(db, new)
    return len(new)


def insert_fidelity(db: sqlite3.Connection, results: Iterable[rec.FidelityResult]) -> int:
    """Upsert fidelity results (the last one per key wins); return how many rows changed."""
    rows = [(r.run_id, *fidelity_key(r), r.status, rec.to_json(r)) for r in results]
    before = db.total_changes
    db.executemany("INSERT OR REPLACE INTO fidelity VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return db.total_changes - before


def all_records(root: Path | None = None) -> list[rec.ModelRecord]:
    """Every record in the database, oldest first ([] when there is no database yet); rows
    that no longer parse are skipped."""
    directory = root or settings.reports_dir()
    if not (directory / DB_NAME).exists():
        return []
    rows = transact(
        directory, lambda db: db.execute("SELECT json FROM records ORDER BY started_at").fetchall()
    )
    out = []
    for (text,) in rows:
        try:
            out.append(files.parse_line(str(text).encode("utf-8"), rec.ModelRecord))
        except ValueError:
            continue
    return out
