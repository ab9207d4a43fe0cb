"""`edgeeval report | runs | compare | import | repair`: stored results, rendered, merged and
rebuilt (no model)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from edgeeval.cli.options import context_length, positive_gb
from edgeeval.cli.output import add_stdout_options


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the subcommands that read stored runs."""
    p = sub.add_parser("report", help="re-render a run's report from stored results (no model)")
    p.add_argument("run", nargs="?", default="latest", help="run id, run directory or 'latest'")
    p.add_argument(
        "--budget-gb",
        type=positive_gb,
        default=None,
        metavar="GB",
        help="rank only variants whose peak memory fits in GB "
        "(10^9 bytes); the others are listed as over budget",
    )
    p.add_argument(
        "--rank-at-ctx",
        type=context_length,
        default=None,
        metavar="N",
        help="rank (and apply --budget-gb) by the peak memory estimated at N tokens of "
        "context: measured peak - KV cache at the run's n_ctx + KV cache at N",
    )
    p.add_argument(
        "--rank-by",
        choices=("capability_per_gb", "capability_per_joule"),
        default="capability_per_gb",
        help="the ranking axis: capability per GB of peak memory (default), or capability "
        "per joule (x generated tokens per joule; only where energy was measured)",
    )
    add_stdout_options(p, "the run id, the report paths and the ranking rows")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("runs", help="list stored runs (oldest first)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print each run's id, directory, start, models and host as JSON (for scripts)",
    )
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser(
        "compare",
        help="the same variants in two runs or on two machines, "
        "with ratios and whether each change exceeds the noise",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run id, run directory or 'latest'")
    p.add_argument("run_b", metavar="RUN_B", help="run id, run directory or 'latest'")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser(
        "import",
        help="merge exported runs (records.jsonl or edgeeval.sqlite) "
        "from other machines into the local store",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="a run's records.jsonl, a run directory, or an edgeeval.sqlite file",
    )
    p.set_defaults(func=cmd_import)
    p = sub.add_parser(
        "repair",
        help="rebuild a run's (or every run's) SQLite rows and damaged run.json from its "
        "JSONL files, counting unreadable lines",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("run", nargs="?", metavar="RUN", help="run id, run directory or 'latest'")
    target.add_argument("--all", action="store_true", help="repair every stored run")
    p.set_defaults(func=cmd_repair)


def cmd_report(args: argparse.Namespace) -> int:
    """`edgeeval report [RUN] [--budget-gb G] [--rank-at-ctx N]`: re-render and print the
    compact table."""
    from edgeeval.report.render import render_run
    from edgeeval.report.terminal import terminal_table

    run_id, rows, paths = render_run(
        args.run, budget_gb=args.budget_gb, rank_at_ctx=args.rank_at_ctx, rank_by=args.rank_by
    )
    if args.json or args.output_format:
        from edgeeval.cli.output import print_stdout
        from edgeeval.store.runs import load_records

        records = load_records(run_id, paths["md"].parent.parent)
        print_stdout(args, run_id, rows, list(records), paths)
        return 0
    if args.rank_at_ctx:
        print(f"peak memory estimated at n_ctx {args.rank_at_ctx} (see the report)")
    if args.rank_by == "capability_per_joule":
        print("ranked by capability per joule: the order below; cap/J is in the report")
    print(terminal_table(rows))
    print(f"\nreport: {paths['md']}\nhtml:   {paths['html']}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """`edgeeval runs [--json]`: one stored run id per line, or per run its id, directory,
    start time, models and host (from run.json; a damaged one gives `problem` instead)."""
    from edgeeval.store.runs import list_runs

    if not args.json:
        for run in list_runs():
            print(run)
        return 0
    print(json.dumps([_run_summary(run) for run in list_runs()], indent=2))
    return 0


def _run_summary(run_id: str) -> dict:
    from edgeeval.errors import EdgeevalError
    from edgeeval.store.runs import read_manifest, run_dir

    summary: dict = {"run_id": run_id, "run_dir": str(run_dir(run_id).resolve())}
    try:
        manifest = read_manifest(run_id)
    except EdgeevalError as exc:  # torn or missing run.json: the run is still listed
        return {**summary, "problem": str(exc)}
    host = manifest.get("host")
    host = host if isinstance(host, dict) else {}
    summary.update(
        created_at=manifest.get("created_at"),
        variants=manifest.get("variants", []),
        host={key: host.get(key) for key in ("hostname", "host_id", "backend")},
    )
    return summary


def cmd_compare(args: argparse.Namespace) -> int:
    """`edgeeval compare RUN_A RUN_B [--json]`."""
    from edgeeval.report.compare import compare_runs, format_comparison

    comparison = compare_runs(args.run_a, args.run_b)
    if args.json:
        print(json.dumps(dataclasses.asdict(comparison), indent=2, sort_keys=True))
    else:
        print(format_comparison(comparison))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """`edgeeval import FILE...`: print what was added and how to see it."""
    from edgeeval.store.exchange import import_files

    result = import_files([Path(p) for p in args.files])
    line = f"imported {len(result.added)} new record(s); {result.duplicates} already present"
    if result.rejected:
        line += f"; rejected {result.rejected}: first reason: {result.reasons[0]}"
    if result.skipped:
        line += f"; {result.skipped} unreadable line(s) skipped"
    print(line)
    for run_id in result.runs:
        hosts = sorted({r.host.hostname for r in result.added if r.run_id == run_id})
        print(f"  {run_id} ({', '.join(hosts)}): `edgeeval report {run_id}`")
    # every record refused and nothing new: the import did not do what was asked
    return 1 if result.rejected and not result.added and not result.duplicates else 0


def cmd_repair(args: argparse.Namespace) -> int:
    """`edgeeval repair RUN | --all`: print, per run, what was restored, written back, set
    aside and skipped; exit 1 when a run could not be repaired (the others still are)."""
    from edgeeval.store.repair import repair
    from edgeeval.store.runs import resolve_run
    from edgeeval.text import safe_text

    outcome = repair(None if args.all else [resolve_run(args.run)])
    if outcome.database:
        print(outcome.database)
    for run in outcome.runs:
        if run.problem:
            print(f"{run.run_id}: not repaired: {safe_text(run.problem, 600)}")
            continue
        skipped = sum(run.skipped.values())
        where = ", ".join(f"{n} in {name}" for name, n in run.skipped.items())
        print(
            f"{run.run_id}: {run.records} record(s) and {run.fidelity} fidelity result(s) "
            f"restored; {skipped} unreadable line(s) skipped" + (f" ({where})" if where else "")
        )
        for note in run.set_aside:
            print(f"  {safe_text(note, 300)}")
        if run.records_back or run.fidelity_back:
            print(
                f"  {run.records_back} record(s) and {run.fidelity_back} fidelity result(s) "
                "written back to the run's JSONL from edgeeval.sqlite"
            )
        if run.manifest:
            print(f"  {run.manifest}")
    if not outcome.runs:
        print("no stored runs to repair")
    return 1 if any(run.problem for run in outcome.runs) else 0
