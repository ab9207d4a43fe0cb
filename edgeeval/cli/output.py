"""What `bench` and `report` print on stdout instead of the ranking table: `--json` (the run id,
its files and the ranking rows) or `-o FORMAT` (the speed table, as llama-bench's `-o`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from edgeeval.cli.options import SPEED_FORMATS


def add_stdout_options(p: argparse._ActionsContainer, what: str) -> None:
    """--json and -o FORMAT (llama-bench's -o), one or the other, for `bench` and `report`."""
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts)")
    choice.add_argument(
        "-o",
        "--output-format",
        choices=SPEED_FORMATS,
        metavar="FORMAT",
        help="print the speed table instead, as llama-bench's -o: "
        + ", ".join(SPEED_FORMATS)
        + " (the same rows as speed.* in the run directory)",
    )


def print_stdout(
    args: argparse.Namespace, run_id: str, rows: list[Any], records: list[Any], paths: dict
) -> bool:
    """Print what --json or -o FORMAT asks for (True), or nothing when neither was given."""
    if args.json:
        print(json.dumps(outcome_json(run_id, rows, paths), indent=2))
        return True
    if args.output_format:
        from edgeeval.report.speed import speed_rows

        print(speed_text(speed_rows(records), args.output_format), end="")
        return True
    return False


def outcome_json(run_id: str, rows: list[Any], paths: dict) -> dict[str, Any]:
    """`bench --json`: the run id, its directory, the paths of its files by kind (md, csv,
    json, html, speed_csv, ..., png-...) and the ranking rows (report.summarize.RankRow's
    fields)."""
    directory = paths["md"].parent
    return {
        "run_id": run_id,
        "run_dir": str(directory),
        "paths": {kind: str(path) for kind, path in sorted(paths.items())},
        "rows": [dataclasses.asdict(row) for row in rows],
    }


def speed_text(rows: list[dict[str, Any]], fmt: str) -> str:
    """The speed rows in one of SPEED_FORMATS, as report.speed writes speed.<fmt>."""
    from edgeeval.report import speed

    if fmt == "md":
        return speed.to_markdown(rows)
    if fmt == "csv":
        return speed.to_csv(rows)
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    return "".join(json.dumps(row) + "\n" for row in rows)
