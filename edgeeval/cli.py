"""Command line: `edgeeval models | fetch | bench | report | runs`.

The one place where an exception becomes a message and an exit code (EDGEEVAL_DEBUG=1 shows
the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from edgeeval import __version__, settings
from edgeeval.errors import EdgeevalError


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cmd_models(args: argparse.Namespace) -> int:
    from edgeeval.catalog import load_catalog
    from edgeeval.fetch import is_cached

    catalog = load_catalog(args.catalog)
    print(f"{'name':44} {'family':9} {'quant':7} {'kind':8} {'size GB':>8}  {'source':7} local")
    for v in catalog.variants.values():
        size = f"{v.size_bytes / settings.GB:.3f}" if v.size_bytes else "?"
        mark = "yes" if is_cached(v) else "-"
        print(f"{v.name:44} {v.family:9} {v.quant:7} {v.kind:8} {size:>8}  {v.source.kind:7} "
              f"{mark}")
    print("\nsets: " + "; ".join(f"{k} ({len(m)})" for k, m in catalog.sets.items()))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from edgeeval.catalog import load_catalog
    from edgeeval.fetch import fetch

    catalog = load_catalog(args.catalog)
    for variant in catalog.select(args.models):
        file = fetch(variant, progress=_progress)
        print(f"{variant.name}\t{file.path}\t{file.sha256}")
    return 0


def _run_settings(args: argparse.Namespace):
    from edgeeval.records import RunSettings

    return RunSettings(n_ctx=args.n_ctx, n_threads=args.threads, n_batch=args.n_batch,
                       n_ubatch=min(args.n_batch, 512), n_gpu_layers=args.n_gpu_layers,
                       flash_attn=args.flash_attn, use_mmap=not args.no_mmap,
                       pp_tokens=args.pp, tg_tokens=args.tg, repetitions=args.reps,
                       suite=args.suite, task_limit=args.limit, seed=args.seed,
                       timeout_s=args.timeout)


def cmd_bench(args: argparse.Namespace) -> int:
    from edgeeval.catalog import load_catalog
    from edgeeval.pipeline import bench
    from edgeeval.report import ranking_table

    catalog = load_catalog(args.catalog)
    variants = catalog.select(args.models)
    start = time.monotonic()
    outcome = bench(variants, _run_settings(args), run_id=args.resume, force=args.force,
                    progress=_progress)
    print(ranking_table(outcome.rows))
    print(f"\nrun {outcome.run_id} finished in {time.monotonic() - start:.0f} s; report: "
          f"{outcome.paths['md']}")
    return 0 if any(r.rank for r in outcome.rows) else 3


def cmd_report(args: argparse.Namespace) -> int:
    from edgeeval.pipeline import render
    from edgeeval.report import ranking_table

    outcome = render(args.run)
    print(ranking_table(outcome.rows))
    print(f"\nreport: {outcome.paths['md']}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from edgeeval.store import list_runs

    for run in list_runs():
        print(run)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeeval", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgeeval {__version__}")
    parser.add_argument("--catalog", help="models.yaml to use (default: the repo's)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the catalog and what is downloaded").set_defaults(
        func=cmd_models)
    p = sub.add_parser("fetch", help="download and verify model files")
    p.add_argument("models", nargs="*", help="variant or set names (default: the default set)")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("bench", help="measure variants and write a ranked report")
    p.add_argument("--models", nargs="*", help="variant or set names (default: the default set)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN, redoing only what is missing")
    p.add_argument("--force", action="store_true", help="skip the memory pre-flight check")
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--n-gpu-layers", type=int, default=0,
                   help="layers to offload (Metal/CUDA builds; 99 = all)")
    p.add_argument("--flash-attn", action="store_true")
    p.add_argument("--no-mmap", action="store_true")
    p.add_argument("--pp", type=int, default=128, help="prompt tokens per pp test")
    p.add_argument("--tg", type=int, default=32, help="generated tokens per tg test")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per test")
    p.add_argument("--suite", default="offline", help="task suite in benchmarks/suites.yaml")
    p.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("report", help="re-render a run's report from stored results")
    p.add_argument("run", nargs="?", default="latest", help="run id, run directory or 'latest'")
    p.set_defaults(func=cmd_report)
    sub.add_parser("runs", help="list stored runs").set_defaults(func=cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeevalError as exc:
        if settings.debug():
            traceback.print_exc()
        print(f"edgeeval: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeeval: interrupted; finished measurements are saved (use --resume RUN)",
              file=sys.stderr)
        return 130
