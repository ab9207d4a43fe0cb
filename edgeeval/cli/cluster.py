"""`edgeeval bench --cluster ADDRESS` (the same sweep over a Ray cluster) and `edgeeval fleet`.

Ray is an optional extra: nothing here imports it; edgeeval.cluster imports it only when a
cluster run starts, and says how to install it when it is missing.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from edgeeval.cli.console import progress
from edgeeval.cli.progress import ProgressPrinter

if TYPE_CHECKING:
    from edgeeval.catalog.models import Catalog, Variant
    from edgeeval.records import RunSettings


def add_bench_options(p: argparse.ArgumentParser) -> None:
    """The cluster options of `edgeeval bench`."""
    g = p.add_argument_group("cluster (optional extra: pip install 'edgeeval[ray]')")
    g.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run over a Ray cluster: auto (the one `ray start` started here), HOST:PORT, "
        "ray://HOST:PORT, or local (a cluster in this process, on this machine)",
    )
    mode = g.add_mutually_exclusive_group()
    mode.add_argument(
        "--every-node",
        dest="cluster_mode",
        action="store_const",
        const="every-node",
        help="each host measures every variant on its own hardware, one at a time (default)",
    )
    mode.add_argument(
        "--shard-accuracy",
        dest="cluster_mode",
        action="store_const",
        const="shard-accuracy",
        help="split the accuracy items over all workers and merge the scores (no speed or "
        "memory: those are per device)",
    )
    g.add_argument("--shards", type=int, help="shards per variant (default: the cluster's CPUs)")
    g.add_argument(
        "--shared-models",
        metavar="DIR",
        help="a folder every node sees holding the model files (verified on each node); "
        "default: each node fetches into its own cache",
    )
    g.add_argument(
        "--local-cpus", type=int, help="CPUs of a --cluster local cluster (default: all)"
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `fleet`."""
    p = sub.add_parser("fleet", help="a run's variants ranked per host, and which for which device")
    p.add_argument("run", nargs="?", default="latest", help="run id or 'latest'")
    p.set_defaults(func=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    from edgeeval.report.fleet import write_fleet

    path, text = write_fleet(args.run)
    print(text)
    print(f"written to {path}")
    return 0


def cmd_bench_cluster(
    args: argparse.Namespace, run_settings: RunSettings, catalog: Catalog, variants: list[Variant]
) -> int:
    """`bench --cluster`: run, then print the fleet report."""
    from edgeeval.cluster.driver import ClusterOptions, cluster_bench

    options = ClusterOptions(
        address=args.cluster,
        mode=args.cluster_mode or "every-node",
        shards=args.shards,
        shared_models=args.shared_models,
        local_cpus=args.local_cpus,
    )
    start = time.monotonic()
    # the single-machine display: a bar per piece on a terminal, else lines with a rate and an
    # ETA; the nodes send their workers' task and item events (cluster.node.Relay)
    with ProgressPrinter(quiet=getattr(args, "quiet", False)) as printer:
        outcome = cluster_bench(
            variants,
            run_settings,
            options,
            run_id=args.resume,
            force=args.force,
            budget_gb=args.budget_gb,
            progress=printer,
            catalog=catalog,
        )
    done = (
        f"run {outcome.run_id} finished in {time.monotonic() - start:.0f} s; report: "
        f"{outcome.paths['md']}; fleet: {outcome.paths['fleet']}"
    )
    if args.json or args.output_format:  # bench --json / -o FORMAT, as on one machine
        from edgeeval.cli.output import print_stdout
        from edgeeval.report.render import render_run

        # the report's rows (the driver keeps only its paths): rendered again, the same files
        _, rows, _ = render_run(str(outcome.paths["md"].parent), budget_gb=args.budget_gb)
        print_stdout(args, outcome.run_id, rows, outcome.records, outcome.paths)
        progress(done)
    else:
        print(outcome.fleet)
        print(done)
    return 0 if any(r.status == "ok" for r in outcome.records) else 3
