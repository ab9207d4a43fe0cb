"""What `edgeeval plan` predicted, kept so a later report can say how far off it was.

One JSON line per variant and plan in `<reports>/plans.jsonl` (beside edgeeval.sqlite). The
report matches a measured record to the newest prediction for the same variant on the same
machine (hostname and CPU) made before the record was measured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from edgeeval import records as rec
from edgeeval import settings
from edgeeval.safeio import open_regular

PLANS_FILE = "plans.jsonl"
MAX_PLANS_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Prediction:
    """One variant's predicted memory and speed at one context on one machine."""

    made_at: str  # settings.ISO_TIME, as records' started_at
    hostname: str
    cpu_model: str
    variant: str
    n_ctx: int
    weights_bytes: int
    kv_bytes: int | None
    peak_bytes: int
    budget_bytes: int
    fits: bool
    tg_ts: float  # at an empty context, as the tg tests run
    tg_full_ctx_ts: float  # with the whole n_ctx of KV read per token
    pp_ts: float | None  # None when no earlier run measured this machine's prompt speed
    efficiency: float  # the share of the bandwidth roofline used for tg_ts (for this size)
    efficiency_source: str  # "measured: median of N tg tests" or "default (llmfit's 0.55)"
    bandwidth_bytes_per_s: float


def append_predictions(predictions: Iterable[Prediction], root: Path | None = None) -> Path:
    """Add `predictions` to the plans file under `root` (the reports folder by default)."""
    path = (root or settings.reports_dir()) / PLANS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for p in predictions:
            fh.write(json.dumps(asdict(p), sort_keys=True) + "\n")
    return path


def read_predictions(root: Path | None = None) -> list[Prediction]:
    """Every prediction under `root`, oldest first; unreadable lines and files are skipped
    (a prediction is a convenience, never a reason for a report to fail)."""
    path = (root or settings.reports_dir()) / PLANS_FILE
    try:
        with open_regular(path) as fh:
            text = fh.read(MAX_PLANS_BYTES).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return []
    names = {f.name for f in fields(Prediction)}
    out = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
            out.append(Prediction(**{k: v for k, v in data.items() if k in names}))
        except (ValueError, TypeError):
            continue
    return out


def prediction_for(record: rec.ModelRecord, predictions: Sequence[Prediction]) -> Prediction | None:
    """The newest prediction for `record`'s variant and machine made before it was measured."""
    host = record.host
    found = [
        p
        for p in predictions
        if p.variant == record.variant.name
        and p.hostname == host.hostname
        and p.cpu_model == host.cpu_model
        and p.made_at <= record.started_at
    ]
    return found[-1] if found else None
