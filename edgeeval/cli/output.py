"""What `bench` and `report` print on stdout instead of the ranking table: `--json` (the run id,
its files and the ranking rows) or `-o FORMAT` (the speed table, as llama-bench's `-o`).

`-o sql` is llama-bench's own SQL output (its sql_printer in the bundled llama.cpp's
tools/llama-bench/llama-bench.cpp): `CREATE TABLE IF NOT EXISTS llama_bench (...)` with
llama-bench's fields and SQL types, a blank line, then one `INSERT INTO llama_bench (...) VALUES
(...);` per speed test with every value quoted, as llama-bench prints it (numbers as C++'s
std::to_string: booleans 0/1, floats with six decimals; SQLite's column types make them numbers
again). Unlike llama-bench, a quote inside a value is doubled, so any model name loads.
`edgeeval report RUN -o sql | sqlite3 llama-bench.sqlite` gives the table that llama.cpp's
scripts/compare-llama-bench.py reads, and more runs piped into the same file add to it."""

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
        + " (the same rows as speed.* in the run directory; sql: llama-bench's CREATE TABLE "
        "and INSERTs, for `| sqlite3 FILE`)",
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
    if fmt == "sql":
        return speed_sql(rows)
    return "".join(json.dumps(row) + "\n" for row in rows)


def speed_sql(rows: list[dict[str, Any]]) -> str:
    """llama-bench's `-o sql` of the speed rows: its table (llama-bench's fields only; the rows'
    own edgeeval fields are left out) and one INSERT per row (module docstring).

    >>> print(speed_sql([]).splitlines()[:2])
    ['CREATE TABLE IF NOT EXISTS llama_bench (', '  build_commit TEXT,']
    >>> sql_literal(True), sql_literal(12.5), sql_literal("Bob's Q4")
    ("'1'", "'12.500000'", "'Bob''s Q4'")
    """
    from edgeeval.store.llamabench import SQL_TYPES

    names = list(SQL_TYPES)
    head = ",\n".join(f"  {name} {kind}" for name, kind in SQL_TYPES.items())
    out = [f"CREATE TABLE IF NOT EXISTS llama_bench (\n{head}\n);\n\n"]
    columns = ", ".join(names)
    for row in rows:
        missing = [name for name in names if name not in row]
        if missing:
            raise ValueError(f"a speed row lacks llama-bench's fields {', '.join(missing)}")
        values = ", ".join(sql_literal(row[name]) for name in names)
        out.append(f"INSERT INTO llama_bench ({columns}) VALUES ({values});\n")
    return "".join(out)


def sql_literal(value: Any) -> str:
    """One value as llama-bench's sql_printer quotes it (std::to_string for numbers), with a
    quote inside doubled; None (a fact never recorded) is the empty text."""
    if isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, float):
        text = f"{value:.6f}"
    elif value is None:
        text = ""
    else:
        text = str(value)
    return "'" + text.replace("'", "''") + "'"
