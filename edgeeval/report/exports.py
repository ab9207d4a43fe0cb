"""report.csv and report.json: the ranking rows as one schema (every RankRow field plus its
verdict), the per-task accuracies, the notes and the pairs' comparisons (report.paired)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from typing import Any

from edgeeval import records as rec
from edgeeval.report.summarize import FORMULA, TIE_RULE, WORKED_EXAMPLE, HostGroup, RankRow, verdict
from edgeeval.settings import GB

COLUMNS = [
    "rank",
    "rank_tied",
    "name",
    "family",
    "quant",
    "kind",
    "status",
    "verdict",
    "file_gb",
    "peak_rss_gb",
    "peak_uss_gb",
    "load_s",
    "pp_ts",
    "pp_stddev_ts",
    "tg_ts",
    "tg_stddev_ts",
    "capability",
    "capability_se",
    "capability_per_gb",
    "capability_per_gb_se",
    "capability_per_file_gb",
    "pareto",
    "dominated_by",
    "tied_with",
    "over_budget",
    "host_id",
    "error",
]


def row_dict(row: RankRow) -> dict[str, Any]:
    """A row as JSON-ready data: every field plus its `verdict` (the status column)."""
    data = dataclasses.asdict(row)
    if not data["race_stop"]:  # only a raced run's rows carry it: other reports stay as they were
        del data["race_stop"]
    if not data["emulated"]:  # likewise an emulated (FP8) variant's rows only
        del data["emulated"]
    for name in ("gen_tokens_per_j", "capability_per_joule", "capability_per_joule_se"):
        if data[name] is None:  # only rows with energy measured carry the per-joule figures
            del data[name]
    if not data["unranked"]:
        del data["unranked"]
    return {**data, "verdict": verdict(row)}


def to_json(
    rows: Sequence[RankRow], meta: dict[str, Any], host_groups: Sequence[HostGroup] = ()
) -> str:
    hosts = [
        {
            "host": rec.to_dict(g.host),
            "run_ids": list(g.run_ids),
            "rows": [row_dict(r) for r in g.rows],
        }
        for g in host_groups
    ]
    return json.dumps(
        {
            **meta,
            "formula": FORMULA,
            "tie_rule": TIE_RULE,
            "worked_example": WORKED_EXAMPLE,
            "gb_bytes": GB,
            "rows": [row_dict(r) for r in rows],
            "hosts": hosts,
        },
        indent=2,
        sort_keys=True,
    )


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return ";".join(value) if isinstance(value, list | tuple) else value


def to_csv(rows: Sequence[RankRow], tasks: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS + [f"acc_{t}" for t in tasks] + [f"acc_se_{t}" for t in tasks])
    for row in rows:
        data = row_dict(row)
        writer.writerow(
            [_csv_value(data[c]) for c in COLUMNS]
            + [row.task_acc.get(t, "") for t in tasks]
            + [row.task_acc_se.get(t, "") for t in tasks]
        )
    return buf.getvalue()
