"""`edgeeval tasks`: the accuracy tasks and suites, and fetching their Hub datasets."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the `tasks` subcommand."""
    p = sub.add_parser("tasks", help="list the accuracy tasks and suites")
    p.add_argument("--suite", help="only the tasks of this suite")
    p.add_argument(
        "--fetch",
        action="store_true",
        help="download the Hub datasets of the listed tasks (then offline runs work)",
    )
    p.set_defaults(func=cmd_tasks)


def cmd_tasks(args: argparse.Namespace) -> int:
    """Print one line per task (and the suites); with --fetch, download their Hub datasets."""
    from edgeeval.tasks.suite import load_suite, load_suites, load_tasks, prefetch

    tasks = load_suite(args.suite) if args.suite else list(load_tasks().values())
    print(
        f"{'name':16} {'ver':>3}  {'kind':15} {'category':9} {'n_items':>7} {'chance':>6}  "
        f"{'network':7} source"
    )
    for task in tasks:
        network = "yes" if task.needs_network else "no"
        print(
            f"{task.name:16} {task.version:>3}  {task.kind:15} {task.category:9} "
            f"{task.n_items:>7} {task.chance:>6.2f}  {network:7} {task.source}"
        )
    suites = load_suites()
    print("\nsuites: " + "; ".join(f"{name} ({len(names)})" for name, names in suites.items()))
    if args.fetch:
        for path in prefetch(tasks):
            print(path)
    return 0
