"""Where a worker's journal lives in a run, and what --resume keeps of it.

A bench worker appends one line per finished measurement to its journal (contracts.JournalLine)
the moment it has it. The journal sits in the run's directory, `<run>/journal/<name>-<key>.jsonl`
(one per record key: variant, file hash, settings, host), so it survives whatever stops the
worker or the bench: a limit, a crash, an out-of-memory kill, a SIGKILLed parent.

- `journal_path`: the variant's journal (its folder made).
- `resume_from`: before a variant is measured again, the journal cut to what is kept (a
  finished speed phase when its memory was stored too, finished tasks, the items of an
  unfinished task; never an error),
  written back atomically, as the Prior the worker starts from; None when there is nothing.
- `finish`: a variant whose record is stored as ok has its journal removed (the record, the
  samples and the generations hold all of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path

from edgeeval import contracts as ct
from edgeeval import records as rec
from edgeeval.store.files import make_dir, storage_errors, write_atomic
from edgeeval.store.runs import run_dir

JOURNAL_DIR = "journal"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def journal_path(run_id: str, key: str, name: str, root: Path | None = None) -> Path:
    """The journal of the record key `key` (variant `name`) in run `run_id`; its folder is
    made, the file is not."""
    safe = _UNSAFE.sub("_", name).lstrip(".")[:80] or "variant"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return make_dir(run_dir(run_id, root) / JOURNAL_DIR) / f"{safe}-{digest}.jsonl"


def resume_from(path: Path, *, speed: bool = True) -> tuple[ct.Prior, ct.Journal] | None:
    """What an earlier attempt left in the journal at `path` and a new attempt keeps (with the
    journal as it was read; its speed phase only with `speed`); the journal is rewritten to
    hold only the kept lines, so the new attempt's lines follow them. None when there is no
    journal or nothing in it."""
    journal = ct.read_journal(path)
    if not journal.lines:
        return None
    kept = journal.kept_lines(speed)
    if kept != journal.lines or journal.skipped:
        write_atomic(path, "".join(rec.to_json(line) + "\n" for line in kept))
    return journal.prior(speed), journal


def finish(path: Path) -> None:
    """Remove the journal of a variant whose ok record is stored."""
    with storage_errors(path), contextlib.suppress(FileNotFoundError):
        path.unlink()
